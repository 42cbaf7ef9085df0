//! Faults: a schedule of episodes drawn from the seed, applied to the simulation by the driver
//! between steps. One episode runs at a time; each starts (partition, crash, lossy link, …) and
//! later ends (repair, restart, …), and after the last one everything is healed.
//!
//! turmoil's TCP has no retransmission: a segment dropped by a partition or by loss leaves that
//! connection stuck until a keep-alive or a timeout gives up on it. `hold` instead keeps the
//! segments and delivers them on release, which is what a real TCP connection does across a
//! short partition; both kinds are used.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use crate::cluster::NodeSpec;
use crate::history::Shared;

/// The kinds of fault, as the report counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// The current leader cut off from the other nodes (segments dropped).
    IsolateLeader,
    /// The current leader cut off, segments held and delivered on healing.
    HoldLeader,
    /// A random node (a minority) cut off from the rest.
    IsolateNode,
    /// One fault domain cut off from everyone, clients included.
    FaultDomainCut,
    /// One direction of one link between two nodes drops everything.
    OneWay,
    /// A link between two nodes loses messages at random.
    LossyLink,
    /// Every message takes much longer.
    SlowNetwork,
    /// A random node crashes and restarts later.
    CrashNode,
    /// The leader crashes and restarts later.
    CrashLeader,
    /// The WAN between the regions drops everything.
    WanCut,
    /// The WAN between the regions is slow (hundreds of ms per message).
    WanSlow,
    /// The second region's node crashes and restarts later.
    CrashRemote,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::IsolateLeader,
        FaultKind::HoldLeader,
        FaultKind::IsolateNode,
        FaultKind::FaultDomainCut,
        FaultKind::OneWay,
        FaultKind::LossyLink,
        FaultKind::SlowNetwork,
        FaultKind::CrashNode,
        FaultKind::CrashLeader,
        FaultKind::WanCut,
        FaultKind::WanSlow,
        FaultKind::CrashRemote,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::HoldLeader => "hold-leader",
            FaultKind::IsolateNode => "isolate-node",
            FaultKind::FaultDomainCut => "fault-domain-cut",
            FaultKind::OneWay => "one-way-partition",
            FaultKind::LossyLink => "lossy-link",
            FaultKind::SlowNetwork => "slow-network",
            FaultKind::CrashNode => "crash-restart",
            FaultKind::CrashLeader => "crash-leader",
            FaultKind::WanCut => "wan-cut",
            FaultKind::WanSlow => "wan-slow",
            FaultKind::CrashRemote => "crash-remote-region",
        }
    }
}

/// One fault episode, times relative to the cluster's formation.
#[derive(Debug, Clone)]
pub struct Episode {
    pub kind: FaultKind,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Random draws fixed at schedule time, so targets do not depend on when they are resolved.
    pub pick: u64,
    pub strength: f64,
}

/// Draws a schedule of episodes inside `[first_ms, last_ms)`.
pub fn schedule(rng: &mut StdRng, first_ms: u64, last_ms: u64, kinds: &[FaultKind]) -> Vec<Episode> {
    let mut episodes = Vec::new();
    let mut t = first_ms + rng.gen_range(0..1_000);
    while t < last_ms && !kinds.is_empty() {
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let duration = rng.gen_range(500..6_000);
        let end = (t + duration).min(last_ms);
        episodes.push(Episode {
            kind,
            start_ms: t,
            end_ms: end,
            pick: rng.gen(),
            strength: rng.gen_range(0.0..1.0),
        });
        t = end + rng.gen_range(200..3_000);
    }
    episodes
}

/// What an episode did, so its end can undo exactly that.
#[derive(Debug, Clone)]
enum Applied {
    Partition { a: Vec<String>, b: Vec<String> },
    Hold { a: Vec<String>, b: Vec<String> },
    OneWay { from: String, to: String },
    Lossy { a: String, b: String },
    Slow,
    SlowLinks { a: Vec<String>, b: Vec<String> },
    Crash { host: String },
}

