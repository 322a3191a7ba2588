//! Socket protocol between libsock and the net server.
