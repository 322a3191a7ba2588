//! A listener's accept queue with a real backlog (SOLISTEN).
//!
//! smoltcp has no backlog: one listening socket takes one connection. The server keeps its own
//! queue per listener, fed by every worker. A worker **reserves** a slot when it lets a SYN reach
//! one of its listening smoltcp sockets, **completes** the reservation with the new connection
//! when the handshake finishes (or **cancels** it when the embryonic connection dies); a client's
//! `accept` **pops**. `queued + reserved <= limit` always holds, so `listen(64)` takes exactly 64
//! simultaneous connects; a SYN that finds the queue full is dropped (not reset), so the peer
//! retries, as BSD does.
//!
//! The queue is plain data; it lives behind the listener's [`Listen`](crate::lock::Listen)-level
//! lock. `tests/loom.rs` model-checks reserve/complete/pop/close racing.

use alloc::collections::VecDeque;

/// The queue. `T` is the connection (an `Arc<Socket>` in the server).
#[derive(Debug)]
pub struct AcceptQueue<T> {
    ready: VecDeque<T>,
    reserved: usize,
    limit: usize,
    closed: bool,
}

impl<T> AcceptQueue<T> {
    /// An open queue holding at most `limit` (at least 1) connections, embryonic included.
    pub fn new(limit: usize) -> Self {
        AcceptQueue { ready: VecDeque::new(), reserved: 0, limit: limit.max(1), closed: false }
    }

    /// Changes the limit (a second `listen`). Existing entries stay.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// Takes a slot for an embryonic connection; false when full or closed.
    pub fn try_reserve(&mut self) -> bool {
        if self.closed || self.ready.len() + self.reserved >= self.limit {
            return false;
        }
        self.reserved += 1;
        true
    }

    /// Gives back a reserved slot (the embryonic connection died).
    pub fn cancel(&mut self) {
        debug_assert!(self.reserved > 0);
        self.reserved = self.reserved.saturating_sub(1);
    }

    /// Turns a reservation into a queued connection. `Err(conn)` when the queue was closed in the
    /// meantime: the caller must abort the connection. `Ok(true)` when the queue was empty (the
    /// listener just became readable).
    pub fn complete(&mut self, conn: T) -> Result<bool, T> {
        self.reserved = self.reserved.saturating_sub(1);
        if self.closed {
            return Err(conn);
        }
        let was_empty = self.ready.is_empty();
        self.ready.push_back(conn);
        Ok(was_empty)
    }

    /// The oldest established connection.
    pub fn pop(&mut self) -> Option<T> {
        self.ready.pop_front()
    }

    /// Established connections waiting.
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    /// No established connection waiting.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Embryonic connections holding a slot.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closes the queue (the listener is closing) and hands back every queued connection, which
    /// the caller aborts after unlocking. Later reservations fail and completions bounce.
    pub fn close(&mut self) -> VecDeque<T> {
        self.closed = true;
        core::mem::take(&mut self.ready)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn backlog_counts_embryonic_and_queued() {
        let mut q = AcceptQueue::new(2);
        assert!(q.try_reserve());
        assert!(q.try_reserve());
        assert!(!q.try_reserve());
        assert_eq!(q.complete(1), Ok(true));
        assert!(!q.try_reserve(), "queued + reserved is still 2");
        q.cancel();
        assert!(q.try_reserve());
        assert_eq!(q.complete(2), Ok(false));
        assert_eq!(q.pop(), Some(1));
        assert!(q.try_reserve());
        let left = q.close();
        assert_eq!(left.into_iter().collect::<alloc::vec::Vec<_>>(), [2]);
        assert_eq!(q.complete(3), Err(3));
        assert!(!q.try_reserve());
        assert_eq!(q.reserved(), 0);
    }
}
