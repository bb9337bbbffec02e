//! The ways an execution can fail.
//!
//! Owns [`ScriptError`] and [`KvError`]. Every resource limit has its own variant so a
//! caller can tell "the script is wrong" from "the script hit a limit" without parsing
//! messages.

use std::time::Duration;

/// The caller's [`crate::KvSource`] failed to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key-value read failed: {0}")]
pub struct KvError(pub String);

/// Why an execution failed. `Display` is a message meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The code does not compile (syntax error and the like).
    #[error("the script does not compile: {message}")]
    Compile {
        /// QuickJS's description of the problem.
        message: String,
    },
    /// The entry module has no exported function of that name.
    #[error("the module exports no function named `{name}`")]
    MissingExport {
        /// The export that was asked for.
        name: String,
    },
    /// A function tried to import a module; functions are a single module.
    #[error("imports are not allowed in functions (tried to import `{name}`)")]
    ImportRefused {
        /// The specifier of the refused import.
        name: String,
    },
    /// An endpoint imported (or was asked to run) a module the bundle does not have.
    #[error("module `{name}` is not in the bundle")]
    ModuleNotFound {
        /// The module name after resolution against the importing module.
        name: String,
    },
    /// An exception nobody caught.
    #[error("uncaught exception: {message}")]
    Thrown {
        /// `String(e)` for Error objects ("Error: boom"); a readable rendering otherwise.
        message: String,
        /// The JavaScript stack, when the thrown value had one.
        stack: Option<String>,
    },
    /// The script returned a promise that was still pending when no job was left to run.
    #[error("the returned promise never settled")]
    Unsettled,
    /// The heap limit was reached.
    #[error("the script ran out of memory (limit {limit} bytes)")]
    OutOfMemory {
        /// The heap limit in force.
        limit: usize,
    },
    /// The native stack limit was reached (usually unbounded recursion).
    #[error("the script overflowed its stack (limit {limit} bytes)")]
    StackOverflow {
        /// The stack limit in force.
        limit: usize,
    },
    /// The execution ran past its time limit.
    #[error("the script ran past its time limit of {limit:?}")]
    TimedOut {
        /// The time limit in force.
        limit: Duration,
    },
    /// Something the execution produced is over its bound.
    #[error("the {what} is too large (limit {limit} bytes)")]
    OutputTooLarge {
        /// "return value", "response body" or "write set".
        what: &'static str,
        /// The bound in force.
        limit: usize,
    },
    /// An endpoint returned something that is not a CCF response object.
    #[error("the endpoint returned an invalid response: {message}")]
    InvalidResponse {
        /// What is wrong with it.
        message: String,
    },
    /// The caller's key-value source failed; the execution cannot be trusted.
    #[error(transparent)]
    Kv(KvError),
    /// The script touched a table its access policy does not allow, and did not catch the error.
    #[error("the script may not {} table `{table}`", if *write { "write" } else { "read" })]
    KvAccess {
        /// The table.
        table: String,
        /// Whether the refused access was a write.
        write: bool,
    },
    /// The engine itself failed (a thread could not be started, QuickJS could not be set up).
    #[error("internal engine error: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}
