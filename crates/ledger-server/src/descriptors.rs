//! File descriptors: the server's connections and its store draw on one per-process budget,
//! `RLIMIT_NOFILE`. Unchecked, enough idle connections use every descriptor, and the store's
//! next `open` (of the tree directory at a checkpoint, of a new segment) fails with `EMFILE`.
//! The store survives that (a `Resources` fault, writes resume when descriptors return), but it
//! should not happen at all, so the node:
//!
//! 1. raises its soft limit to the hard limit at start ([`raise_soft_limit`]): the soft limit is
//!    often 1024 while the hard limit allows far more;
//! 2. bounds the connections it holds at once below what is left after the descriptors open
//!    at start and a reserve for the store (`reserved_descriptors`, [`connection_bound`]);
//! 3. checks every accepted connection's descriptor number against the limit
//!    ([`leaves_reserve`]), which also covers descriptors the store opened since the start
//!    (one per new segment): POSIX allocates the lowest free descriptor, so a connection given
//!    descriptor `n` means descriptors `0..n` are all in use. A connection that would eat into
//!    the reserve is closed at once and counted (`cledger_connections_refused_total`).
//!
//! `reserved_descriptors = 0` turns 2 and 3 off (only `max_connections` bounds connections).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::os::fd::RawFd;

/// What [`raise_soft_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit before (`None`: unlimited).
    pub from: Option<u64>,
    /// The soft limit now (`None`: unlimited).
    pub to: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a process may always do that). With an
/// unlimited hard limit the soft limit is left as it is: Linux refuses an unlimited one.
pub fn raise_soft_limit() -> std::io::Result<Raised> {
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        return Ok(Raised {
            from: limit.current,
            to: limit.current,
        });
    };
    if limit.current.is_some_and(|soft| soft >= hard) {
        return Ok(Raised {
            from: limit.current,
            to: limit.current,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    Ok(Raised {
        from: limit.current,
        to: Some(hard),
    })
}

/// The soft `RLIMIT_NOFILE` now (`None`: unlimited). Read at every accept, so a limit changed
/// while the node runs (`prlimit --pid`) is honoured.
pub fn soft_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Descriptors this process has open now, from `/proc/self/fd` (Linux); `None` elsewhere.
pub fn open_count() -> Option<u64> {
    // The directory handle itself is one of the entries.
    let entries = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

/// Whether a connection holding descriptor `fd` leaves `reserve` descriptors free under
/// `limit`. Descriptors are allocated lowest-first, so `fd` being in use means at least
/// `fd + 1` are.
pub fn leaves_reserve(fd: RawFd, limit: Option<u64>, reserve: u64) -> bool {
    let Some(limit) = limit else {
        return true;
    };
    let in_use = u64::try_from(fd).unwrap_or(0).saturating_add(1);
    in_use.saturating_add(reserve) <= limit
}

/// How many connections the listener may hold at once: `max_connections`, or fewer when the
/// descriptors left under `limit`, after the `open` ones and the `reserve`, are fewer. `None`
/// when not even one connection fits.
pub fn connection_bound(
    max_connections: usize,
    limit: Option<u64>,
    open: u64,
    reserve: u64,
) -> Option<usize> {
    let bound = match limit {
        None => max_connections,
        Some(limit) => {
            let left = limit.saturating_sub(open).saturating_sub(reserve);
            max_connections.min(usize::try_from(left).unwrap_or(usize::MAX))
        }
    };
    (bound > 0).then_some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_kept_by_descriptor_number() {
        // Limit 100, reserve 10: descriptors 0..=89 may be connections, 90 may not.
        assert!(leaves_reserve(89, Some(100), 10));
        assert!(!leaves_reserve(90, Some(100), 10));
        assert!(!leaves_reserve(99, Some(100), 10));
        assert!(leaves_reserve(99, Some(100), 0));
        assert!(leaves_reserve(1 << 30, None, 10));
    }

    #[test]
    fn connections_are_bounded_by_what_is_left() {
        assert_eq!(connection_bound(1024, Some(256), 30, 64), Some(162));
        assert_eq!(connection_bound(100, Some(256), 30, 64), Some(100));
        assert_eq!(connection_bound(1024, None, 30, 64), Some(1024));
        assert_eq!(connection_bound(1024, Some(90), 30, 64), None);
        assert_eq!(connection_bound(1024, Some(94), 30, 64), None);
        assert_eq!(connection_bound(1024, Some(95), 30, 64), Some(1));
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_soft_limit().expect("raising the soft limit to the hard one");
        let now = getrlimit(Resource::Nofile);
        assert_eq!(raised.to, now.current);
        if now.maximum.is_some() {
            assert_eq!(now.current, now.maximum);
        }
        assert_eq!(soft_limit(), now.current);
        assert!(
            open_count().is_some_and(|n| n >= 3),
            "stdin, stdout, stderr"
        );
    }
}
