//! A linearizability checker for one register: a tag of a repository, whose value is the digest
//! it points at (or nothing). It is Wing & Gong's search with Lowe's memoisation of
//! (linearized set, state) pairs, the algorithm Knossos and Porcupine use.
//!
//! Every operation has a call time and, when its outcome is known, a return time (global event
//! sequence numbers, so "A returned before B was called" is exact). An operation whose outcome is
//! unknown (timeout, connection lost, 5xx) gets an infinite return time: it may take effect at any
//! point after its call, or not at all (which is the same as taking effect after everything else,
//! since every such operation here is valid in any state). Operations that definitely failed are
//! left out by the caller. Linearizability is local, so checking each tag's register on its own
//! checks the whole history of tags.

use std::collections::HashSet;

/// A register value: an interned manifest digest, or `None` when the tag does not exist.
pub type Value = Option<u32>;

/// What an operation did to the register, as its answer tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// `PUT manifests/<tag>`: the tag now points at the digest.
    Write(u32),
    /// `GET manifests/<tag>` answered this digest (or 404: `None`).
    Read(Value),
    /// `DELETE manifests/<tag>` answered 202: the tag existed and is gone.
    DeleteTag,
    /// `DELETE manifests/<tag>` answered 404: the tag did not exist.
    DeleteTagAbsent,
    /// `DELETE manifests/<tag>` without a known answer: the tag is gone if it took effect.
    DeleteTagMaybe,
    /// `DELETE manifests/<digest>` answered 202 (or nothing): a tag pointing at it is gone.
    DeleteManifest(u32),
    /// `DELETE manifests/<digest>` answered 404: the manifest did not exist, so no tag pointed at it.
    DeleteManifestAbsent(u32),
}

impl RegOp {
    /// The state after this operation, or `None` when the operation cannot happen in `state`.
    pub fn step(self, state: Value) -> Option<Value> {
        match self {
            RegOp::Write(v) => Some(Some(v)),
            RegOp::Read(v) => (state == v).then_some(state),
            RegOp::DeleteTag => state.is_some().then_some(None),
            RegOp::DeleteTagAbsent => state.is_none().then_some(None),
            RegOp::DeleteTagMaybe => Some(None),
            RegOp::DeleteManifest(d) => Some(if state == Some(d) { None } else { state }),
            RegOp::DeleteManifestAbsent(d) => (state != Some(d)).then_some(state),
        }
    }
}

/// One operation of a register's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub call: u64,
    /// `None`: the outcome is unknown.
    pub ret: Option<u64>,
    pub op: RegOp,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order of the operations explains the answers; `deepest` is the longest prefix the
    /// search could linearize (a hint for reading the history).
    NotLinearizable {
        deepest: usize,
    },
    /// The search gave up after its step budget.
    Inconclusive,
}

/// A fixed-size bit set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Drops writes with unknown outcome that nothing could have observed: no other operation names
/// their value and no `DeleteTag` (which needs *some* value) could follow them. Such a write can
/// always be placed after everything else, so dropping it changes no verdict, and it keeps the
/// search from trying every subset of them at every step.
fn prune_unobserved(ops: &[Op]) -> Vec<Op> {
    let names = |o: &Op, v: u32| match o.op {
        RegOp::Read(Some(x)) | RegOp::DeleteManifest(x) | RegOp::DeleteManifestAbsent(x) => x == v,
        _ => false,
    };
    ops.iter()
        .enumerate()
        .filter(|(i, o)| match (o.ret, o.op) {
            (None, RegOp::Write(v)) => ops.iter().enumerate().any(|(j, other)| {
                j != *i && (names(other, v) || (other.op == RegOp::DeleteTag && other.ret.unwrap_or(u64::MAX) > o.call))
            }),
            _ => true,
        })
        .map(|(_, o)| *o)
        .collect()
}

