//! Membership changes while faults are active: the seed decides whether a spare node is added
//! (as `keelson cluster add` does: `POST /api/v1/cluster/members`, which makes it a learner,
//! lets it catch up and promotes it to voter) and whether one of the original nodes is removed
//! (`DELETE /api/v1/cluster/members/<id>`), and when — inside the fault window, so partitions,
//! loss and crashes are in effect while the configuration changes. The admin retries through any
//! node, as an operator would, until the cluster reports the change; the verifier then checks the
//! invariants on the final members only (a removed node's copies do not count).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use crate::cluster::{self, NodeSpec};
use crate::history::{now_ms, Shared};

/// What the seed asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No change.
    Keep,
    /// Add the spare node.
    Add,
    /// Add the spare node, then remove original node `remove` (an index).
    Replace { remove: usize },
    /// Remove original node `remove`.
    Remove { remove: usize },
}

impl Plan {
    /// Draws a plan for a cluster of `nodes` original nodes.
    pub fn draw(rng: &mut StdRng, nodes: usize) -> Plan {
        let remove = rng.gen_range(0..nodes);
        match rng.gen_range(0..8) {
            0..=2 => Plan::Keep,
            3..=4 => Plan::Add,
            5..=6 => Plan::Replace { remove },
            _ if nodes > 2 => Plan::Remove { remove },
            _ => Plan::Keep,
        }
    }

    /// Whether the spare node takes part.
    pub fn adds(self) -> bool {
        matches!(self, Plan::Add | Plan::Replace { .. })
    }

    fn removes(self) -> Option<usize> {
        match self {
            Plan::Replace { remove } | Plan::Remove { remove } => Some(remove),
            Plan::Keep | Plan::Add => None,
        }
    }
}

/// The changes of one run, with their times (ms after formation).
#[derive(Debug, Clone)]
pub struct Changes {
    pub plan: Plan,
    pub add_at_ms: u64,
    pub remove_at_ms: u64,
    /// Which node the admin asks first (later attempts go round the nodes).
    pub first_contact: usize,
}

impl Changes {
    pub fn draw(rng: &mut StdRng, nodes: usize, fault_window_ms: u64) -> Changes {
        let plan = Plan::draw(rng, nodes);
        let window = fault_window_ms.max(4_000);
        let add_at_ms = rng.gen_range(1_000..window / 2);
        let remove_at_ms = rng.gen_range(window / 2..window);
        Changes {
            plan,
            add_at_ms,
            remove_at_ms,
            first_contact: rng.gen_range(0..nodes),
        }
    }
}

/// How long after the faults are healed a change may still take.
const SETTLE_WITHIN_MS: u64 = 120_000;

/// Runs the changes (in the admin host, after formation) and publishes the final members.
/// `originals` formed the cluster; `spare`, when the plan adds it, joins it.
pub async fn run(shared: &Shared, changes: Changes, originals: Vec<NodeSpec>, spare: Option<NodeSpec>) {
    let Some(formed) = shared.formed_at.get() else {
        return;
    };
    let mut members = originals.clone();
    let mut contacts = originals.clone();
    let everyone: Vec<NodeSpec> = originals.iter().cloned().chain(spare.clone()).collect();
    if let (true, Some(spare)) = (changes.plan.adds(), spare) {
        sleep_until(formed + changes.add_at_ms).await;
        if add(shared, &spare, &contacts, &everyone, changes.first_contact).await {
            members.push(spare.clone());
            contacts.push(spare);
        }
    }
    if let Some(index) = changes.plan.removes() {
        sleep_until(formed + changes.remove_at_ms).await;
        let gone = originals[index].clone();
        contacts.retain(|n| n.id != gone.id);
        if remove(shared, &gone, &contacts, &everyone, changes.first_contact).await {
            members.retain(|n| n.id != gone.id);
        }
    }
    shared.trace(
        now_ms(),
        format!(
            "admin members settled: {}",
            members.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(",")
        ),
    );
    *shared.final_members.borrow_mut() = Some(members.iter().map(|n| n.id).collect());
}

async fn sleep_until(at_ms: u64) {
    let now = now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// Whether the change is over its time: the faults healed long enough ago.
fn overdue(shared: &Shared) -> bool {
    shared.healed_at.get().is_some_and(|h| now_ms() > h + SETTLE_WITHIN_MS)
}

/// Adds `node` through the management API; true once some node reports it a voter.
async fn add(shared: &Shared, node: &NodeSpec, contacts: &[NodeSpec], everyone: &[NodeSpec], first: usize) -> bool {
    shared.count("fault.membership-add", 1);
    let body = node.member_json();
    let mut attempt = 0;
    loop {
        let via = &contacts[(first + attempt) % contacts.len()];
        attempt += 1;
        let answer = cluster::post_json(&via.name, "/api/v1/cluster/members", body.clone()).await;
        shared.trace(
            now_ms(),
            format!(
                "admin add {} via {} -> {}",
                node.name,
                via.name,
                cluster::answer_label(&answer)
            ),
        );
        if member_state(contacts, everyone, node.id).await == Member::Voter {
            shared.count("membership.added", 1);
            return true;
        }
        if overdue(shared) {
            shared.fail(
                "membership_change",
                format!("adding {} did not complete after healing", node.name),
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Removes `node`; true once some remaining node reports it gone.
async fn remove(shared: &Shared, node: &NodeSpec, contacts: &[NodeSpec], everyone: &[NodeSpec], first: usize) -> bool {
    shared.count("fault.membership-remove", 1);
    let mut attempt = 0;
    loop {
        let via = &contacts[(first + attempt) % contacts.len()];
        attempt += 1;
        let answer = cluster::delete(&via.name, &format!("/api/v1/cluster/members/{}", node.id)).await;
        shared.trace(
            now_ms(),
            format!(
                "admin remove {} via {} -> {}",
                node.name,
                via.name,
                cluster::answer_label(&answer)
            ),
        );
        if member_state(contacts, everyone, node.id).await == Member::Absent {
            shared.count("membership.removed", 1);
            return true;
        }
        if overdue(shared) {
            shared.fail(
                "membership_change",
                format!("removing {} did not complete after healing", node.name),
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Node `id` as the leader reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    /// No leader answered.
    Unknown,
    Absent,
    Learner,
    Voter,
}

/// Asks the contacts in turn until one names a leader (any node of `everyone`) that answers.
async fn member_state(contacts: &[NodeSpec], everyone: &[NodeSpec], id: u64) -> Member {
    for node in contacts {
        let Ok(s) = cluster::status(&node.name, Duration::from_secs(1)).await else {
            continue;
        };
        let Some(leader) = everyone.iter().find(|n| Some(n.id) == s.leader) else {
            continue;
        };
        let Ok(l) = cluster::status(&leader.name, Duration::from_secs(1)).await else {
            continue;
        };
        if l.state != "leader" {
            continue;
        }
        return match l.members.iter().find(|m| m.id == id) {
            None => Member::Absent,
            Some(m) if m.voter => Member::Voter,
            Some(_) => Member::Learner,
        };
    }
    Member::Unknown
}
