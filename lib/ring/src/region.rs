//! The data region: shared memory holding the buffers that descriptors point into by offset.

use core::marker::PhantomData;
use core::ops::Range;
use core::ptr::NonNull;

use crate::{Desc, RingError};

/// A shared data region (a DMA area, or a client's data area), cut into buffers of `buf_size`
/// bytes. Descriptors name byte ranges in it by offset; this type is the only way to turn a
/// descriptor into bytes, and it checks every one:
///
/// - `offset + len <= region length` (computed in 64 bits, so it cannot overflow), and
/// - the range stays inside one buffer: `offset % buf_size + len <= buf_size`.
///
/// So a peer's descriptor can name at most one whole buffer of this region, never memory outside
/// it and never the tail of one buffer plus the head of the next.
///
/// The bytes of a buffer the peer still holds (or wrongly keeps writing) can change while this
/// side looks at them: parse a buffer once, into local values, and validate those (as
/// smoltcp's `new_checked` parsers do) rather than reading the same field twice.
pub struct Region<'a> {
    base: NonNull<u8>,
    len: usize,
    buf_size: u32,
    _mem: PhantomData<&'a mut [u8]>,
}

// SAFETY: a `Region` is, for this process, exclusive access to `len` bytes, like `&'a mut [u8]`
// (its constructor's contract): `slice` hands out shared slices through `&self` and `slice_mut`
// an exclusive slice through `&mut self`, so sending it to, or sharing it with, another thread
// gives no more access than sending or sharing a `&mut [u8]` does.
unsafe impl Send for Region<'_> {}
// SAFETY: see the `Send` impl above; `&Region` only yields `&[u8]`.
unsafe impl Sync for Region<'_> {}

impl<'a> Region<'a> {
    /// The region of `len` bytes at `base`, cut into buffers of `buf_size` bytes.
    ///
    /// Fails with [`RingError::NullPointer`] if `base` is null, [`RingError::ZeroBufSize`] if
    /// `buf_size` is 0.
    ///
    /// # Safety
    ///
    /// For all of `'a`, the `len` bytes at `base` must stay mapped readable and writable, and
    /// within this process no other access may overlap, in bytes and in time, with a slice this
    /// `Region` hands out: no `Ring` or reference over the same bytes, and normally no second
    /// `Region` (a host test standing in for two processes may make one per "process" when the
    /// buffer hand-over through the rings keeps their slices of a buffer from being alive at the
    /// same time). Other processes and devices may write the bytes; see the type docs for what
    /// that means for readers.
    pub unsafe fn from_raw(base: *mut u8, len: usize, buf_size: u32) -> Result<Self, RingError> {
        let base = NonNull::new(base).ok_or(RingError::NullPointer)?;
        if buf_size == 0 {
            return Err(RingError::ZeroBufSize);
        }
        Ok(Region { base, len, buf_size, _mem: PhantomData })
    }

    /// Length of the region in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer size the region is cut into.
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Validate `desc` against the region and return the byte range it names.
    pub fn check(&self, desc: &Desc) -> Result<Range<usize>, RingError> {
        let start = u64::from(desc.offset);
        let end = start + u64::from(desc.len);
        let out = RingError::OutOfRegion { offset: desc.offset, len: desc.len };
        let region_len = u64::try_from(self.len).unwrap_or(u64::MAX);
        if end > region_len {
            return Err(out);
        }
        if u64::from(desc.offset % self.buf_size) + u64::from(desc.len) > u64::from(self.buf_size) {
            return Err(RingError::CrossesBuffer { offset: desc.offset, len: desc.len });
        }
        // Both fit: `end <= self.len`, which is a usize.
        let start = usize::try_from(start).map_err(|_| out)?;
        let end = usize::try_from(end).map_err(|_| out)?;
        Ok(start..end)
    }

    /// The bytes `desc` names, after [`check`](Self::check).
    pub fn slice(&self, desc: &Desc) -> Result<&[u8], RingError> {
        let range = self.check(desc)?;
        // SAFETY: `check` proved `range` lies inside the region's `len` bytes, which the
        // constructor's caller guaranteed valid for `'a` (longer than this borrow) and reached in
        // this process only through this `Region`; `&self` excludes a live `slice_mut`.
        Ok(unsafe { core::slice::from_raw_parts(self.base.as_ptr().add(range.start), range.len()) })
    }

