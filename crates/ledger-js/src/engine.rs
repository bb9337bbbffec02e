//! One execution: a fresh QuickJS runtime with its limits, on its own thread.
//!
//! Owns the lifecycle every execution shares: start the engine thread (so host functions,
//! which must be `'static`, never borrow the caller's [`KvSource`], and so the native stack
//! is sized for the stack limit whatever the caller's thread has), create the runtime and
//! context, install the prelude, run the entry point, settle promises, and turn whatever
//! went wrong into the right [`ScriptError`]. Nothing survives an execution: the runtime,
//! its heap and every global die with the engine thread's closure.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Instant;

use rquickjs::loader::{Loader, Resolver};
use rquickjs::{Context, Ctx, Function, Object, Persistent, Runtime, Value};

use crate::error::{KvError, ScriptError};
use crate::host::{self, HostState, Shared};
use crate::kv::{self, KvClient, KvFault, KvSource, KvView};
use crate::limits::{Limits, MAX_WRITE_BYTES};
use crate::logs::LogBuffer;
use crate::{Execution, WriteSet};

const PRELUDE: &str = include_str!("prelude.js");
/// Native stack the engine thread gets on top of the QuickJS stack limit.
const STACK_HEADROOM: usize = 1024 * 1024;

/// Where a failed import is recorded by the module resolver, to name it precisely.
pub(crate) type ImportFailure = Rc<RefCell<Option<ScriptError>>>;

/// What an entry point can reach while it runs.
pub(crate) struct Env<'js> {
    /// The private host object (with the prelude's conversion helpers on it).
    pub host: Object<'js>,
    pub limits: Limits,
    deadline: Instant,
    interrupted: Rc<Cell<bool>>,
    import_failure: ImportFailure,
    state: Shared,
}

impl<'js> Env<'js> {
    /// Whether the time limit is over.
    pub fn timed_out(&self) -> bool {
        self.interrupted.get() || Instant::now() >= self.deadline
    }

    /// A prelude helper by name.
    pub fn helper(&self, name: &str) -> Result<Function<'js>, ScriptError> {
        self.host.get(name).map_err(|e| ScriptError::Internal {
            message: format!("prelude helper {name}: {e}"),
        })
    }

    /// Turns an rquickjs error (with the pending exception, if any) into a [`ScriptError`].
    pub fn classify(&self, ctx: &Ctx<'js>, err: rquickjs::Error) -> ScriptError {
        let limits = self.limits;
        if self.timed_out() {
            return ScriptError::TimedOut {
                limit: limits.max_execution_time,
            };
        }
        if let Some(e) = self.import_failure.borrow().clone() {
            return e;
        }
        match err {
            rquickjs::Error::Exception => self.classify_thrown(ctx, ctx.catch()),
            rquickjs::Error::Allocation => ScriptError::OutOfMemory {
                limit: limits.max_heap_bytes,
            },
            other => ScriptError::Internal {
                message: other.to_string(),
            },
        }
    }

    /// Names a thrown value: a limit QuickJS hit, a host fault, or the script's own throw.
    pub fn classify_thrown(&self, ctx: &Ctx<'js>, value: Value<'js>) -> ScriptError {
        let limits = self.limits;
        let oom = ScriptError::OutOfMemory {
            limit: limits.max_heap_bytes,
        };
        if value.is_error() {
            if let Some(obj) = value.as_object() {
                let name: Option<String> = obj.get("name").ok();
                let message: Option<String> = obj.get("message").ok();
                match (name.as_deref(), message.as_deref()) {
                    (Some("InternalError"), Some("out of memory")) => return oom,
                    (Some("InternalError"), Some("interrupted")) => {
                        return ScriptError::TimedOut {
                            limit: limits.max_execution_time,
                        };
                    }
                    (Some("RangeError"), Some("Maximum call stack size exceeded"))
                    | (Some("InternalError"), Some("stack overflow")) => {
                        return ScriptError::StackOverflow {
                            limit: limits.max_stack_bytes,
                        };
                    }
                    _ => {}
                }
            }
        } else if value.type_of() == rquickjs::Type::Uninitialized {
            // No exception value at all: QuickJS could not allocate the "out of memory" error.
            return oom;
        }
        let (message, stack) = self.describe(value);
        if self.timed_out() {
            return ScriptError::TimedOut {
                limit: limits.max_execution_time,
            };
        }
        let _ = ctx;
        let last_fault = self.state.borrow().kv.last_fault.clone();
        if let Some(fault) = last_fault
            && message.ends_with(&fault.message())
        {
            match fault {
                KvFault::Access { table, write } => return ScriptError::KvAccess { table, write },
                KvFault::TooLarge => {
                    return ScriptError::OutputTooLarge {
                        what: "write set",
                        limit: MAX_WRITE_BYTES,
                    };
                }
                KvFault::Source(e) => return ScriptError::Kv(e),
            }
        }
        ScriptError::Thrown { message, stack }
    }

    /// `[message, stack]` of a thrown value via the prelude; never fails.
    fn describe(&self, value: Value<'js>) -> (String, Option<String>) {
        let described = self
            .helper("describe")
            .ok()
            .and_then(|f| f.call::<_, rquickjs::Array>((value,)).ok())
            .and_then(|a| Some((a.get::<String>(0).ok()?, a.get::<Option<String>>(1).ok()?)));
        described.unwrap_or_else(|| ("(a value that cannot be displayed)".to_owned(), None))
    }

    /// Waits for a promise to settle by running jobs; a plain value is returned as is.
    pub fn settle(&self, ctx: &Ctx<'js>, value: Value<'js>) -> Result<Value<'js>, ScriptError> {
        let Some(promise) = value.as_promise() else {
            return Ok(value);
        };
        match promise.finish::<Value>() {
            Ok(v) => Ok(v),
            Err(rquickjs::Error::WouldBlock) => {
                if self.timed_out() {
                    Err(ScriptError::TimedOut {
                        limit: self.limits.max_execution_time,
                    })
                } else {
                    Err(ScriptError::Unsettled)
                }
            }
            Err(e) => Err(self.classify(ctx, e)),
        }
    }
}

