//! Per-client handle tables with generation numbers.
//!
//! A client names sockets by [`SocketHandle`] `{ index, generation }`, resolved in *its own*
//! table only (the client is identified by the transport, never by the request), so it cannot
//! name another client's socket. Each slot's generation is bumped when the slot is freed, so a
//! stale handle (closed, or from before a reuse) gets `EBADF`, never the slot's new socket.
//! Generations start at a per-client value, so a handle copied from another client is almost
//! never valid here either (and if it were, it would name one of this client's own sockets).

use alloc::vec::Vec;

use net_api::{Errno, SocketHandle};

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    item: Option<T>,
}

/// One client's handles.
#[derive(Debug)]
pub struct HandleTable<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    first_generation: u32,
    live: usize,
    limit: usize,
}

impl<T> HandleTable<T> {
    /// An empty table holding at most `limit` items; generations start from `seed` (never 0).
    pub fn new(seed: u32, limit: usize) -> Self {
        HandleTable { slots: Vec::new(), free: Vec::new(), first_generation: seed.max(1), live: 0, limit }
    }

    /// Stores `item`; `EMFILE` at the limit.
    pub fn insert(&mut self, item: T) -> Result<SocketHandle, Errno> {
        if self.live >= self.limit {
            return Err(Errno::EMFILE);
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).map_err(|_| Errno::EMFILE)?;
                self.slots.push(Slot { generation: self.first_generation, item: None });
                i
            }
        };
        let slot = self.slots.get_mut(index as usize).ok_or(Errno::EMFILE)?;
        slot.item = Some(item);
        self.live += 1;
        Ok(SocketHandle { index, generation: slot.generation })
    }

    /// The item `h` names, or `EBADF`.
    pub fn get(&self, h: SocketHandle) -> Result<&T, Errno> {
        match self.slots.get(h.index as usize) {
            Some(Slot { generation, item: Some(item) }) if *generation == h.generation => Ok(item),
            _ => Err(Errno::EBADF),
        }
    }

    /// Removes and returns the item `h` names, or `EBADF`. The slot's generation moves on.
    pub fn remove(&mut self, h: SocketHandle) -> Result<T, Errno> {
        let slot = self.slots.get_mut(h.index as usize).ok_or(Errno::EBADF)?;
        if slot.generation != h.generation || slot.item.is_none() {
            return Err(Errno::EBADF);
        }
        let item = slot.item.take().ok_or(Errno::EBADF)?;
        slot.generation = slot.generation.wrapping_add(1).max(1);
        self.free.push(h.index);
        self.live -= 1;
        Ok(item)
    }

    /// Removes every item.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.live);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(item) = slot.item.take() {
                slot.generation = slot.generation.wrapping_add(1).max(1);
                self.free.push(i as u32);
                out.push(item);
            }
        }
        self.live = 0;
        out
    }

    /// Items stored.
    pub fn len(&self) -> usize {
        self.live
    }

    /// No items.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn stale_handles_get_ebadf_never_the_new_item() {
        let mut t = HandleTable::new(7, 10);
        let a = t.insert("a").unwrap();
        assert_eq!(t.get(a), Ok(&"a"));
        assert_eq!(t.remove(a), Ok("a"));
        assert_eq!(t.get(a), Err(Errno::EBADF));
        assert_eq!(t.remove(a), Err(Errno::EBADF));
        let b = t.insert("b").unwrap();
        assert_eq!(b.index, a.index, "slot reused");
        assert_ne!(b.generation, a.generation);
        assert_eq!(t.get(a), Err(Errno::EBADF));
        assert_eq!(t.get(b), Ok(&"b"));
        assert_eq!(t.get(SocketHandle { index: 99, generation: 7 }), Err(Errno::EBADF));
    }

    #[test]
    fn limit_gives_emfile_and_drain_invalidates() {
        let mut t = HandleTable::new(1, 2);
        let a = t.insert(1).unwrap();
        let _b = t.insert(2).unwrap();
        assert_eq!(t.insert(3), Err(Errno::EMFILE));
        assert_eq!(t.drain().len(), 2);
        assert_eq!(t.get(a), Err(Errno::EBADF));
        assert!(t.is_empty());
        assert!(t.insert(3).is_ok());
    }

    #[test]
    fn different_seeds_give_different_handles() {
        let mut t1 = HandleTable::new(0x1234, 4);
        let mut t2 = HandleTable::new(0x9876, 4);
        let h1 = t1.insert(()).unwrap();
        let h2 = t2.insert(()).unwrap();
        assert_eq!(h1.index, h2.index);
        assert_eq!(t2.get(h1), Err(Errno::EBADF));
    }
}
