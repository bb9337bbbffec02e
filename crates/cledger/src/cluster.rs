//! `cledger cluster ...`: operating a cluster from a client (Administrator for the changes).
//! The formatting and parsing here are pure, and tested below; the requests are
//! `ledger-client`'s node endpoints.

use crate::client::{Connection, Failure, connect, io_failure, print_json};
use clap::{Subcommand, ValueEnum};
use ledger_client::node::NodeInfo;
use ledger_client::{Client, ClientConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the nodes of the service: id, status, role, client address, and, asked of each
    /// node, its view, its commit and how many seqnos it lags behind the primary's commit.
    #[command(after_help = "Example:\n  cledger cluster status --output json")]
    Status {
        /// `table` or `json` (--json also selects json).
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Admit a node waiting to join (Administrator). NODE_ID may be abbreviated to a unique
    /// prefix (as `status` shows it).
    #[command(after_help = "Example:\n  cledger cluster approve 3f2a9c81d0e4")]
    Approve { node_id: String },
    /// Retire a node: it leaves the service (Administrator). NODE_ID may be a unique prefix.
    #[command(after_help = "Example:\n  cledger cluster remove 3f2a9c81d0e4")]
    Remove { node_id: String },
    /// Make a one-time join token (Administrator): a node started with
    /// `--join URL --join-token FILE` is admitted without waiting for approval.
    #[command(
        after_help = "Example:\n  cledger cluster join-token --expires 30m --out node4.token"
    )]
    JoinToken {
        /// How long the token is valid: 90s, 30m, 2h, 1d, 1h30m or plain seconds [server
        /// default: 1h].
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Parses `90s`, `30m`, `2h`, `1d`, `1h30m`, `1w` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration (e.g. 90s, 30m, 2h, 1d, 1h30m)");
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| bad())?;
        return positive(Duration::from_secs(secs), text);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        if number.is_empty() {
            return Err(bad());
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        // `1h30`: a trailing number without its unit.
        return Err(bad());
    }
    positive(Duration::from_secs(total), text)
}

fn positive(d: Duration, text: &str) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!("{text:?}: the duration must be positive"))
    } else {
        Ok(d)
    }
}

/// What a node said about itself when asked directly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    pub view: Option<u64>,
    /// Its committed txid, `view.seqno`.
    pub commit: Option<String>,
    /// `Leader`, `Follower`, ... (from `/node/consensus`).
    pub state: Option<String>,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// One row of `cluster status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub node_id: String,
    pub status: String,
    pub role: String,
    pub address: String,
    pub view: Option<u64>,
    pub commit: Option<String>,
    pub lag: Option<u64>,
    pub error: Option<String>,
}

fn seqno(txid: &str) -> Option<u64> {
    ledger_core::TxId::parse(txid).ok().map(|t| t.seqno())
}

/// Combines the node list with what each node said (`probes[i]` is `nodes[i]`'s). The lag of
/// a node is how many seqnos its commit is behind the primary's.
pub fn rows(nodes: &[NodeInfo], probes: &[Probe]) -> Vec<Row> {
    let primary_commit = nodes
        .iter()
        .zip(probes)
        .find(|(n, _)| n.primary)
        .and_then(|(_, p)| p.commit.as_deref())
        .and_then(seqno);
    nodes
        .iter()
        .zip(probes)
        .map(|(n, p)| {
            let role = if n.primary {
                "primary"
            } else if n.status == "Trusted" {
                "backup"
            } else {
                "-"
            };
            let commit = p.commit.as_deref().and_then(seqno);
            Row {
                node_id: n.node_id.clone(),
                status: n.status.clone(),
                role: role.to_owned(),
                address: n.client_address().unwrap_or_else(|| "-".into()),
                view: p.view,
                commit: p.commit.clone(),
                lag: match (primary_commit, commit) {
                    (Some(primary), Some(own)) => Some(primary.saturating_sub(own)),
                    _ => None,
                },
                error: p.error.clone(),
            }
        })
        .collect()
}