/// Applies the schedule as simulated time passes.
pub struct Injector {
    episodes: Vec<Episode>,
    next: usize,
    active: Option<(Episode, Applied)>,
    nodes: Vec<NodeSpec>,
    /// Every host that is not a node (clients, monitor).
    others: Vec<String>,
    /// The other region's hosts, across the WAN.
    remote: Vec<String>,
    normal_latency: Duration,
    crashed: BTreeSet<String>,
    healed: bool,
}

impl Injector {
    pub fn new(
        episodes: Vec<Episode>,
        nodes: Vec<NodeSpec>,
        others: Vec<String>,
        remote: Vec<String>,
        normal_latency: Duration,
    ) -> Injector {
        Injector {
            episodes,
            next: 0,
            active: None,
            nodes,
            others,
            remote,
            normal_latency,
            crashed: BTreeSet::new(),
            healed: false,
        }
    }

    pub fn healed(&self) -> bool {
        self.healed
    }

    /// Starts and ends episodes due at `now_ms` (sim time); heals everything after the last.
    pub fn advance(&mut self, sim: &mut turmoil::Sim<'_>, shared: &Shared, now_ms: u64) {
        let Some(formed) = shared.formed_at.get() else {
            return;
        };
        if self.healed {
            return;
        }
        let rel = now_ms.saturating_sub(formed);
        if let Some((episode, applied)) = &self.active {
            if rel >= episode.end_ms {
                let (episode, applied) = (episode.clone(), applied.clone());
                self.undo(sim, &applied);
                shared.trace(
                    now_ms,
                    format!("fault end {} {}", episode.kind.name(), describe(&applied)),
                );
                self.active = None;
            } else {
                return;
            }
        }
        if let Some(episode) = self.episodes.get(self.next) {
            if rel >= episode.start_ms {
                let episode = episode.clone();
                self.next += 1;
                let applied = self.apply(sim, shared, &episode);
                shared.trace(
                    now_ms,
                    format!("fault start {} {}", episode.kind.name(), describe(&applied)),
                );
                shared.count(format!("fault.{}", episode.kind.name()), 1);
                self.active = Some((episode, applied));
            }
        } else {
            self.heal_all(sim);
            self.healed = true;
            shared.healed_at.set(Some(now_ms));
            shared.trace(now_ms, "fault heal-all");
        }
    }

    fn node_name(&self, pick: u64) -> String {
        self.nodes[(pick % self.nodes.len() as u64) as usize].name.clone()
    }

    fn leader_or(&self, shared: &Shared, pick: u64) -> String {
        shared
            .leader
            .get()
            .and_then(|id| self.nodes.iter().find(|n| n.id == id))
            .map_or_else(|| self.node_name(pick), |n| n.name.clone())
    }

    /// The home region's side of the WAN: its nodes and its balancer.
    fn home_side(&self) -> Vec<String> {
        let mut side: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        side.push(crate::cluster::LB_HOST.to_string());
        side
    }

