//! The one other foreign interface besides the C ABI: a 64-bit counter in a
//! small file mapped shared by every process that opens it (the store's
//! change signal). Reading it is one atomic load — no system call — so the
//! freshness check before every `C_*Init` costs nanoseconds on the sign path.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, Ordering};

/// Bytes mapped: one page holds the counter (the file is grown to this).
const LEN: usize = 4096;

/// A counter shared between processes through a mapped file.
pub struct SharedCounter {
    ptr: NonNull<AtomicI64>,
    writable: bool,
}

// SAFETY: the mapping is shared memory accessed only through `AtomicI64`
// operations, which are sound from any thread (and any process).
unsafe impl Send for SharedCounter {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for SharedCounter {}

impl SharedCounter {
    /// Map the first 8 bytes of `file` (grown to one page if shorter when
    /// `writable`). A read-only file gives a counter that can only be read.
    pub fn map(file: &File, writable: bool) -> std::io::Result<SharedCounter> {
        let len = file.metadata()?.len();
        if len < LEN as u64 {
            if !writable {
                return Err(std::io::Error::other("change signal file too short"));
            }
            file.set_len(LEN as u64)?;
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of LEN bytes of an open file the file
        // is at least LEN bytes long (checked or grown above); the kernel picks
        // the address. The result is checked against MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // The mapping is page-aligned, so the counter at offset 0 is aligned for
        // an AtomicI64; mmap never returns null on success.
        let ptr = NonNull::new(p.cast::<AtomicI64>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(SharedCounter { ptr, writable })
    }

    fn atomic(&self) -> &AtomicI64 {
        // SAFETY: `ptr` points to the start of a live, page-aligned shared
        // mapping of at least 8 bytes (see `map`), unmapped only in `drop`; the
        // store never truncates the file, so the page stays backed.
        unsafe { self.ptr.as_ref() }
    }

    /// The counter's value.
    pub fn load(&self) -> i64 {
        self.atomic().load(Ordering::Acquire)
    }

    /// Raise the counter to `v` (never lowers it); a read-only mapping ignores it.
    pub fn raise(&self, v: i64) {
        if self.writable {
            self.atomic().fetch_max(v, Ordering::AcqRel);
        }
    }
}

impl Drop for SharedCounter {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference from
        // `atomic` outlives `&self`, so nothing uses it afterwards.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), LEN);
        }
    }
}
