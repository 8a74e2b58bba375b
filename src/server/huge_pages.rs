//! Transparent huge pages off for the server process.
//!
//! The server's memory grows with the holds it keeps open (about 290 bytes
//! each in the state machine, 380 in the whole process): at 200,000
//! reserves a second, by 80 MB a second. With transparent huge pages the
//! kernel backs each new 2 MiB of heap with one huge page, zeroed in one
//! go at the first touch, by the thread that touched it: mostly the
//! replication thread, the one thread every write passes through, which
//! then stalls for the whole page, milliseconds on a small machine, while
//! every write waits. With 4 KiB pages the same zeroing is spread over
//! many small faults, and the tail latency of writes stays low. Redis and
//! most databases advise the same.
//!
//! `PR_SET_THP_DISABLE` marks the whole address space: the kernel checks
//! it at each fault, so memory mapped before the call is covered too, and
//! it is kept across fork and exec. It needs no privilege.

/// Turns transparent huge pages off for this process. Returns false (and
/// changes nothing) where the kernel refuses, which only costs speed.
pub fn disable() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
    // a flag of this process; no memory is passed to the kernel.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    done == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether transparent huge pages are off for this process.
    fn disabled() -> bool {
        // SAFETY: as in `disable`; PR_GET_THP_DISABLE only reads the flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        flag == 1
    }

    #[test]
    fn the_process_keeps_huge_pages_off_once_asked() {
        assert!(disable(), "the kernel refused PR_SET_THP_DISABLE");
        assert!(disabled());
        // A thread started afterwards shares the address space, and so
        // the flag.
        let seen = std::thread::spawn(disabled).join().expect("thread ran");
        assert!(seen);
    }
}
