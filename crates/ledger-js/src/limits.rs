//! Resource limits of one execution.
//!
//! Owns the numbers QuickJS enforces (heap, native stack, wall-clock time) and the
//! bounds this crate enforces on what an execution hands back (return value, response
//! body, logs, write set). They live together so a caller sees every bound in one place.

use std::time::Duration;

/// Largest return value of a function and largest response body of an endpoint (1 MiB).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Most log lines kept per execution; later lines are counted, not kept.
pub const MAX_LOG_LINES: usize = 1000;
/// Most bytes of log messages kept per execution (64 KiB).
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// Most distinct keys one execution may write.
pub const MAX_WRITE_KEYS: usize = 10_000;
/// Most bytes of keys plus values one execution may write (4 MiB).
pub const MAX_WRITE_BYTES: usize = 4 * 1024 * 1024;

/// Limits QuickJS enforces on one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// QuickJS heap limit (`JS_SetMemoryLimit`), in bytes.
    pub max_heap_bytes: usize,
    /// QuickJS native stack limit (`JS_SetMaxStackSize`), in bytes. The engine thread this
    /// crate starts gets this much stack plus 1 MiB of headroom for the host functions.
    pub max_stack_bytes: usize,
    /// Wall-clock time from the start of the execution until it is interrupted.
    pub max_execution_time: Duration,
}

impl Default for Limits {
    /// ACL's documented defaults: 10 MiB heap, 1 MiB stack, 1000 ms.
    fn default() -> Self {
        Limits {
            max_heap_bytes: 10 * 1024 * 1024,
            max_stack_bytes: 1024 * 1024,
            max_execution_time: Duration::from_millis(1000),
        }
    }
}