    /// The bytes `desc` names, writable, after [`check`](Self::check).
    pub fn slice_mut(&mut self, desc: &Desc) -> Result<&mut [u8], RingError> {
        let range = self.check(desc)?;
        // SAFETY: as in `slice`; `&mut self` makes this the only slice of the region alive.
        Ok(unsafe { core::slice::from_raw_parts_mut(self.base.as_ptr().add(range.start), range.len()) })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn with_region<R>(len: usize, buf_size: u32, f: impl FnOnce(&mut Region<'_>, *const u8) -> R) -> R {
        let mut mem = std::vec![0u8; len.max(1)];
        // SAFETY: `mem` outlives the region and is touched only through it until it is dropped.
        let mut region = unsafe { Region::from_raw(mem.as_mut_ptr(), len, buf_size) }.unwrap();
        f(&mut region, mem.as_ptr())
    }

    #[test]
    fn accepts_whole_and_partial_buffers() {
        with_region(8192, 2048, |r, base| {
            let s = r.slice(&Desc::new(2048, 2048, 0, 0)).unwrap();
            assert_eq!(s.len(), 2048);
            assert_eq!(s.as_ptr(), base.wrapping_add(2048));
            assert_eq!(r.slice(&Desc::new(4096 + 12, 1514, 0, 0)).unwrap().len(), 1514);
            assert_eq!(r.slice(&Desc::new(8192, 0, 0, 0)).unwrap().len(), 0);
        });
    }

    #[test]
    fn rejects_out_of_region_and_overflowing_descriptors() {
        with_region(8192, 2048, |r, _| {
            let bad = [
                Desc::new(8192, 1, 0, 0),
                Desc::new(8191, 2, 0, 0),
                Desc::new(u32::MAX, 1, 0, 0),
                Desc::new(u32::MAX, u32::MAX, 0, 0),
                Desc::new(6144, u32::MAX, 0, 0),
            ];
            for d in bad {
                assert!(matches!(r.check(&d), Err(RingError::OutOfRegion { .. })), "{d:?}");
            }
        });
    }

    #[test]
    fn rejects_descriptors_spanning_two_buffers() {
        with_region(8192, 2048, |r, _| {
            assert_eq!(r.check(&Desc::new(2047, 2, 0, 0)), Err(RingError::CrossesBuffer { offset: 2047, len: 2 }));
            assert_eq!(r.check(&Desc::new(0, 2049, 0, 0)), Err(RingError::CrossesBuffer { offset: 0, len: 2049 }));
            assert!(r.slice_mut(&Desc::new(2048, 4096, 0, 0)).is_err());
        });
    }

    #[test]
    fn region_not_a_multiple_of_the_buffer_size_ends_at_its_length() {
        with_region(3000, 2048, |r, _| {
            assert_eq!(r.check(&Desc::new(2048, 952, 0, 0)), Ok(2048..3000));
            assert!(r.check(&Desc::new(2048, 953, 0, 0)).is_err());
        });
    }

    #[test]
    fn writes_land_where_the_descriptor_says() {
        let mut mem = std::vec![0u8; 64];
        {
            // SAFETY: `mem` outlives the region and is touched only through it in this block.
            let mut r = unsafe { Region::from_raw(mem.as_mut_ptr(), 64, 16) }.unwrap();
            r.slice_mut(&Desc::new(16, 4, 0, 0)).unwrap().copy_from_slice(b"abcd");
        }
        assert_eq!(&mem[16..20], b"abcd");
        assert!(mem[..16].iter().chain(&mem[20..]).all(|&b| b == 0));
    }

    #[test]
    fn constructor_rejects_null_and_zero_buffer_size() {
        // SAFETY: both calls fail before the memory is used.
        assert_eq!(unsafe { Region::from_raw(core::ptr::null_mut(), 0, 16) }.err(), Some(RingError::NullPointer));
        let mut b = [0u8; 4];
        // SAFETY: as above.
        assert_eq!(unsafe { Region::from_raw(b.as_mut_ptr(), 4, 0) }.err(), Some(RingError::ZeroBufSize));
    }
}
