//! Crash safety: a child process appends from several threads and is killed with SIGKILL at a
//! random moment, again and again on the same data directory. After every kill the ledger must
//! reopen, every write the child saw acknowledged must be there with exactly its contents and
//! a receipt that verifies, and the offline audit must pass.
//!
//! The child is this test binary running the ignored `crash_child` test with
//! `CLEDGER_CRASH_CHILD_DIR` set; it prints `COMMITTED <txid> <contents>` after each
//! acknowledged append.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::entry::ApplicationEntry;
use ledger_core::hash::sha256;
use ledger_store::audit::audit;
use ledger_store::{StoreConfig, WriteRequest};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_DIR_ENV: &str = "CLEDGER_CRASH_CHILD_DIR";
const CHILD_RUN_ENV: &str = "CLEDGER_CRASH_RUN";
const CHILD_SIGN_INTERVAL_ENV: &str = "CLEDGER_CRASH_SIGN_INTERVAL_MS";
const CHILD_PACE_ENV: &str = "CLEDGER_CRASH_PACE_MS";
const ITERATIONS_ENV: &str = "CLEDGER_CRASH_ITERATIONS";
/// Kills per run of the test; `CLEDGER_CRASH_ITERATIONS` may raise it, never lower it.
const MIN_KILLS: u64 = 50;
const CHILD_THREADS: u64 = 4;
/// Segments rotate every few dozen entries, so kills land around rotations too.
const CRASH_SEGMENT_BYTES: u64 = 64 << 10;
/// The data key is rotated every few dozen entries, so kills land around rotations too (and
/// torn tails cut some of them).
const CRASH_KEY_BUDGET: u64 = 40;
/// The child gives up on its own after this long, should the parent die without killing it.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const COMMITTED: &str = "COMMITTED ";
const SIGKILL: i32 = 9;

fn crash_config(sign_interval: Duration) -> StoreConfig {
    StoreConfig {
        sign_interval,
        key_rotation_every: CRASH_KEY_BUDGET,
        ..config_with_segments(CRASH_SEGMENT_BYTES)
    }
}

/// How one child run writes. Kills land under different signing cadences and loads.
#[derive(Debug, Clone, Copy)]
struct ChildParams {
    run: u64,
    sign_interval: Duration,
    /// Each thread pauses up to this long between appends. Unpaced, the child commits
    /// thousands of entries a second, nearly one signature per few entries, and since every
    /// run re-audits the whole ledger (one ECDSA verification per signature) the test's cost
    /// grows with the square of what the children write; pacing keeps it within a minute.
    pace: Duration,
}

impl ChildParams {
    fn of_run(run: u64) -> ChildParams {
        ChildParams {
            run,
            sign_interval: Duration::from_millis([1, 2, 5, 20][(run % 4) as usize]),
            pace: Duration::from_millis([10, 25, 50][(run % 3) as usize]),
        }
    }

    fn config(&self) -> StoreConfig {
        crash_config(self.sign_interval)
    }

    /// The pause of thread `thread` after its append `counter`: varied, so that the threads'
    /// appends sometimes meet in one batch and sometimes not.
    fn pause(&self, thread: u64, counter: u64) -> Duration {
        let millis = self.pace.as_millis() as u64;
        Duration::from_millis((counter * 7919 + thread * 104_729 + self.run * 31) % (millis + 1))
    }
}

/// Entry `counter` of thread `thread` in child run `run`. The contents name all three, so the
/// parent can rebuild the whole entry (collection, tags, claims key) from a COMMITTED line.
fn crash_entry(run: u64, thread: u64, counter: u64) -> ApplicationEntry {
    // Now and then a large entry: its write spans many pages, so a kill can tear it.
    let padding = if counter % 12 == 11 {
        80_000
    } else {
        (counter * 53 + thread * 17) % 400
    };
    let contents = format!(
        "run {run} thread {thread} n {counter} {}",
        "p".repeat(padding as usize)
    );
    let collection = ["subledger:0", "crash-a", "crash-b"][((counter + thread) % 3) as usize];
    let tags = match counter % 6 {
        0 => vec![format!("thread-{thread}")],
        3 => vec!["three".to_owned(), format!("run-{run}")],
        _ => vec![],
    };
    let claims_key = (counter % 3 == 1).then(|| sha256(contents.as_bytes()).0);
    ApplicationEntry {
        collection_id: collection.into(),
        contents,
        tags,
        claims_key,
        idempotency: None,
        kv_writes: Vec::new(),
    }
}

