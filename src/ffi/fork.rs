//! What a fork changes, seen without a system call on the hot path: the
//! process id, read once and forgotten in a `pthread_atfork` child handler
//! (glibc stopped caching `getpid`, and the library asks on every `C_*` call
//! — a forked child must call C_Initialize — and on every id it draws), and
//! the sockets a child must not keep: the same handler closes the child's
//! copies of this process's PostgreSQL connections ([`close_in_children`]).

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

/// The cached id; 0 until read (no process has id 0 on Unix).
static PID: AtomicU32 = AtomicU32::new(0);
static HANDLER: Once = Once::new();

/// Sockets a forked child closes at once (see [`close_in_children`]): a
/// descriptor per slot (-1 free, -2 being written) and its socket's inode.
const SOCKETS: usize = 16;
static FDS: [AtomicI32; SOCKETS] = [const { AtomicI32::new(-1) }; SOCKETS];
static INODES: [AtomicU64; SOCKETS] = [const { AtomicU64::new(0) }; SOCKETS];

/// Runs in the child right after `fork`, on the forking thread, so only
/// async-signal-safe calls: atomics, `fstat`, `close`.
extern "C" fn forget() {
    PID.store(0, Ordering::Relaxed);
    for (fd, inode) in FDS.iter().zip(&INODES) {
        let fd = fd.swap(-1, Ordering::AcqRel);
        if fd < 0 {
            continue;
        }
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is a writable `struct stat`; a descriptor that is not
        // open makes `fstat` fail, which is checked.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            continue;
        }
        // SAFETY: `fstat` succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        if st.st_ino == inode.load(Ordering::Acquire) && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
        {
            // SAFETY: the descriptor is this child's copy of the registered
            // socket (same inode), which nothing in the child uses.
            unsafe { libc::close(fd) };
        }
    }
}

/// Have every forked child close this process's socket `fd` (of socket inode
/// `inode`) as it starts: the child's copy of a connection it never uses
/// (PKCS#11: a child calls C_Initialize and gets its own) would keep the
/// connection open after this process closes its own copy or exits (nginx's
/// first process connects, forks the master and exits). Closing a copy never
/// disturbs this process: the connection ends when its last copy is closed.
/// At most 16 at once; beyond that a child keeps its copies, as before.
pub fn close_in_children(fd: i32, inode: u64) {
    pid(); // the handler is registered
    for (slot, ino) in FDS.iter().zip(&INODES) {
        if slot
            .compare_exchange(-1, -2, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            ino.store(inode, Ordering::Release);
            slot.store(fd, Ordering::Release);
            return;
        }
    }
}

