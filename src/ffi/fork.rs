//! The process id without a system call. glibc stopped caching `getpid`, and
//! the library asks on every `C_*` call (a forked child must call
//! C_Initialize) and on every id it draws: a system call each, a measurable
//! part of a call that makes a session key (a KEM's new AES key). The id is
//! read once and forgotten in a `pthread_atfork` child handler, the one place
//! a process can change its id under a running library.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// The cached id; 0 until read (no process has id 0 on Unix).
static PID: AtomicU32 = AtomicU32::new(0);
static HANDLER: Once = Once::new();

/// Runs in the child right after `fork`, on the forking thread: async-signal-
/// safe (one atomic store).
extern "C" fn forget() {
    PID.store(0, Ordering::Relaxed);
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

    #[test]
    fn a_forked_child_draws_other_ids_than_its_parent() {
        // The parent's thread has random bytes left over for its next ids;
        // the child inherits a copy of them and must not use it.
        random_id().expect("an id");
        let child = in_a_child(|| {
            let mut out = [0u8; 17];
            out[1..].copy_from_slice(&random_id().expect("an id in the child"));
            out
        });
        let parent = random_id().expect("the parent's next id");
        assert_ne!(
            child[1..],
            parent[..],
            "the child's id is the parent's next one"
        );
    }
}