/// The table `cluster status` prints: aligned columns, node ids cut to 12 hex digits.
pub fn table(rows: &[Row]) -> String {
    let header = ["NODE", "STATUS", "ROLE", "ADDRESS", "VIEW", "COMMIT", "LAG"];
    let dash = || "-".to_owned();
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        lines.push(vec![
            r.node_id.chars().take(12).collect(),
            r.status.clone(),
            r.role.clone(),
            r.address.clone(),
            r.view.map_or_else(dash, |v| v.to_string()),
            r.commit.clone().unwrap_or_else(dash),
            r.lag.map_or_else(dash, |l| l.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for r in rows.iter().filter(|r| r.error.is_some()) {
        out.push_str(&format!(
            "note: {} could not be asked: {}\n",
            r.node_id.chars().take(12).collect::<String>(),
            r.error.as_deref().unwrap_or_default()
        ));
    }
    out
}

/// The JSON `cluster status --output json` prints.
pub fn rows_json(rows: &[Row], view: Option<u64>, primary: Option<&str>) -> Value {
    json!({
        "current_view": view,
        "primary_id": primary,
        "nodes": rows.iter().map(|r| json!({
            "node_id": r.node_id, "status": r.status, "role": r.role, "address": r.address,
            "view": r.view, "commit": r.commit, "lag": r.lag, "error": r.error,
        })).collect::<Vec<_>>(),
    })
}

/// The full id of the node `given` names: itself, or the one node whose id starts with it.
pub fn resolve_node_id(given: &str, nodes: &[NodeInfo]) -> Result<String, String> {
    let given = given.trim().to_ascii_lowercase();
    if given.is_empty() || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{given:?} is not a node id (hex)"));
    }
    if let Some(n) = nodes
        .iter()
        .find(|n| n.node_id.eq_ignore_ascii_case(&given))
    {
        return Ok(n.node_id.clone());
    }
    if given.len() == 64 {
        // A whole id the list does not show (yet): the server decides.
        return Ok(given);
    }
    let matching: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.node_id.to_ascii_lowercase().starts_with(&given))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.node_id.clone()),
        [] => Err(format!("no node's id starts with {given}")),
        many => Err(format!(
            "{given} is the start of {} node ids ({}); give more digits",
            many.len(),
            many.iter()
                .map(|n| n.node_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// How long `status` waits for each node.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn probe(config: &ClientConfig, address: Option<String>) -> Probe {
    let Some(address) = address else {
        return Probe {
            error: Some("it publishes no client address".into()),
            ..Probe::default()
        };
    };
    let config = ClientConfig {
        endpoint: address,
        request_timeout: PROBE_TIMEOUT,
        retry_unavailable: Duration::ZERO,
        ..config.clone()
    };
    let result = Client::new(config).and_then(|c| {
        let commit = c.commit()?;
        let consensus = c.consensus()?;
        Ok(Probe {
            view: consensus.current_view,
            commit: Some(commit),
            state: Some(consensus.leadership_state),
            error: None,
        })
    });
    result.unwrap_or_else(|e| Probe {
        error: Some(e.to_string()),
        ..Probe::default()
    })
}

fn status(client: &Client, nodes: Vec<NodeInfo>, json_out: bool) -> Result<(), Failure> {
    let network = client.network()?;
    let config = client.config().clone();
    // Every node is asked at once, so a dead one costs one timeout, not one per node.
    let probes: Vec<Probe> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                let config = &config;
                let address = n.client_address();
                s.spawn(move || probe(config, address))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Probe {
                    error: Some("the probe panicked".into()),
                    ..Probe::default()
                })
            })
            .collect()
    });
    let rows = rows(&nodes, &probes);
    if json_out {
        print_json(&rows_json(
            &rows,
            network.current_view,
            network.primary_id.as_deref(),
        ));
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

fn write_token(path: &Path, token: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| io_failure(path, e))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_failure(path, e))
}

fn show_node(node: &NodeInfo, verb: &str, json_out: bool) {
    if json_out {
        print_json(&serde_json::to_value(node).unwrap_or_default());
    } else {
        println!("{verb} node {} (status {})", node.node_id, node.status);
    }
}

/// A node that is not a cluster node has no `/node/...` endpoints: say so.
fn not_a_cluster(e: ledger_client::Error) -> Failure {
    let standalone = matches!(&e, ledger_client::Error::Api { status: 404, .. });
    let mut failure = Failure::from(e);
    if standalone {
        failure.hint = Some(
            "this endpoint is not a cluster node (a node runs as one with `cledger serve --peer-listen ADDR`)"
                .into(),
        );
    }
    failure
}

