//! BSD-style sockets over IPC.
