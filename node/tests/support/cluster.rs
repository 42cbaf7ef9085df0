//! A cluster of real `keelson serve` processes under test, formed and changed with the real
//! `keelson cluster` CLI. The cluster tests and the redundancy tests share it; each adds the
//! inspections of its own in an `impl Cluster` block of its own.
//!
//! Convergence is polled with deadlines, never slept for; a helper that gives up panics with the
//! tail of every node's log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::status::status_over;
use super::tools::{exec, exec_ok, tail};
use super::ClusterNode;

/// The environment of a node, by node id.
type EnvOf = Box<dyn Fn(u64) -> Vec<(String, String)>>;

/// The nodes of one test.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    pub dir: PathBuf,
    /// The bootstrap administrator's auth token, when the nodes enforce auth (taken from the
    /// first node's `KEELSON_BOOTSTRAP_TOKEN`).
    pub admin_token: Option<String>,
    /// Extra environment of every node started, the later ones included.
    env_of: EnvOf,
}

impl Cluster {
    /// Starts the `(id, fault domain)` nodes of `spec` with the environment `env_of(id)` under
    /// `dir`, runs `init` on the first and `add` for the others, and waits until every node
    /// sees all of them as voters under one leader.
    pub fn form(dir: &Path, spec: &[(u64, &str)], env_of: impl Fn(u64) -> Vec<(String, String)> + 'static) -> Cluster {
        let admin_token = spec.first().and_then(|(first, _)| {
            env_of(*first)
                .into_iter()
                .find(|(k, _)| k == "KEELSON_BOOTSTRAP_TOKEN")
                .map(|(_, v)| v)
        });
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir: dir.to_path_buf(),
            admin_token,
            env_of: Box::new(env_of),
        };
        for (id, fd) in spec {
            cluster.start_node(*id, fd);
        }
        let (first, _) = spec[0];
        let via = cluster.node(first).cli_addr();
        cluster.cli(&via, &["init"]);
        cluster.wait_converged(
            "the first node leads a one-node cluster",
            &[first],
            Duration::from_secs(30),
        );
        for (id, _) in &spec[1..] {
            cluster.add(&via, *id);
        }
        let ids: Vec<u64> = spec.iter().map(|(id, _)| *id).collect();
        cluster.wait_converged(
            "every node sees all voters and one leader",
            &ids,
            Duration::from_secs(60),
        );
        cluster
    }

    /// Starts node `id` in `fault_domain` (not yet a member), with the cluster's environment.
    pub fn start_node(&mut self, id: u64, fault_domain: &str) {
        let env = (self.env_of)(id);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let node = ClusterNode::start_with_env(&self.dir.join(format!("n{id}")), id, fault_domain, &env);
        self.nodes.push(node);
    }

    pub fn node(&self, id: u64) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: u64) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("\n--- node {} ({}) keelson.log (tail):\n", n.id, n.host()));
            out.push_str(tail(&n.log(), 5000));
        }
        out
    }

    /// `keelson cluster --node <node> <args…>` as the administrator when auth is on; it must
    /// succeed. Returns stdout.
    pub fn cli(&self, node: &str, args: &[&str]) -> String {
        let out = exec(
            Command::new(env!("CARGO_BIN_EXE_keelson"))
                .args(["cluster", "--node", node])
                .args(args)
                .envs(
                    self.nodes
                        .iter()
                        .find_map(|n| n.ca.clone())
                        .map(|ca| ("KEELSON_CA", ca)),
                )
                // For `init`, the token proves the bootstrap secret the node was given.
                .envs(self.admin_token.iter().map(|t| ("KEELSON_TOKEN", t))),
            Duration::from_secs(120),
        );
        if !out.ok {
            panic!(
                "keelson cluster --node {node} {args:?} failed ({})\nstdout:\n{}\nstderr:\n{}{}",
                out.status,
                out.stdout,
                out.stderr,
                self.logs()
            );
        }
        out.stdout
    }

    /// `keelson cluster --node <via> add <id> <peer> --api <api> --fault-domain <fd>`, which
    /// returns once the node is a caught-up voter.
    pub fn add(&self, via: &str, id: u64) {
        let n = self.node(id);
        let printed = self.cli(
            via,
            &[
                "add",
                &id.to_string(),
                &n.peer.to_string(),
                "--api",
                &n.host(),
                "--fault-domain",
                &n.fault_domain,
            ],
        );
        assert!(printed.contains(&format!("node {id} added")), "add printed {printed:?}");
    }

    /// Runs a client command (docker, skopeo, ctr, the CLI) that must succeed within `limit`;
    /// a failure panics with its output and every node's log. Returns stdout.
    pub fn run(&self, cmd: &mut Command, limit: Duration) -> String {
        exec_ok(cmd, limit, || self.logs())
    }

    /// `keelson admin <args>` through `node`; its JSON answer.
    pub fn admin(&self, node: &str, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["admin", "--node", node])
            .args(args)
            .output()
            .expect("run keelson admin");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            panic!(
                "keelson admin {args:?} failed: {stdout}{}{}",
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
        }
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("keelson admin {args:?}: {e}: {stdout}"))
    }

    /// Node `id`'s cluster status, as the administrator when auth is on.
    pub fn status(&self, id: u64) -> Result<Value, String> {
        let admin = self.admin_token.as_deref().map(|t| ("keelson/admin", t));
        let node = self.node(id);
        status_over(node.api, node.ca.as_deref(), admin)
    }

    /// Polls `check` until it succeeds; panics with the last failure and the logs at the deadline.
    pub fn wait<T>(&self, what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            match check() {
                Ok(v) => return v,
                Err(e) if Instant::now() >= deadline => {
                    panic!("{what}: not reached in {} s; last: {e}{}", limit.as_secs(), self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Waits until each node in `ids` reports (from its own point of view) exactly the voters
    /// `ids`, the same known leader among them, and until exactly one of them is that leader.
    pub fn wait_converged(&self, what: &str, ids: &[u64], limit: Duration) -> u64 {
        let want: BTreeSet<u64> = ids.iter().copied().collect();
        self.wait(what, limit, || self.converged(&want))
    }

    fn converged(&self, want: &BTreeSet<u64>) -> Result<u64, String> {
        let mut leaders = BTreeSet::new();
        let mut leading = Vec::new();
        for id in want {
            let s = self.status(*id)?;
            let voters: BTreeSet<u64> = s["members"]
                .as_array()
                .ok_or("no members")?
                .iter()
                .filter(|m| m["voter"] == true)
                .map(|m| m["id"].as_u64().unwrap_or(0))
                .collect();
            let members = s["members"].as_array().map_or(0, |m| m.len());
            if voters != *want || members != want.len() {
                return Err(format!("node {id} sees voters {voters:?} among {members} members: {s}"));
            }
            let leader = s["leader"]
                .as_u64()
                .ok_or_else(|| format!("node {id} knows no leader: {s}"))?;
            leaders.insert(leader);
            if s["state"] == "leader" {
                leading.push(*id);
            }
        }
        let leader = match leaders.iter().collect::<Vec<_>>()[..] {
            [leader] => *leader,
            _ => return Err(format!("nodes disagree on the leader: {leaders:?}")),
        };
        if !want.contains(&leader) || leading != [leader] {
            return Err(format!("leader {leader}, nodes in state leader: {leading:?}"));
        }
        Ok(leader)
    }
}