/// How module imports are treated.
pub(crate) enum Imports {
    /// Every import is refused (functions).
    Refuse,
    /// Imports resolve within this bundle (normalized name → source).
    Bundle(Rc<std::collections::BTreeMap<String, String>>),
}

/// Normalizes a module path: no leading "/", no "." segments, ".." applied.
pub(crate) fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

struct ImportResolver {
    imports: Rc<Imports>,
    failure: ImportFailure,
}

impl Resolver for ImportResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        match &*self.imports {
            Imports::Refuse => {
                self.failure
                    .borrow_mut()
                    .get_or_insert(ScriptError::ImportRefused { name: name.into() });
                Err(rquickjs::Error::new_resolving_message(
                    base,
                    name,
                    "imports are not allowed in functions",
                ))
            }
            Imports::Bundle(modules) => {
                let joined = if name.starts_with("./") || name.starts_with("../") {
                    match base.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{name}"),
                        None => name.to_owned(),
                    }
                } else {
                    name.to_owned()
                };
                match normalize(&joined) {
                    Some(n) if modules.contains_key(&n) => Ok(n),
                    resolved => {
                        let shown = resolved.unwrap_or(joined);
                        self.failure
                            .borrow_mut()
                            .get_or_insert(ScriptError::ModuleNotFound {
                                name: shown.clone(),
                            });
                        Err(rquickjs::Error::new_resolving_message(
                            base,
                            name,
                            format!("module '{shown}' is not in the bundle"),
                        ))
                    }
                }
            }
        }
    }
}

struct ImportLoader {
    imports: Rc<Imports>,
}

impl Loader for ImportLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<rquickjs::Module<'js, rquickjs::module::Declared>> {
        match &*self.imports {
            Imports::Bundle(modules) => match modules.get(name) {
                Some(src) => rquickjs::Module::declare(ctx.clone(), name, src.as_str()),
                None => Err(rquickjs::Error::new_loading(name)),
            },
            Imports::Refuse => Err(rquickjs::Error::new_loading(name)),
        }
    }
}

/// Runs `entry` in a fresh engine on its own thread, serving key-value reads from `kv`
/// on the calling thread until it is done.
pub(crate) fn execute<T, F>(
    kv: &dyn KvSource,
    limits: &Limits,
    imports: Imports,
    entry: F,
) -> Execution<T>
where
    T: Send,
    F: for<'js> FnOnce(&Ctx<'js>, &Env<'js>) -> Result<T, ScriptError> + Send,
{
    let limits = *limits;
    let (req_tx, req_rx) = mpsc::channel();
    let (rep_tx, rep_rx) = mpsc::channel();
    let client = KvClient {
        requests: req_tx,
        replies: rep_rx,
    };
    // `Imports` holds an `Rc`, so it is rebuilt on the engine thread from owned parts.
    let bundle = match imports {
        Imports::Refuse => None,
        Imports::Bundle(m) => Some((*m).clone()),
    };
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("ledger-js".into())
            .stack_size(limits.max_stack_bytes.saturating_add(STACK_HEADROOM))
            .spawn_scoped(scope, move || {
                let imports = match bundle {
                    None => Imports::Refuse,
                    Some(m) => Imports::Bundle(Rc::new(m)),
                };
                run_engine(client, limits, imports, entry)
            });
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => return internal(format!("cannot start the engine thread: {e}")),
        };
        for request in req_rx {
            if rep_tx.send(kv::serve(kv, request)).is_err() {
                break;
            }
        }
        handle
            .join()
            .unwrap_or_else(|_| internal("the engine thread panicked".into()))
    })
}

