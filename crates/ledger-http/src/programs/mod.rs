//! User-defined code (ACL's user-defined functions, hooks and endpoints): what is deployed
//! (`definitions`), the tables it sees and the concurrency control of its writes (`pending`),
//! and running it here, off the async workers and off the writer, a bounded number at a time.
//!
//! Execution is the "execute" stage in front of the write path: JavaScript runs against the
//! committed state plus pending writes and produces a write set; the write set is then
//! submitted like any write, so the writer stays one-directional and never runs a script.

pub(crate) mod definitions;
pub(crate) mod pending;

use crate::error::{ApiError, ApiResult};
use definitions::RuntimeOptions;
use ledger_js::{Execution, FunctionResult, ScriptError, WriteSet};
use ledger_store::LedgerHandle;
use pending::{PendingKv, ReadSet, Snapshot, View};
use serde_json::Value;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Most hooks of each kind on one write (ACL's limit).
pub const MAX_HOOKS: usize = 5;
/// How often an execution that read the tables runs again when other writes keep changing
/// them, before the request is answered 503.
pub const MAX_ATTEMPTS: usize = 5;
/// How long a request waits for a free execution slot before 503.
const SLOT_WAIT: Duration = Duration::from_secs(5);

pub struct Programs {
    pub(crate) pending: Arc<PendingKv>,
    /// Executions running at once: each holds a thread (and, while it runs, a core).
    slots: Arc<Semaphore>,
}

impl Default for Programs {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Programs {
            pending: Arc::default(),
            slots: Arc::new(Semaphore::new((2 * cores).max(4))),
        }
    }
}

impl Programs {
    /// Runs `job` (JavaScript) on a blocking thread once a slot is free; 503 `ServiceBusy` if
    /// none frees up within a few seconds (runaway scripts hold theirs until their time limit).
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let permit = tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::Busy)?
            .map_err(|_| ApiError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let result = job();
            drop(permit);
            result
        })
        .await
        .map_err(|e| ApiError::Internal(format!("A JavaScript execution thread failed: {e}")))
    }
}

/// Runs `job` on an execution thread with a view of the tables: the committed state under the
/// pending writes (`writable`: whether scripts may write). Returns what `job` returned, what it
/// read, and the snapshot it started from (held until its writes are submitted).
pub async fn run_in_view<T: Send + 'static>(
    state: &Arc<crate::state::ApiState>,
    writable: bool,
    job: impl FnOnce(&View<'_>) -> T + Send + 'static,
) -> ApiResult<(T, ReadSet, Snapshot)> {
    let snapshot = state.programs.pending.begin();
    let job_state = state.clone();
    let (value, reads) = state
        .programs
        .run(move || {
            let reads = RefCell::new(ReadSet::default());
            let value = job(&View {
                ledger: &*job_state.ledger,
                pending: &job_state.programs.pending,
                earlier: &WriteSet::default(),
                writable,
                reads: &reads,
            });
            (value, reads.into_inner())
        })
        .await?;
    Ok((value, reads, snapshot))
}

/// One call of a user-defined function: standalone (`:execute`) or as a hook.
#[derive(Debug, Clone)]
pub struct FunctionCall {
    pub id: String,
    pub code: String,
    pub export: String,
    pub arguments: Vec<String>,
    /// The `context` global: `request`, `userId`, and for hooks `collectionId`, `contents`.
    pub context: Value,
    pub options: RuntimeOptions,
}

impl FunctionCall {
    /// Runs the call against `view` (blocking; on an execution thread).
    pub fn run(&self, view: &View<'_>) -> Execution<FunctionResult> {
        let execution = ledger_js::run_function(
            &self.id,
            &self.code,
            &self.export,
            &self.arguments,
            &self.context,
            view,
            &self.options.limits(),
        );
        if let Err(e) = &execution.outcome
            && self.options.log_exception_details
        {
            tracing::info!(function = %self.id, error = %e, "user-defined function failed");
        }
        execution
    }

    pub fn failure_message(&self, error: &ScriptError) -> String {
        failure_message(&self.id, error, self.options.return_exception_details)
    }
}

/// ACL's message for a failed execution of `name`: "Error while executing function f: Error:
/// boom" followed by the stack, or only the first part when details are not returned.
pub fn failure_message(name: &str, error: &ScriptError, return_details: bool) -> String {
    let head = format!("Error while executing function {name}");
    if !return_details {
        return format!("{head} (details are not returned: return_exception_details is false)");
    }
    match error {
        ScriptError::Thrown { message, stack } => match stack {
            Some(stack) => format!("{head}: {message}\n{stack}"),
            None => format!("{head}: {message}"),
        },
        other => format!("{head}: {other}"),
    }
}

/// The answer to a request whose user code failed: the ledger's own storage failing under it
/// is 503 like any read that fails; anything else is the code's failure, ACL's 500.
pub fn failed(message: String, error: &ScriptError) -> ApiError {
    match error {
        ScriptError::Kv(e) => ApiError::StorageUnavailable(format!(
            "The ledger could not read the tables for the user-defined code ({}); nothing was written.",
            e.0
        )),
        _ => ApiError::HookFailed(message),
    }
}

/// The outcome of running a request's hooks in order: everything they wrote (later hooks
/// over earlier ones), and what they read.
pub struct HooksRun {
    pub writes: WriteSet,
    pub reads: ReadSet,
}

/// Runs `calls` one after another, each seeing the writes of those before it; the first
/// failure ends the run with ACL's 500 `InternalError` naming the function.
pub fn run_hooks(
    ledger: &dyn LedgerHandle,
    pending: &PendingKv,
    calls: &[FunctionCall],
) -> ApiResult<HooksRun> {
    let mut writes = WriteSet::default();
    let reads = RefCell::new(ReadSet::default());
    for call in calls {
        let execution = call.run(&View {
            ledger,
            pending,
            earlier: &writes,
            writable: true,
            reads: &reads,
        });
        if let Err(e) = &execution.outcome {
            return Err(failed(call.failure_message(e), e));
        }
        writes.0.extend(execution.writes.0);
    }
    Ok(HooksRun {
        writes,
        reads: reads.into_inner(),
    })
}