pub fn run(cmd: ClusterCommand, conn: &Connection) -> Result<(), Failure> {
    let client = connect(conn)?;
    // Every command starts by reading the node list (`status` also the network).
    let nodes = client.nodes().map_err(not_a_cluster)?;
    match cmd {
        ClusterCommand::Status { output } => {
            status(&client, nodes, conn.json || output == OutputFormat::Json)?
        }
        ClusterCommand::Approve { node_id } => {
            let id = resolve_node_id(&node_id, &nodes).map_err(Failure::usage)?;
            show_node(&client.approve_node(&id)?, "approved", conn.json);
        }
        ClusterCommand::Remove { node_id } => {
            let id = resolve_node_id(&node_id, &nodes).map_err(Failure::usage)?;
            show_node(&client.retire_node(&id)?, "retired", conn.json);
        }
        ClusterCommand::JoinToken { expires, out } => {
            let token = client.create_join_token(expires)?;
            if let Some(path) = &out {
                write_token(path, &token.token)?;
            }
            if conn.json {
                print_json(&json!({
                    "token": out.is_none().then_some(&token.token),
                    "expires_at": token.expires_at, "out": out,
                }));
            } else if let Some(path) = &out {
                println!(
                    "join token written to {} (valid until {}, once)",
                    path.display(),
                    token.expires_at
                );
            } else {
                println!("{}", token.token);
                eprintln!("valid until {}, once", token.expires_at);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_client::node::RpcInterface;
    use std::collections::BTreeMap;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 600 "), Ok(Duration::from_secs(600)));
        for bad in [
            "",
            "0",
            "0s",
            "h",
            "1x",
            "1h30",
            "-5m",
            "1.5h",
            "m5",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    fn node(id: &str, status: &str, primary: bool, port: u16) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            status: status.into(),
            primary,
            rpc_interfaces: BTreeMap::from([(
                "primary_rpc_interface".into(),
                RpcInterface {
                    published_address: format!("127.0.0.1:{port}"),
                },
            )]),
            node_data: Value::Null,
            last_written: None,
        }
    }

    fn probe_of(view: u64, commit: &str) -> Probe {
        Probe {
            view: Some(view),
            commit: Some(commit.into()),
            state: None,
            error: None,
        }
    }

    #[test]
    fn rows_take_roles_from_the_list_and_lag_from_the_primarys_commit() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(64);
        let d = "d".repeat(64);
        let nodes = [
            node(&a, "Trusted", false, 8443),
            node(&b, "Trusted", true, 8444),
            node(&c, "Trusted", false, 8445),
            node(&d, "Pending", false, 8446),
        ];
        let probes = [
            probe_of(3, "3.90"),
            probe_of(3, "3.100"),
            Probe {
                error: Some("connection refused".into()),
                ..Probe::default()
            },
            probe_of(0, "2.120"),
        ];
        let rows = rows(&nodes, &probes);
        assert_eq!(rows[0].role, "backup");
        assert_eq!(rows[0].lag, Some(10));
        assert_eq!(rows[1].role, "primary");
        assert_eq!(rows[1].lag, Some(0));
        assert_eq!(rows[1].address, "https://127.0.0.1:8444");
        assert_eq!(rows[2].lag, None, "unreachable: no lag");
        assert_eq!(rows[3].role, "-");
        assert_eq!(
            rows[3].lag,
            Some(0),
            "ahead of the primary counts as no lag"
        );

        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NODE", "STATUS", "ROLE", "ADDRESS", "VIEW", "COMMIT", "LAG"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "bbbbbbbbbbbb",
                "Trusted",
                "primary",
                "https://127.0.0.1:8444",
                "3",
                "3.100",
                "0"
            ]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            [
                "cccccccccccc",
                "Trusted",
                "backup",
                "https://127.0.0.1:8445",
                "-",
                "-",
                "-"
            ]
        );
        // Columns line up: every row's ROLE starts where the header's does.
        let col = lines[0].find("ROLE").unwrap();
        for line in &lines[1..5] {
            assert!(
                line[col..].starts_with("backup")
                    || line[col..].starts_with("primary")
                    || line[col..].starts_with('-'),
                "{line:?}"
            );
        }
        assert!(lines[5].starts_with("note: cccccccccccc could not be asked: connection refused"));

        let json = rows_json(&rows, Some(3), Some(&b));
        assert_eq!(json["nodes"][1]["role"], "primary");
        assert_eq!(json["nodes"][0]["lag"], 10);
        assert_eq!(json["nodes"][2]["lag"], Value::Null);
        assert_eq!(json["primary_id"], b.as_str());
    }

    #[test]
    fn without_a_primary_there_is_no_lag() {
        let nodes = [node(&"a".repeat(64), "Trusted", false, 1)];
        let rows = rows(&nodes, &[probe_of(2, "2.5")]);
        assert_eq!(rows[0].lag, None);
    }

    #[test]
    fn node_ids_resolve_from_unique_prefixes() {
        let nodes = [
            node("ab12ff", "Trusted", true, 1),
            node("ab34ff", "Trusted", false, 2),
            node("cd56ff", "Pending", false, 3),
        ];
        assert_eq!(resolve_node_id("cd", &nodes), Ok("cd56ff".into()));
        assert_eq!(resolve_node_id("AB12", &nodes), Ok("ab12ff".into()));
        assert_eq!(resolve_node_id("ab34ff", &nodes), Ok("ab34ff".into()));
        assert!(
            resolve_node_id("ab", &nodes)
                .unwrap_err()
                .contains("2 node ids")
        );
        assert!(resolve_node_id("ee", &nodes).is_err());
        assert!(resolve_node_id("", &nodes).is_err());
        assert!(resolve_node_id("xyz", &nodes).is_err());
        let whole = "e".repeat(64);
        assert_eq!(resolve_node_id(&whole, &nodes), Ok(whole.clone()));
    }
}