fn internal<T>(message: String) -> Execution<T> {
    Execution {
        outcome: Err(ScriptError::Internal { message }),
        logs: Vec::new(),
        writes: WriteSet::default(),
        read_tables: false,
    }
}

fn run_engine<T, F>(client: KvClient, limits: Limits, imports: Imports, entry: F) -> Execution<T>
where
    F: for<'js> FnOnce(&Ctx<'js>, &Env<'js>) -> Result<T, ScriptError>,
{
    let state: Shared = Rc::new(RefCell::new(HostState {
        logs: LogBuffer::default(),
        kv: KvView::new(client),
    }));
    let outcome = run_in_runtime(&state, limits, imports, entry);
    let state = match Rc::try_unwrap(state) {
        Ok(cell) => cell.into_inner(),
        Err(_) => return internal("host state still shared after the runtime ended".into()),
    };
    let HostState { logs, kv } = state;
    let read_tables = kv.read_tables;
    let source_failure: Option<KvError> = kv.source_failure.clone();
    let outcome = match (outcome, source_failure) {
        (_, Some(e)) => Err(ScriptError::Kv(e)),
        (o, None) => o,
    };
    let writes = if outcome.is_ok() {
        kv.into_writes()
    } else {
        WriteSet::default()
    };
    Execution {
        outcome,
        logs: logs.finish(),
        writes,
        read_tables,
    }
}

fn run_in_runtime<T, F>(
    state: &Shared,
    limits: Limits,
    imports: Imports,
    entry: F,
) -> Result<T, ScriptError>
where
    F: for<'js> FnOnce(&Ctx<'js>, &Env<'js>) -> Result<T, ScriptError>,
{
    let setup = |what: &str, e: rquickjs::Error| ScriptError::Internal {
        message: format!("{what}: {e}"),
    };
    let rt = Runtime::new().map_err(|e| setup("runtime", e))?;
    let imports = Rc::new(imports);
    let import_failure: ImportFailure = Rc::new(RefCell::new(None));
    rt.set_loader(
        ImportResolver {
            imports: imports.clone(),
            failure: import_failure.clone(),
        },
        ImportLoader { imports },
    );
    let ctx = Context::full(&rt).map_err(|e| setup("context", e))?;
    let host = ctx.with(|ctx| {
        let host = host::install(&ctx, state).map_err(|e| setup("host functions", e))?;
        ctx.globals()
            .set("__cledger_host", host.clone())
            .map_err(|e| setup("host object", e))?;
        ctx.eval::<(), _>(PRELUDE).map_err(|e| {
            let detail = format!("{:?}", ctx.catch());
            setup(&format!("prelude ({detail})"), e)
        })?;
        Ok::<_, ScriptError>(Persistent::save(&ctx, host))
    })?;
    // Limits apply from here (the runtime cannot be configured inside `with`): the
    // prelude is ours and always fits.
    rt.set_memory_limit(limits.max_heap_bytes);
    rt.set_max_stack_size(limits.max_stack_bytes);
    let deadline = Instant::now() + limits.max_execution_time;
    let interrupted = Rc::new(Cell::new(false));
    let flag = interrupted.clone();
    rt.set_interrupt_handler(Some(Box::new(move || {
        if Instant::now() >= deadline {
            flag.set(true);
            true
        } else {
            false
        }
    })));
    let result = ctx.with(|ctx| {
        let host = host.restore(&ctx).map_err(|e| setup("host object", e))?;
        let env = Env {
            host,
            limits,
            deadline,
            interrupted: interrupted.clone(),
            import_failure,
            state: state.clone(),
        };
        let out = entry(&ctx, &env);
        match out {
            Ok(_) if env.timed_out() => Err(ScriptError::TimedOut {
                limit: limits.max_execution_time,
            }),
            other => other,
        }
    });
    drop(ctx);
    drop(rt);
    result
}