/// This process closes `fd` itself (its connection is dropped): children
/// forked from now on have nothing to close.
pub fn keep_in_children(fd: i32) {
    for slot in &FDS {
        let _ = slot.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// This process's id (what `std::process::id()` returns), from the cache.
pub fn pid() -> u32 {
    HANDLER.call_once(|| {
        // SAFETY: `forget` is an `extern "C" fn()` of this module; glibc
        // registers it against this shared object and drops it when the
        // object is unloaded (dlclose), so it is never called after. A failure
        // (ENOMEM) registers nothing, and then the id is not cached below.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget)) };
        if rc != 0 {
            PID.store(u32::MAX, Ordering::Relaxed);
        }
    });
    match PID.load(Ordering::Relaxed) {
        u32::MAX => std::process::id(),
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::key::random_id;

    /// Fork; the child sends `child()`'s 17 bytes through a pipe and exits;
    /// returns them.
    fn in_a_child(child: fn() -> [u8; 17]) -> [u8; 17] {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child runs `child` (no locks held across fork by this
        // test's thread), writes to the pipe and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // A panic must not return into the test harness in the child.
            let out = std::panic::catch_unwind(child).unwrap_or([0xff; 17]);
            // SAFETY: a valid buffer of 17 bytes; `_exit` skips atexit hooks.
            unsafe {
                libc::write(fds[1], out.as_ptr().cast(), out.len());
                libc::_exit(0);
            }
        }
        let mut got = [0u8; 17];
        // SAFETY: a valid buffer of 17 bytes and the read end of our pipe.
        let n = unsafe { libc::read(fds[0], got.as_mut_ptr().cast(), got.len()) };
        let mut status = 0;
        // SAFETY: our child's pid and the two descriptors `pipe` made.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert_eq!(n, 17, "the child's answer");
        got
    }

    #[test]
    fn the_cached_id_is_the_process_id_and_a_child_gets_its_own() {
        assert_eq!(pid(), std::process::id());
        assert_eq!(pid(), std::process::id(), "from the cache");
        let got = in_a_child(|| {
            // SAFETY: getpid has no preconditions.
            let own = unsafe { libc::getpid() } as u32;
            let mut out = [0u8; 17];
            out[0] = (pid() == own) as u8;
            out
        });
        assert_eq!(got[0], 1, "the child's pid() is its own id");
        assert_eq!(pid(), std::process::id(), "the parent's is unchanged");
    }

    /// Whether descriptor `fd` is open.
    fn is_open(fd: i32) -> bool {
        // SAFETY: F_GETFD on any number: -1 (EBADF) when it is not open.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    type Outcome = Result<(), Box<dyn std::error::Error>>;

    /// The inode of the socket open as `fd` (Linux: /proc/self/fd).
    fn inode(fd: i32) -> Result<u64, Box<dyn std::error::Error>> {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
        let link = link.to_string_lossy();
        link.strip_prefix("socket:[")
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| format!("not a socket: {link}").into())
    }

    #[test]
    fn a_child_closes_the_registered_sockets_and_keeps_the_rest() -> Outcome {
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        let (closed, _peer) = UnixStream::pair()?;
        let (kept, _peer2) = UnixStream::pair()?;
        let (wrong, _peer3) = UnixStream::pair()?;
        let (unregistered, _peer4) = UnixStream::pair()?;
        close_in_children(closed.as_raw_fd(), inode(closed.as_raw_fd())?);
        // Registered with another socket's inode: the number now names
        // something else (a reused descriptor), which the child must keep.
        close_in_children(wrong.as_raw_fd(), inode(kept.as_raw_fd())?);
        close_in_children(unregistered.as_raw_fd(), inode(unregistered.as_raw_fd())?);
        keep_in_children(unregistered.as_raw_fd());
        static FDS_SEEN: [AtomicI32; 4] = [const { AtomicI32::new(-1) }; 4];
        for (seen, s) in FDS_SEEN.iter().zip([&closed, &kept, &wrong, &unregistered]) {
            seen.store(s.as_raw_fd(), Ordering::Relaxed);
        }
        let got = in_a_child(|| {
            let mut out = [0u8; 17];
            for (o, fd) in out.iter_mut().zip(&FDS_SEEN) {
                *o = is_open(fd.load(Ordering::Relaxed)) as u8;
            }
            out
        });
        assert_eq!(
            got[..4],
            [0, 1, 1, 1],
            "open in the child: registered, other, wrong inode, taken back"
        );
        assert!(is_open(closed.as_raw_fd()), "the parent's copy is open");
        for s in [&closed, &wrong] {
            keep_in_children(s.as_raw_fd());
        }
        Ok(())
    }

    #[test]
    fn a_forked_child_draws_other_ids_than_its_parent() -> Outcome {
        // The parent's thread has random bytes left over for its next ids;
        // the child inherits a copy of them and must not use it.
        random_id()?;
        let child = in_a_child(|| {
            let mut out = [0u8; 17];
            if let Ok(id) = random_id() {
                out[0] = 1;
                out[1..].copy_from_slice(&id);
            }
            out
        });
        assert_eq!(child[0], 1, "the child drew an id");
        let parent = random_id()?;
        assert_ne!(
            child[1..],
            parent[..],
            "the child's id is the parent's next one"
        );
        Ok(())
    }
}