/// Checks a register's history starting from `initial`, giving up after `budget` search steps.
pub fn check(ops: &[Op], initial: Value, budget: u64) -> Verdict {
    let ops = prune_unobserved(ops);
    let ops = &ops[..];
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Entries 0..2n: call of op i at 2i, return at 2i+1; the list head is entry 2n.
    let mut order: Vec<usize> = (0..2 * n).collect();
    let time = |e: usize| -> (u64, usize) {
        let op = &ops[e / 2];
        if e.is_multiple_of(2) {
            (op.call, e)
        } else {
            (op.ret.unwrap_or(u64::MAX), e)
        }
    };
    order.sort_by_key(|e| time(*e));
    let head = 2 * n;
    let mut next: Vec<Option<usize>> = vec![None; 2 * n + 1];
    let mut prev: Vec<usize> = vec![head; 2 * n + 1];
    let mut last = head;
    for &e in &order {
        next[last] = Some(e);
        prev[e] = last;
        last = e;
    }

    let lift = |next: &mut Vec<Option<usize>>, prev: &mut Vec<usize>, call: usize| {
        let ret = call + 1;
        next[prev[call]] = next[call];
        if let Some(nx) = next[call] {
            prev[nx] = prev[call];
        }
        next[prev[ret]] = next[ret];
        if let Some(nx) = next[ret] {
            prev[nx] = prev[ret];
        }
    };
    let unlift = |next: &mut Vec<Option<usize>>, prev: &mut Vec<usize>, call: usize| {
        let ret = call + 1;
        next[prev[ret]] = Some(ret);
        if let Some(nx) = next[ret] {
            prev[nx] = ret;
        }
        next[prev[call]] = Some(call);
        if let Some(nx) = next[call] {
            prev[nx] = call;
        }
    };

    let mut state = initial;
    let mut linearized = Bits::new(n);
    let mut cache: HashSet<(Bits, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut deepest = 0;
    let mut steps = 0u64;
    let mut entry = next[head];
    while next[head].is_some() {
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive;
        }
        let Some(e) = entry else {
            // Ran off the end: only possible if a return was skipped, which the loop never does.
            return Verdict::NotLinearizable { deepest };
        };
        if e % 2 == 0 {
            let i = e / 2;
            let mut advanced = false;
            if let Some(new_state) = ops[i].op.step(state) {
                let mut bits = linearized.clone();
                bits.set(i);
                if cache.insert((bits.clone(), new_state)) {
                    stack.push((e, state));
                    deepest = deepest.max(stack.len());
                    state = new_state;
                    linearized = bits;
                    lift(&mut next, &mut prev, e);
                    entry = next[head];
                    advanced = true;
                }
            }
            if !advanced {
                entry = next[e];
            }
        } else {
            // A return whose call is still in the list: that operation had to be linearized
            // before this point. Undo the last choice and try the next candidate.
            let Some((call, old_state)) = stack.pop() else {
                return Verdict::NotLinearizable { deepest };
            };
            state = old_state;
            linearized.clear(call / 2);
            unlift(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::RegOp::*;
    use super::*;

    const BUDGET: u64 = 10_000_000;

    fn op(call: u64, ret: u64, op: RegOp) -> Op {
        Op {
            call,
            ret: Some(ret),
            op,
        }
    }

    fn pending(call: u64, op: RegOp) -> Op {
        Op { call, ret: None, op }
    }

    fn ok(ops: &[Op]) -> bool {
        check(ops, None, BUDGET) == Verdict::Linearizable
    }

    #[test]
    fn sequential_histories() {
        assert!(ok(&[]));
        assert!(ok(&[op(1, 2, Write(1)), op(3, 4, Read(Some(1)))]));
        assert!(ok(&[
            op(1, 2, Read(None)),
            op(3, 4, Write(1)),
            op(5, 6, Write(2)),
            op(7, 8, Read(Some(2)))
        ]));
        assert!(
            !ok(&[op(1, 2, Write(1)), op(3, 4, Write(2)), op(5, 6, Read(Some(1)))]),
            "stale read"
        );
        assert!(
            !ok(&[op(1, 2, Read(Some(1))), op(3, 4, Write(1))]),
            "read from the future"
        );
        assert!(!ok(&[op(1, 2, Read(Some(7)))]), "value never written");
    }

    #[test]
    fn concurrent_histories() {
        // A read concurrent with a write may see either value ...
        assert!(ok(&[
            op(1, 10, Write(1)),
            op(2, 3, Read(None)),
            op(4, 5, Read(Some(1)))
        ]));
        assert!(ok(&[
            op(1, 10, Write(1)),
            op(2, 3, Read(Some(1))),
            op(4, 5, Read(Some(1)))
        ]));
        // ... but once a read saw the new value no later read may see the old one.
        assert!(!ok(&[
            op(1, 10, Write(1)),
            op(2, 3, Read(Some(1))),
            op(4, 5, Read(None))
        ]));
        // Two concurrent writes: reads after both must agree on one of them.
        let w = [op(1, 5, Write(1)), op(2, 6, Write(2))];
        assert!(ok(&[w[0], w[1], op(7, 8, Read(Some(1))), op(9, 10, Read(Some(1)))]));
        assert!(!ok(&[w[0], w[1], op(7, 8, Read(Some(1))), op(9, 10, Read(Some(2)))]));
    }

    #[test]
    fn unknown_outcomes() {
        // A write that timed out may have taken effect ...
        assert!(ok(&[pending(1, Write(1)), op(5, 6, Read(Some(1)))]));
        // ... or not ...
        assert!(ok(&[pending(1, Write(1)), op(5, 6, Read(None))]));
        // ... but not before it was sent, and not undone after it was seen.
        assert!(!ok(&[op(1, 2, Read(Some(1))), pending(3, Write(1))]));
        assert!(!ok(&[
            pending(1, Write(1)),
            op(3, 4, Read(Some(1))),
            op(5, 6, Read(None))
        ]));
        assert!(ok(&[
            op(1, 2, Write(1)),
            pending(3, DeleteTagMaybe),
            op(5, 6, Read(Some(1))),
            op(7, 8, Read(None))
        ]));
    }

    #[test]
    fn deletes() {
        assert!(ok(&[op(1, 2, Write(1)), op(3, 4, DeleteTag), op(5, 6, Read(None))]));
        assert!(!ok(&[op(1, 2, DeleteTag)]), "202 for a tag that never existed");
        assert!(ok(&[op(1, 2, DeleteTagAbsent), op(3, 4, Write(1))]));
        assert!(
            !ok(&[op(1, 2, Write(1)), op(3, 4, DeleteTagAbsent)]),
            "404 for an existing tag"
        );
        assert!(
            !ok(&[op(1, 2, Write(1)), op(3, 4, DeleteTag), op(5, 6, Read(Some(1)))]),
            "tag resurrected"
        );
        // Deleting a manifest removes only the tags that point at it.
        assert!(ok(&[
            op(1, 2, Write(1)),
            op(3, 4, Write(2)),
            op(5, 6, DeleteManifest(1)),
            op(7, 8, Read(Some(2)))
        ]));
        assert!(!ok(&[
            op(1, 2, Write(1)),
            op(3, 4, DeleteManifest(1)),
            op(5, 6, Read(Some(1)))
        ]));
        assert!(!ok(&[op(1, 2, Write(1)), op(3, 4, DeleteManifestAbsent(1))]));
        assert!(ok(&[
            op(1, 2, Write(2)),
            op(3, 4, DeleteManifestAbsent(1)),
            op(5, 6, Read(Some(2)))
        ]));
    }

    #[test]
    fn long_concurrent_history_is_fast() {
        // Four clients, each write overlapping the neighbours', reads of the latest completed
        // write: a valid history of 400 operations.
        let mut ops = Vec::new();
        let mut t = 0;
        for round in 0..100u32 {
            ops.push(op(t + 1, t + 4, Write(round)));
            ops.push(op(t + 2, t + 6, Read(Some(round))));
            ops.push(op(t + 3, t + 5, Read(if round == 0 { None } else { Some(round - 1) })));
            ops.push(pending(t + 3, Write(1000 + round)));
            t += 6;
        }
        assert!(ok(&ops));
        // A stale read at the end makes it invalid.
        ops.push(op(t + 10, t + 11, Read(Some(3))));
        assert!(!ok(&ops));
    }
}
