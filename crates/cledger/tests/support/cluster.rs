//! Clusters of real `cledger serve` processes for the cluster suites: nodes on loopback with
//! fixed free ports, or each in a network namespace of a [`Network`] (a restarted node is
//! started with the same command line), the `cledger` command line as an operator runs it,
//! and polling helpers.
//!
//! Every [`Node`] kills its process when dropped, so a failing test never leaks one.
#![allow(dead_code)]

use super::netns::Host;
use super::{Output, binary, clear_cledger_env};
use ledger_client::{Auth, Client, ClientConfig};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 now (the kernel's pick; a race with other processes is possible
/// but unlikely in the ephemeral range).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `limit`; panics naming
/// `what` and the last note otherwise.
pub fn wait_for<T>(what: &str, limit: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    try_wait_for(what, limit, probe).unwrap_or_else(|e| panic!("{e}"))
}

/// [`wait_for`] that returns the failure instead of panicking.
pub fn try_wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(note) => note,
        };
        if start.elapsed() > limit {
            return Err(format!("{what}: not within {limit:?}; last: {last}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// For a failure message: saves every node's whole output under
/// `$CARGO_TARGET_TMPDIR/cluster_e2e/TEST/NODE.log` (the test's temporary directory goes away)
/// and returns the last lines of each, with the paths.
pub fn describe_all(test: &str, nodes: &[Node]) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cluster_e2e")
        .join(test);
    let _ = std::fs::create_dir_all(&dir);
    let mut out = String::new();
    for n in nodes {
        let path = dir.join(format!("{}.log", n.name));
        let text = n.output.describe();
        let saved = match std::fs::write(&path, &text) {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("not saved: {e}"),
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        out.push_str(&format!(
            "##### {} (whole output: {saved}) #####\n{tail}\n",
            n.name
        ));
    }
    out
}

/// One `cledger serve` node: its directory, its ports and its command line.
pub struct Node {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the process runs: loopback in this namespace, or a namespace of its own.
    pub host: Option<Host>,
    pub port: u16,
    pub peer_port: u16,
    /// Arguments after `serve --data-dir D --listen A --peer-listen P`.
    pub extra: Vec<String>,
    child: Option<Child>,
    /// Stopped with SIGSTOP (and not continued yet).
    paused: bool,
    pub output: Output,
    pub starts: u32,
}

impl Node {
    pub fn new(name: &str, root: &Path, extra: &[String]) -> Node {
        Node {
            name: name.to_owned(),
            data_dir: root.join(name),
            host: None,
            port: free_port(),
            peer_port: free_port(),
            extra: extra.to_vec(),
            child: None,
            paused: false,
            output: Output::default(),
            starts: 0,
        }
    }

    /// A node in `host`'s network namespace (the ports are its own there).
    pub fn in_namespace(name: &str, root: &Path, extra: &[String], host: &Host) -> Node {
        let mut node = Node::new(name, root, extra);
        node.host = Some(host.clone());
        (node.port, node.peer_port) = (8443, 9443);
        node
    }

    fn client_ip(&self) -> &str {
        self.host.as_ref().map_or("127.0.0.1", |h| &h.client_ip)
    }

    /// `https://IP:PORT`, the node's client address.
    pub fn address(&self) -> String {
        format!("https://{}:{}", self.client_ip(), self.port)
    }

    /// The full command line of `cledger serve` for this node.
    pub fn command_line(&self) -> Vec<String> {
        let peer_ip = self.host.as_ref().map_or("127.0.0.1", |h| &h.peer_ip);
        let mut args = vec![
            "serve".to_owned(),
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
            "--listen".to_owned(),
            format!("{}:{}", self.client_ip(), self.port),
            "--peer-listen".to_owned(),
            format!("{peer_ip}:{}", self.peer_port),
        ];
        if self.host.is_some() {
            // The founder's certificate must name its addresses (a joining node's certificate
            // names those it asked to join with).
            for ip in [self.client_ip(), peer_ip] {
                args.extend(["--hostname".to_owned(), ip.to_owned()]);
            }
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts the process (without waiting for it to serve). In a namespace, through `ip netns
    /// exec`, which execs it: the child is the server process itself.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut command = match &self.host {
            None => Command::new(binary()),
            Some(host) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &host.netns]).arg(binary());
                c
            }
        };
        command
            .args(self.command_line())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clear_cledger_env(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let marker = format!("=== {} start {} ===\n", self.name, self.starts);
        self.output.stdout.lock().unwrap().push_str(&marker);
        self.output.stderr.lock().unwrap().push_str(&marker);
        let stdout = child.stdout.take().unwrap();
        let sink = self.output.stdout.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let sink = self.output.stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        self.child = Some(child);
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("try_wait")?;
        self.child = None;
        // Let the reader threads collect the last lines.
        thread::sleep(Duration::from_millis(100));
        Some(status)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// SIGSTOP: the process keeps its sockets and its state but does nothing (a machine that
    /// hangs, or a long pause); peers and clients see it stop answering.
    pub fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&mut self) {
        self.signal("CONT");
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{name} {} failed", self.name);
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        self.paused = false;
        let mut child = self.child.take().expect("not running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }

    /// SIGTERM, then wait (20 s at most) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within 20 s of SIGTERM\n{}",
                    self.name,
                    self.output.describe()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client of this node pinning `service_cert_pem`.
    pub fn client(&self, service_cert_pem: &str, auth: Auth) -> Client {
        let mut config = ClientConfig::new(self.address(), service_cert_pem, auth);
        config.request_timeout = Duration::from_secs(15);
        Client::new(config).expect("client")
    }

    /// Waits until the node answers `GET /node/network` over TLS pinned to the service
    /// certificate (a joining node does once it has its node certificate). Panics with the
    /// node's output when it exits or does not answer in time.
    pub fn wait_serving(&mut self, service_cert_pem: &str, limit: Duration) {
        let client = self.client(service_cert_pem, Auth::None);
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before serving\n{}",
                    self.name,
                    self.output.describe()
                );
            }
            let last = match client.network() {
                Ok(_) => return,
                Err(e) => e.to_string(),
            };
            if start.elapsed() > limit {
                panic!(
                    "{} does not serve /node/network after {limit:?} (last: {last})\n{}",
                    self.name,
                    self.output.describe()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a `cledger` command printed.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0; returns stdout.
    pub fn ok(&self, what: &str) -> &str {
        assert!(
            self.status.success(),
            "{what}: exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    pub fn json(&self, what: &str) -> serde_json::Value {
        let out = self.ok(what);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {out}"))
    }
}

/// Runs `cledger ARGS...` with a clean environment.
pub fn cledger(args: &[&str]) -> Run {
    let mut command = Command::new(binary());
    command.args(args).stdin(Stdio::null());
    clear_cledger_env(&mut command);
    let out = command.output().expect("run cledger");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An operator's `cledger` settings: an endpoint, the pinned service certificate and an
/// Administrator's certificate bundle.
#[derive(Clone)]
pub struct Operator {
    pub service_cert: PathBuf,
    pub cert: PathBuf,
}

impl Operator {
    /// `cledger --endpoint ENDPOINT --service-cert .. --cert .. ARGS...`
    pub fn run(&self, endpoint: &str, args: &[&str]) -> Run {
        let mut all = vec![
            "--endpoint",
            endpoint,
            "--service-cert",
            self.service_cert.to_str().unwrap(),
            "--cert",
            self.cert.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        cledger(&all)
    }

    /// `cledger cluster status --output json` asked of `endpoint`.
    pub fn status(&self, endpoint: &str) -> serde_json::Value {
        self.run(endpoint, &["cluster", "status", "--output", "json"])
            .json("cledger cluster status")
    }
}
