//! The node endpoints of a cledger cluster, with CCF's names and shapes: the network and its
//! nodes, the committed transaction, who is primary, consensus details, and the
//! Administrator's operations on membership (join tokens, approving and retiring nodes).
//!
//! Reads are answered by the node asked, from its own state; the Administrator's `POST`s
//! reaching a backup are redirected to the primary, which [`Client`] follows.

use crate::{Client, ClientConfig, Error, Result, enc, field};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// `GET /node/network`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub service_certificate: String,
    pub service_status: String,
    #[serde(default)]
    pub current_view: Option<u64>,
    #[serde(default)]
    pub primary_id: Option<String>,
    #[serde(default)]
    pub recovery_count: Option<u64>,
    #[serde(default)]
    pub service_data: Value,
    #[serde(default)]
    pub current_service_create_txid: Option<String>,
}

/// One interface a node serves clients on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RpcInterface {
    /// `host:port`.
    pub published_address: String,
}

/// A node as `GET /node/network/nodes` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Hex SHA-256 of the node's public key.
    pub node_id: String,
    /// `Pending`, `Trusted` or `Retired`.
    pub status: String,
    #[serde(default)]
    pub primary: bool,
    #[serde(default)]
    pub rpc_interfaces: BTreeMap<String, RpcInterface>,
    #[serde(default)]
    pub node_data: Value,
    #[serde(default)]
    pub last_written: Option<u64>,
}

impl NodeInfo {
    /// The node's client address, `https://host:port` (its primary RPC interface).
    pub fn client_address(&self) -> Option<String> {
        let interface = self
            .rpc_interfaces
            .get("primary_rpc_interface")
            .or_else(|| self.rpc_interfaces.values().next())?;
        let address = interface.published_address.trim();
        if address.is_empty() {
            return None;
        }
        Some(if address.starts_with("https://") {
            address.to_owned()
        } else {
            format!("https://{address}")
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct NodeList {
    nodes: Vec<NodeInfo>,
}

/// `GET /node/consensus` → `details`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Consensus {
    #[serde(default)]
    pub primary_id: Option<String>,
    #[serde(default)]
    pub current_view: Option<u64>,
    /// `Leader`, `Follower`, `Candidate` or `Learner`.
    pub leadership_state: String,
    #[serde(default)]
    pub configs: Value,
    /// Per node, the newest seqno the primary knows it holds (on the primary).
    #[serde(default)]
    pub acks: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ConsensusAnswer {
    details: Consensus,
}

/// `POST /node/join-tokens`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinToken {
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

impl Client {
    fn node_url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn node_get(&self, path: &str) -> Result<Value> {
        Ok(self.call(Method::GET, &self.node_url(path), None)?.1)
    }

    fn node_post(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.cloned().unwrap_or_else(|| json!({}));
        Ok(self
            .call(Method::POST, &self.node_url(path), Some(&body))?
            .1)
    }

    /// A client with the same settings for another node of the service (`https://host:port`).
    pub fn for_node(&self, endpoint: &str) -> Result<Client> {
        let config = ClientConfig {
            endpoint: endpoint.to_owned(),
            ..self.config.clone()
        };
        Client::new(config)
    }

    /// `GET /node/network`.
    pub fn network(&self) -> Result<Network> {
        field(self.node_get("/node/network")?, "network")
    }

    /// `GET /node/network/nodes`.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>> {
        Ok(field::<NodeList>(self.node_get("/node/network/nodes")?, "nodes")?.nodes)
    }

    /// `GET /node/commit`: the newest transaction this node knows to be committed.
    pub fn commit(&self) -> Result<String> {
        let body = self.node_get("/node/commit")?;
        let txid = body["transaction_id"]
            .as_str()
            .ok_or_else(|| Error::Protocol(format!("no transaction_id in /node/commit: {body}")))?;
        ledger_core::TxId::parse(txid)
            .map_err(|e| Error::Protocol(format!("bad transaction_id {txid:?}: {e}")))?;
        Ok(txid.to_owned())
    }

    /// `GET /node/primary`: whether this node is the primary (200) or not (404).
    pub fn is_primary(&self) -> Result<bool> {
        match self.call(Method::GET, &self.node_url("/node/primary"), None) {
            Ok(_) => Ok(true),
            Err(Error::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /node/consensus`.
    pub fn consensus(&self) -> Result<Consensus> {
        Ok(field::<ConsensusAnswer>(self.node_get("/node/consensus")?, "consensus")?.details)
    }

    /// `POST /node/join-tokens` (Administrator): a one-time token that admits a joining node
    /// without waiting for approval, valid for `expires_in` (the server's default when `None`).
    pub fn create_join_token(&self, expires_in: Option<Duration>) -> Result<JoinToken> {
        let body = match expires_in {
            Some(d) => json!({"expires_in_seconds": d.as_secs()}),
            None => json!({}),
        };
        field(
            self.node_post("/node/join-tokens", Some(&body))?,
            "join token",
        )
    }

    /// `POST /node/network/nodes/{id}/approve` (Administrator): admits a pending node.
    pub fn approve_node(&self, node_id: &str) -> Result<NodeInfo> {
        let path = format!("/node/network/nodes/{}/approve", enc(node_id));
        field(self.node_post(&path, None)?, "node")
    }

    /// `POST /node/network/nodes/{id}/retire` (Administrator): removes a node from the service.
    pub fn retire_node(&self, node_id: &str) -> Result<NodeInfo> {
        let path = format!("/node/network/nodes/{}/retire", enc(node_id));
        field(self.node_post(&path, None)?, "node")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_shapes_parse() {
        let nodes: NodeList = serde_json::from_value(json!({"nodes": [{
            "node_id": "ab".repeat(32), "status": "Trusted", "primary": true,
            "rpc_interfaces": {"primary_rpc_interface": {"published_address": "127.0.0.1:8443"}},
            "node_data": null, "last_written": 12
        }]}))
        .unwrap();
        let node = &nodes.nodes[0];
        assert!(node.primary);
        assert_eq!(node.last_written, Some(12));
        assert_eq!(
            node.client_address().as_deref(),
            Some("https://127.0.0.1:8443")
        );
        let consensus: ConsensusAnswer = serde_json::from_value(json!({"details": {
            "primary_id": null, "current_view": 3, "leadership_state": "Follower",
            "configs": [], "acks": {}
        }}))
        .unwrap();
        assert_eq!(consensus.details.current_view, Some(3));
        let network: Network = serde_json::from_value(json!({
            "service_certificate": "PEM", "service_status": "Open", "current_view": 2,
            "primary_id": null, "recovery_count": 0, "service_data": null,
            "current_service_create_txid": "1.1"
        }))
        .unwrap();
        assert_eq!(network.primary_id, None);
    }

    #[test]
    fn a_node_without_an_address_has_none() {
        let node = NodeInfo {
            node_id: "x".into(),
            status: "Pending".into(),
            primary: false,
            rpc_interfaces: BTreeMap::new(),
            node_data: Value::Null,
            last_written: None,
        };
        assert_eq!(node.client_address(), None);
    }
}
