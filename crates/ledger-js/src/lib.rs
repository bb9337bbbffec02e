//! Sandboxed JavaScript for cledger's user-defined functions (UDFs) and user-defined
//! endpoints (UDEs), on QuickJS through `rquickjs`.
//!
//! [`run_function`] runs a simple UDF (ACL 2024-12-09-preview); [`run_endpoint`] runs an
//! endpoint of a CCF JavaScript app bundle (ACL 2024-08-22-preview). Each execution gets
//! a fresh QuickJS runtime and context; nothing is shared between executions (a script
//! that changes `Object.prototype` changes it for itself only).
//!
//! # Threads and limits
//! An execution is synchronous: the call returns when it is over. The engine runs on a
//! helper thread that the call starts and joins (a scoped thread with
//! `max_stack_bytes + 1 MiB` of native stack, so the caller's own stack size does not
//! matter), while the calling thread answers the engine's key-value reads. That is why
//! [`KvSource`] need not be `Send` or `Sync`: it is only ever called on the caller's thread.
//! (Host functions registered with QuickJS must be `'static` and so cannot borrow the
//! caller's `&dyn KvSource` directly without `unsafe`.)
//!
//! Each [`Limits`] bound ends the execution with its own [`ScriptError`] variant:
//! the heap limit (`JS_SetMemoryLimit`) with `OutOfMemory`, the stack limit
//! (`JS_SetMaxStackSize`) with `StackOverflow`, and the time limit (an interrupt handler
//! that fires from the deadline on, so `try { while (1) {} } catch {}` still ends) with
//! `TimedOut`; the deadline is checked again after the call returns. Return values and
//! response bodies over 1 MiB end with `OutputTooLarge`; logs are cut at 1000 lines /
//! 64 KiB with one final line counting the dropped ones; the write set is bounded to
//! 10,000 keys and 4 MiB (writes past that throw). A failed execution writes nothing.
//!
//! # CCF's JavaScript API, function by function
//! Supported:
//! - `console.log`, `info`, `warn`, `error`, `debug`: arguments formatted (strings as is,
//!   Error objects as `String(e)`, other values as JSON or `String(v)`), joined by spaces,
//!   captured in [`Execution::logs`]; nothing is printed.
//! - `ccf.strToBuf`, `ccf.bufToStr` (UTF-8; invalid sequences become U+FFFD),
//!   `ccf.jsonCompatibleToBuf`, `ccf.bufToJsonCompatible`.
//! - `ccf.crypto.digest(algorithm, data)` for "SHA-256", "SHA-384", "SHA-512"; other
//!   names throw a `TypeError`.
//! - `ccf.crypto.verifySignature({name: "ECDSA", hash}, pem, signature, data)` for
//!   P-256 with "SHA-256" and P-384 with "SHA-384"; the key is a PEM public key or
//!   certificate; the signature DER or IEEE P1363. Anything else throws.
//! - `ccf.pemToId(pem)`: lowercase hex SHA-256 of the certificate's DER.
//! - `ccf.enableUntrustedDateTime(enable)`: returns the previous setting. Until a
//!   script enables it, `Date.now()` is 0 and `new Date()` is the epoch (as in CCF);
//!   `new Date(x)` with an argument is unaffected.
//! - `ccf.kv[table]` for any table name: `get`, `has`, `set` (returns the map),
//!   `delete` (returns whether the key existed), `clear`, `forEach((value, key, map))`,
//!   `size`. Keys and values are `ArrayBuffer`s (anything else is a `TypeError`). Reads see
//!   the execution's own writes first; `forEach` and `size` merge the snapshot with them
//!   (keys ascending by bytes). [`TableAccess::Denied`] tables throw on any use,
//!   [`TableAccess::ReadOnly`] tables on writes; uncaught, these end as
//!   [`ScriptError::KvAccess`]. A failure of the [`KvSource`] fails the execution with
//!   [`ScriptError::Kv`] even if the script catches the thrown error.
//! - `context` (functions only): the caller's JSON as a global object.
//! - Endpoints get CCF's `Request` (`headers` with lowercased names, `params`, `query`,
//!   `url`, `route`, `method`, `hostname`, `path`, `caller`, `body.text()`, `body.json()`,
//!   `body.arrayBuffer()`) and return `{statusCode?, headers?, body?}`: status 200 by
//!   default; a string body is `text/plain`, an `ArrayBuffer` or typed array
//!   `application/octet-stream`, anything else JSON (`application/json`); a
//!   `content-type` header set by the script wins.
//! - Promise-returning entry points and top-level `await`: jobs run until the promise
//!   settles (under the same deadline); a promise that cannot settle is
//!   [`ScriptError::Unsettled`].
//!
//! Not supported: `ccf.kv` maps' `getVersionOfPreviousWrite`; `ccf.crypto`'s key
//! generation, signing, wrapping, `isValidX509CertBundle` and friends; RSA and EdDSA
//! verification; `ccf.rpc`, `ccf.host`, `ccf.consensus`, `ccf.historicalState`,
//! `ccf.network`, `ccf.gov`, `ccf.node`; snapshots of a table via `ccf.kv[t].keys()`-style
//! iterators. There is no `require`, `process`, `std`, `os`, file, network or process
//! access (rquickjs does not build quickjs-libc); functions cannot import anything and
//! endpoints import only modules of their bundle. `performance.now()` (a QuickJS
//! built-in) is left as is.

#![forbid(unsafe_code)]

mod crypto;
mod endpoint;
mod engine;
mod error;
mod function;
mod host;
mod kv;
mod limits;
mod logs;

pub use endpoint::{EndpointRequest, EndpointResponse, run_endpoint};
pub use error::{KvError, ScriptError};
pub use function::{FunctionResult, run_function};
pub use kv::{Entry, KvSource, TableAccess, WriteSet};
pub use limits::{
    Limits, MAX_LOG_BYTES, MAX_LOG_LINES, MAX_OUTPUT_BYTES, MAX_WRITE_BYTES, MAX_WRITE_KEYS,
};
pub use logs::{LogLevel, LogLine};

/// The result of one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution<T> {
    /// What the entry point produced, or why it failed.
    pub outcome: Result<T, ScriptError>,
    /// Console output, in order, bounded (see [`MAX_LOG_LINES`], [`MAX_LOG_BYTES`]).
    pub logs: Vec<LogLine>,
    /// What the execution wrote; empty when `outcome` is `Err`.
    pub writes: WriteSet,
    /// Whether any `ccf.kv` read reached the [`KvSource`] (for optimistic concurrency).
    pub read_tables: bool,
}