/// The entry a COMMITTED line's contents describe.
fn entry_from_contents(contents: &str) -> ApplicationEntry {
    let words: Vec<&str> = contents.split(' ').collect();
    let number = |i: usize| {
        words
            .get(i)
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("bad contents {contents:?}"))
    };
    crash_entry(number(1), number(3), number(5))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

/// The child: appends until killed. A no-op unless started by `appends_survive_repeated_sigkill`.
#[test]
#[ignore = "run by the crash test as its child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let params = ChildParams {
        run: env_u64(CHILD_RUN_ENV).expect("run number"),
        sign_interval: Duration::from_millis(
            env_u64(CHILD_SIGN_INTERVAL_ENV).expect("sign interval"),
        ),
        pace: Duration::from_millis(env_u64(CHILD_PACE_ENV).expect("pace")),
    };
    let (ledger, _) = reopen_ok(Path::new(&dir), params.config());
    // Libtest may have written "test crash_child ... " without a newline; end that line.
    println!();
    let started = Instant::now();
    std::thread::scope(|s| {
        for thread in 0..CHILD_THREADS {
            let ledger = &ledger;
            s.spawn(move || {
                for counter in 0.. {
                    if started.elapsed() > CHILD_LIFETIME {
                        return;
                    }
                    let entry = crash_entry(params.run, thread, counter);
                    let contents = entry.contents.clone();
                    let txid = ledger
                        .append(WriteRequest::Entry(entry))
                        .unwrap_or_else(|e| panic!("append failed: {e}"));
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{COMMITTED}{txid} {contents}").expect("stdout");
                    out.flush().expect("stdout");
                    drop(out);
                    std::thread::sleep(params.pause(thread, counter));
                }
            });
        }
    });
}

