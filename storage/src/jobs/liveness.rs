//! Which members the leader considers alive: a member is lost once the leader has had no sign of
//! life from it for `lost_after` — neither a successful ping nor progress in its Raft
//! replication. A member seen for the first time gets the benefit of the doubt.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use keelson_raft::NodeId;
use tokio::time::Instant;

#[derive(Default)]
pub struct Liveness {
    seen: HashMap<NodeId, Instant>,
    matched: HashMap<NodeId, u64>,
}

impl Liveness {
    /// Forgets everything (this node stopped leading; the next leader starts afresh).
    pub fn reset(&mut self) {
        self.seen.clear();
        self.matched.clear();
    }

    pub fn saw(&mut self, id: NodeId, now: Instant) {
        self.seen.insert(id, now);
    }

    /// Records the leader's replication progress: a member whose matched log index advanced is
    /// alive.
    pub fn observe_replication(&mut self, now: Instant, matched: &BTreeMap<NodeId, Option<u64>>) {
        for (id, index) in matched {
            let index = index.unwrap_or(0);
            let before = self.matched.insert(*id, index);
            if before.is_some_and(|b| index > b) {
                self.seen.insert(*id, now);
            }
        }
    }

    /// The members still considered alive (`me` always is).
    pub fn live(
        &mut self,
        now: Instant,
        me: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        lost_after: Duration,
    ) -> BTreeSet<NodeId> {
        members
            .into_iter()
            .filter(|id| {
                let seen = *self.seen.entry(*id).or_insert(now);
                *id == me || now.duration_since(seen) <= lost_after
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_members_are_lost_after_the_limit() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(10);
        assert_eq!(l.live(t0, 1, [1, 2, 3], limit), BTreeSet::from([1, 2, 3]));
        l.observe_replication(t0, &BTreeMap::from([(2, Some(5)), (3, Some(5))]));
        let t1 = t0 + Duration::from_secs(8);
        l.observe_replication(t1, &BTreeMap::from([(2, Some(9)), (3, Some(5))]));
        let t2 = t0 + Duration::from_secs(12);
        assert_eq!(l.live(t2, 1, [1, 2, 3], limit), BTreeSet::from([1, 2]));
        l.saw(3, t2);
        assert_eq!(l.live(t2, 1, [1, 2, 3], limit), BTreeSet::from([1, 2, 3]));
    }
}
