//! A small network of Linux network namespaces for tests that cut links between nodes: each
//! node gets its own namespace with two interfaces, one on a *client* bridge (which the test
//! process, in the root namespace, reaches) and one on a *peer* bridge (node to node only).
//! Taking a node's peer link down partitions it from the other nodes while its clients still
//! reach it, the case where an old primary keeps taking writes that can never commit.
//!
//! Built with iproute2 (`ip netns`, veth, bridge); needs root, as CI and these machines have.
//! Everything is removed on drop; a run killed before that leaves names that the next run with
//! the same process id removes first.
#![allow(dead_code)]

use std::process::Command;

/// Where one node lives: its namespace and its two addresses.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: String,
    /// On the client bridge: the node's client listener, reached from the root namespace.
    pub client_ip: String,
    /// On the peer bridge: the node's peer listener, reached by the other nodes only.
    pub peer_ip: String,
    /// The root namespace's end of the peer link, set down to partition the node.
    peer_link: String,
}

pub struct Network {
    tag: String,
    pub hosts: Vec<Host>,
    bridges: [String; 2],
}

/// `ip ARGS...`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Network {
    /// `size` namespaces on two fresh bridges. Subnets `10.S.1.0/24` (clients) and
    /// `10.S.2.0/24` (peers), with S from the process id so that two test runs on one machine
    /// do not collide.
    pub fn new(size: usize) -> Result<Network, String> {
        assert!((1..=200).contains(&size));
        let pid = std::process::id();
        let tag = format!("{:x}", pid % 0xffff);
        let subnet = 16 + pid % 200;
        let bridges = [format!("clc{tag}"), format!("clp{tag}")];
        let mut network = Network {
            tag: tag.clone(),
            hosts: Vec::new(),
            bridges: bridges.clone(),
        };
        network.remove_leftovers(size);
        for (bridge, net) in bridges.iter().zip([1, 2]) {
            ip(&["link", "add", bridge, "type", "bridge"])?;
            ip(&["link", "set", bridge, "up"])?;
            if net == 1 {
                ip(&[
                    "addr",
                    "add",
                    &format!("10.{subnet}.1.254/24"),
                    "dev",
                    bridge,
                ])?;
            }
        }
        for n in 1..=size {
            let netns = format!("cl{tag}n{n}");
            ip(&["netns", "add", &netns])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            let mut links = Vec::new();
            for (bridge, (net, inner)) in bridges.iter().zip([(1, "eth0"), (2, "eth1")]) {
                let outer = format!("cl{tag}{}{n}", if net == 1 { 'c' } else { 'p' });
                ip(&[
                    "link", "add", &outer, "type", "veth", "peer", "name", inner, "netns", &netns,
                ])?;
                ip(&["link", "set", &outer, "master", bridge, "up"])?;
                let address = format!("10.{subnet}.{net}.{n}");
                ip(&[
                    "-n",
                    &netns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    inner,
                ])?;
                ip(&["-n", &netns, "link", "set", inner, "up"])?;
                links.push((outer, address));
            }
            let (_, client_ip) = links.remove(0);
            let (peer_link, peer_ip) = links.remove(0);
            network.hosts.push(Host {
                netns,
                client_ip,
                peer_ip,
                peer_link,
            });
        }
        Ok(network)
    }

    /// Cuts node `i` off the peer bridge: no packet between it and any other node.
    pub fn isolate(&self, i: usize) -> Result<(), String> {
        ip(&["link", "set", &self.hosts[i].peer_link, "down"])
    }

    /// Undoes [`Network::isolate`].
    pub fn heal(&self, i: usize) -> Result<(), String> {
        ip(&["link", "set", &self.hosts[i].peer_link, "up"])
    }

    fn remove_leftovers(&self, size: usize) {
        for n in 1..=size {
            let _ = ip(&["netns", "del", &format!("cl{}n{n}", self.tag)]);
        }
        for bridge in &self.bridges {
            let _ = ip(&["link", "del", bridge]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and with them the root namespace's.
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.netns]);
        }
        for bridge in &self.bridges {
            let _ = ip(&["link", "del", bridge]);
        }
    }
}