/// Kills the child if the parent panics before doing so.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the child on `dir`, kills it `delay` after its first acknowledged write, and returns
/// the writes it reported committed (complete lines only).
fn run_child_until_killed(dir: &Path, params: ChildParams, delay: Duration) -> Vec<(TxId, String)> {
    let run = params.run;
    let stderr_path = dir.with_extension(format!("child-{run}.stderr"));
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_RUN_ENV, run.to_string())
        .env(
            CHILD_SIGN_INTERVAL_ENV,
            params.sign_interval.as_millis().to_string(),
        )
        .env(CHILD_PACE_ENV, params.pace.as_millis().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("child starts");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (line_tx, line_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match stdout.read_until(b'\n', &mut line) {
                // A line cut off by the kill has no newline: the child never finished saying it.
                Ok(_) if line.ends_with(b"\n") => {
                    let line = String::from_utf8(line).expect("child prints UTF-8");
                    if line_tx
                        .send(line.trim_end_matches('\n').to_owned())
                        .is_err()
                    {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    let child_failed = |what: &str| -> ! {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!("run {run}: {what}; child stderr:\n{stderr}")
    };
    let mut lines = Vec::new();
    loop {
        match line_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let first = line.starts_with(COMMITTED);
                lines.push(line);
                if first {
                    break;
                }
            }
            Err(_) => child_failed("no write was acknowledged within 30 s"),
        }
    }
    std::thread::sleep(delay);
    child.0.kill().expect("SIGKILL");
    let status = child.0.wait().expect("child is reaped");
    if status.signal() != Some(SIGKILL) {
        child_failed(&format!(
            "the child ended by itself ({status}) before it was killed"
        ));
    }
    reader.join().expect("reader thread");
    lines.extend(line_rx.try_iter());
    let _ = std::fs::remove_file(&stderr_path);
    lines
        .iter()
        .filter_map(|line| line.strip_prefix(COMMITTED))
        .map(|rest| {
            let (txid, contents) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("malformed line {rest:?}"));
            (TxId::parse(txid).expect("txid"), contents.to_owned())
        })
        .collect()
}

#[test]
fn appends_survive_repeated_sigkill() {
    let kills = env_u64(ITERATIONS_ENV).unwrap_or(MIN_KILLS).max(MIN_KILLS);
    let mut rng = XorShift::new(test_seed(None));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (ledger, files) = create_ledger(&dir, ChildParams::of_run(0).config());
    ledger.close();
    drop(ledger);
    let cert = files.service_cert_pem.as_str();

    let started = Instant::now();
    let mut acknowledged: HashMap<TxId, ApplicationEntry> = HashMap::new();
    let (mut checked, mut truncations, mut max_batch) = (0u64, 0u64, 0usize);
    let (mut in_child, mut in_checks, mut in_audit) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // Where the ledger ended after the previous run's recovery; a run only appends after it.
    let mut previous_end = 1;
    for run in 0..kills {
        let params = ChildParams::of_run(run);
        let delay = Duration::from_millis(rng.range(20, 201));
        let phase = Instant::now();
        let committed = run_child_until_killed(&dir, params, delay);
        max_batch = max_batch.max(committed.len());
        in_child += phase.elapsed();
        let phase = Instant::now();

        let (ledger, report) = reopen(&dir, params.config())
            .unwrap_or_else(|e| panic!("run {run}: reopening after SIGKILL failed: {e}"));
        // A crash leaves derived files behind the ledger, never damaged: nothing to rebuild.
        assert!(
            report.rebuilt.is_empty(),
            "run {run}: the open after a crash rebuilt derived files: {:?}",
            report.rebuilt
        );
        if let Some((file, offset, len)) = &report.truncated_tail {
            truncations += 1;
            println!(
                "run {run}: cut a torn tail of {len} bytes at {} offset {offset}",
                file.display()
            );
        }
        for (txid, contents) in &committed {
            assert!(
                txid.seqno() > previous_end,
                "run {run}: acknowledged {txid} reuses a seqno before {previous_end}"
            );
            let expected = entry_from_contents(contents);
            assert_eq!(
                &expected.contents, contents,
                "run {run}: the child printed contents it did not write"
            );
            let record = ledger
                .entry(*txid)
                .unwrap_or_else(|e| panic!("run {run}: reading acknowledged {txid} failed: {e}"))
                .unwrap_or_else(|| {
                    panic!("run {run}: acknowledged {txid} is missing after the crash")
                });
            assert_eq!(
                record.entry, expected,
                "run {run}: acknowledged {txid} changed"
            );
            verify_receipt_of(&ledger, *txid, cert);
            if let Some(before) = acknowledged.insert(*txid, expected) {
                panic!(
                    "run {run}: {txid} was acknowledged twice, first for {:?}",
                    before.contents
                );
            }
        }
        checked += committed.len() as u64;
        ledger.close();
        drop(ledger);
        in_checks += phase.elapsed();
        let phase = Instant::now();
        let audited = audit(&dir, Some(cert))
            .unwrap_or_else(|e| panic!("run {run}: audit after SIGKILL failed: {e}"));
        assert_eq!(
            audited.unsigned_tail, 0,
            "run {run}: closing signs everything"
        );
        let newest = committed.iter().map(|(t, _)| t.seqno()).max().unwrap_or(0);
        assert!(
            audited.transactions > newest,
            "run {run}: audit ends at {} before {newest}",
            audited.transactions
        );
        previous_end = audited.transactions;
        in_audit += phase.elapsed();
    }
    let crash_phase = started.elapsed();

    // Nothing acknowledged in an earlier run was lost or changed by a later crash.
    let (ledger, _) = reopen_ok(&dir, ChildParams::of_run(0).config());
    let all: Vec<(TxId, ApplicationEntry)> = acknowledged.into_iter().collect();
    assert_entries_intact(&ledger, &all);
    let key_versions = ledger.key_versions().len();
    assert!(key_versions > 2, "the children rotated the data key");
    println!(
        "kills {kills}, acknowledged writes checked {checked} (most in one run {max_batch}), \
         reopens that cut a torn tail {truncations}, ledger end {}, data key versions \
         {key_versions}, crash phase {crash_phase:.1?} \
         (children {in_child:.1?}, reopen and checks {in_checks:.1?}, audits {in_audit:.1?})",
        ledger.committed().map_or(0, TxId::seqno)
    );
    assert_eq!(all.len() as u64, checked);
}