    fn other_nodes(&self, host: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.name != host)
            .map(|n| n.name.clone())
            .collect()
    }

    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, shared: &Shared, ep: &Episode) -> Applied {
        let applied = match ep.kind {
            FaultKind::IsolateLeader => {
                let leader = self.leader_or(shared, ep.pick);
                Applied::Partition {
                    b: self.other_nodes(&leader),
                    a: vec![leader],
                }
            }
            FaultKind::HoldLeader => {
                let leader = self.leader_or(shared, ep.pick);
                Applied::Hold {
                    b: self.other_nodes(&leader),
                    a: vec![leader],
                }
            }
            FaultKind::IsolateNode => {
                let node = self.node_name(ep.pick);
                Applied::Partition {
                    b: self.other_nodes(&node),
                    a: vec![node],
                }
            }
            FaultKind::FaultDomainCut => {
                let domain = self.nodes[(ep.pick % self.nodes.len() as u64) as usize]
                    .fault_domain
                    .clone();
                let (inside, outside): (Vec<&NodeSpec>, Vec<&NodeSpec>) =
                    self.nodes.iter().partition(|n| n.fault_domain == domain);
                let mut b: Vec<String> = outside.iter().map(|n| n.name.clone()).collect();
                b.extend(self.others.iter().cloned());
                Applied::Partition {
                    a: inside.iter().map(|n| n.name.clone()).collect(),
                    b,
                }
            }
            FaultKind::OneWay => {
                let from = self.node_name(ep.pick);
                let others = self.other_nodes(&from);
                let to = others[((ep.pick >> 8) % others.len() as u64) as usize].clone();
                Applied::OneWay { from, to }
            }
            FaultKind::LossyLink => {
                let a = self.node_name(ep.pick);
                let others = self.other_nodes(&a);
                let b = others[((ep.pick >> 8) % others.len() as u64) as usize].clone();
                Applied::Lossy { a, b }
            }
            FaultKind::SlowNetwork => Applied::Slow,
            FaultKind::CrashNode => Applied::Crash {
                host: self.node_name(ep.pick),
            },
            FaultKind::CrashLeader => Applied::Crash {
                host: self.leader_or(shared, ep.pick),
            },
            FaultKind::WanCut => Applied::Partition {
                a: self.remote.clone(),
                b: self.home_side(),
            },
            FaultKind::WanSlow => Applied::SlowLinks {
                a: self.remote.clone(),
                b: self.home_side(),
            },
            FaultKind::CrashRemote => Applied::Crash {
                host: self.remote[(ep.pick % self.remote.len().max(1) as u64) as usize].clone(),
            },
        };
        match &applied {
            Applied::Partition { a, b } => {
                for x in a {
                    for y in b {
                        sim.partition(x.as_str(), y.as_str());
                    }
                }
            }
            Applied::Hold { a, b } => {
                for x in a {
                    for y in b {
                        sim.hold(x.as_str(), y.as_str());
                    }
                }
            }
            Applied::OneWay { from, to } => sim.partition_oneway(from.as_str(), to.as_str()),
            Applied::Lossy { a, b } => {
                sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.002 + 0.02 * ep.strength);
            }
            Applied::Slow => {
                let max = 100 + (700.0 * ep.strength) as u64;
                sim.set_max_message_latency(Duration::from_millis(max));
            }
            Applied::SlowLinks { a, b } => {
                let max = Duration::from_millis(50 + (450.0 * ep.strength) as u64);
                for x in a {
                    for y in b {
                        sim.set_link_max_message_latency(x.as_str(), y.as_str(), max);
                    }
                }
            }
            Applied::Crash { host } => {
                sim.crash(host.as_str());
                self.crashed.insert(host.clone());
            }
        }
        applied
    }

    fn undo(&mut self, sim: &mut turmoil::Sim<'_>, applied: &Applied) {
        match applied {
            Applied::Partition { a, b } => {
                for x in a {
                    for y in b {
                        sim.repair(x.as_str(), y.as_str());
                    }
                }
            }
            Applied::Hold { a, b } => {
                for x in a {
                    for y in b {
                        sim.release(x.as_str(), y.as_str());
                    }
                }
            }
            Applied::OneWay { from, to } => sim.repair_oneway(from.as_str(), to.as_str()),
            Applied::Lossy { a, b } => sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0),
            Applied::Slow => sim.set_max_message_latency(self.normal_latency),
            Applied::SlowLinks { a, b } => {
                for x in a {
                    for y in b {
                        sim.set_link_max_message_latency(x.as_str(), y.as_str(), self.normal_latency);
                    }
                }
            }
            Applied::Crash { host } => {
                sim.bounce(host.as_str());
                self.crashed.remove(host);
            }
        }
    }

    /// Undoes whatever is still in effect.
    fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>) {
        if let Some((_, applied)) = self.active.take() {
            self.undo(sim, &applied);
        }
        for host in std::mem::take(&mut self.crashed) {
            sim.bounce(host.as_str());
        }
    }
}

fn describe(applied: &Applied) -> String {
    match applied {
        Applied::Partition { a, b } => format!("drop {} | {}", a.join(","), b.join(",")),
        Applied::Hold { a, b } => format!("hold {} | {}", a.join(","), b.join(",")),
        Applied::OneWay { from, to } => format!("{from} -> {to}"),
        Applied::Lossy { a, b } => format!("{a} <-> {b}"),
        Applied::Slow => "all links".into(),
        Applied::SlowLinks { a, b } => format!("slow {} <-> {}", a.join(","), b.join(",")),
        Applied::Crash { host } => host.clone(),
    }
}
