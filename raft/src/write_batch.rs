//! Group commit of catalog writes on the leader: concurrent pushes share one Raft entry.
//!
//! openraft 0.9's core waits for each entry's log fsync before it takes the next client write,
//! so one entry per manifest PUT meant one fsync per tag, one after another, whatever the
//! concurrency (issue 19 measured ~900 tags/s with 1 client and with 32). Here every write the
//! leader serves (its own and those forwarded by other members) joins a queue; one writer
//! proposes whatever queued while the previous entry was being made durable as a single
//! [`CatalogCommand::Batch`], and hands each caller its own command's answer. Under load that is
//! one fsync, one replication round and one apply transaction for many tags; alone, a write
//! is proposed as itself at once (no waiting for company).
//!
//! What may share an entry: only the commands of the push path ([`batchable`]), which never
//! read the committed store past the writes of the entry they are in. Anything else (a
//! repository deletion scans committed keys, a GC mark walks them) is proposed alone, in its
//! queue order. A batch is bounded by [`MAX_BATCH_COMMANDS`] and by the byte bound of one
//! entry. Each sub-command is applied as if it were its own entry: a rejected one changes
//! nothing (its writes are rolled back) and the others still apply, in order, seeing the writes
//! of those before them (see `state_machine`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::command::{CatalogCommand, EntryAnswer};
use crate::node::MAX_COMMAND_BYTES;
use crate::peer::{ForwardError, ForwardReply, ForwardResult};
use crate::types::KeelsonRaft;

/// Commands in one batched entry at most.
pub const MAX_BATCH_COMMANDS: usize = 256;

/// Writes waiting for an entry at most; past it a write is refused (the caller answers 503 and
/// the client retries) rather than queued without bound.
pub const MAX_QUEUED_WRITES: usize = 64 * MAX_BATCH_COMMANDS;

/// A queued write and where its answer goes.
struct Pending {
    cmd: CatalogCommand,
    bytes: u64,
    reply: oneshot::Sender<ForwardResult>,
}

#[derive(Default)]
pub struct WriteBatcher {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A writer task is proposing (it takes whatever queues until the queue is empty).
    running: bool,
    queue: VecDeque<Pending>,
}

/// Whether `cmd` may share an entry with other commands (see the module doc).
pub fn batchable(cmd: &CatalogCommand) -> bool {
    match cmd {
        CatalogCommand::LinkBlob { .. }
        | CatalogCommand::LinkReplicas { .. }
        | CatalogCommand::LinkCoded { .. }
        | CatalogCommand::MountBlob { .. }
        | CatalogCommand::PutManifest { .. }
        | CatalogCommand::PutManifestTags { .. } => true,
        CatalogCommand::TagIf { then, .. } | CatalogCommand::Attributed { then, .. } => batchable(then),
        _ => false,
    }
}

impl WriteBatcher {
    /// Proposes `cmd` (of `bytes` encoded bytes, already checked against the entry bound) with
    /// whatever else is queued, and returns its own answer.
    pub async fn write(self: &Arc<Self>, raft: &KeelsonRaft, cmd: CatalogCommand, bytes: u64) -> ForwardResult {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.queue.len() >= MAX_QUEUED_WRITES {
                return Err(ForwardError::Failed(format!(
                    "{MAX_QUEUED_WRITES} catalog writes are already waiting on the leader"
                )));
            }
            state.queue.push_back(Pending { cmd, bytes, reply });
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let this = self.clone();
            let raft = raft.clone();
            tokio::spawn(async move {
                while let Some(batch) = this.next_batch() {
                    propose(&raft, batch).await;
                }
            });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ForwardError::Failed("the leader's writer stopped".into())))
    }

    /// The next entry's commands, in queue order; `None` (and the writer stops) when none wait.
    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let first = match state.queue.pop_front() {
            Some(first) => first,
            None => {
                state.running = false;
                return None;
            }
        };
        if !batchable(&first.cmd) {
            return Some(vec![first]);
        }
        // The batch's own encoding adds a length and a tag per command.
        let overhead = |n: u64| 16 + 8 * n;
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while let Some(next) = state.queue.front() {
            let total = bytes.saturating_add(next.bytes);
            if batch.len() >= MAX_BATCH_COMMANDS
                || !batchable(&next.cmd)
                || total.saturating_add(overhead(batch.len() as u64 + 1)) > MAX_COMMAND_BYTES
            {
                break;
            }
            bytes = total;
            if let Some(next) = state.queue.pop_front() {
                batch.push(next);
            }
        }
        Some(batch)
    }
}

/// Writes one entry for `batch` and answers each of its callers.
async fn propose(raft: &KeelsonRaft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        if let Some(one) = batch.pop() {
            let answer = write_entry(raft, one.cmd).await;
            let _ = one.reply.send(answer);
        }
        return;
    }
    let (cmds, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    match raft.client_write(CatalogCommand::Batch(cmds)).await {
        Ok(resp) => match resp.data {
            EntryAnswer::Batch(answers) if answers.len() == n => {
                let index = resp.log_id.index;
                for (reply, response) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(ForwardReply::Written { index, response }));
                }
            }
            other => {
                let failed = ForwardError::Failed(format!("a batch of {n} writes was answered {other:?}"));
                for reply in replies {
                    let _ = reply.send(Err(failed.clone()));
                }
            }
        },
        // Not written (no longer the leader, shutting down): every caller hears why and may
        // ask again, as it would for a write of its own.
        Err(e) => {
            let e = crate::node::forward_error(&e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One command as its own entry.
async fn write_entry(raft: &KeelsonRaft, cmd: CatalogCommand) -> ForwardResult {
    match raft.client_write(cmd).await {
        Ok(resp) => match resp.data {
            EntryAnswer::One(response) => Ok(ForwardReply::Written {
                index: resp.log_id.index,
                response,
            }),
            other => Err(ForwardError::Failed(format!("a single write was answered {other:?}"))),
        },
        Err(e) => Err(crate::node::forward_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(tag: &str) -> CatalogCommand {
        CatalogCommand::DeleteTag {
            repo: "ns/r".into(),
            tag: tag.into(),
            now_ms: 0,
        }
    }

    fn link(n: u64) -> CatalogCommand {
        CatalogCommand::MountBlob {
            repo: "ns/r".into(),
            digest: format!("sha256:{n:064x}"),
            now_ms: 0,
        }
    }

    fn queue(b: &WriteBatcher, cmds: Vec<(CatalogCommand, u64)>) -> Vec<oneshot::Receiver<ForwardResult>> {
        let mut state = b.state.lock().unwrap();
        state.running = true;
        cmds.into_iter()
            .map(|(cmd, bytes)| {
                let (reply, rx) = oneshot::channel();
                state.queue.push_back(Pending { cmd, bytes, reply });
                rx
            })
            .collect()
    }

    fn sizes(b: &WriteBatcher) -> Vec<usize> {
        std::iter::from_fn(|| b.next_batch().map(|batch| batch.len())).collect()
    }

    #[test]
    fn push_path_writes_share_entries_and_others_go_alone_in_queue_order() {
        let b = WriteBatcher::default();
        let _rx = queue(
            &b,
            vec![
                (link(1), 100),
                (link(2), 100),
                (put("a"), 100),
                (link(3), 100),
                (link(4), 100),
                (link(5), 100),
            ],
        );
        assert_eq!(sizes(&b), vec![2, 1, 3]);
        assert!(
            !b.state.lock().unwrap().running,
            "the writer stops when the queue is empty"
        );
    }

    #[test]
    fn a_batch_stays_within_the_entry_bound_and_the_command_count() {
        let b = WriteBatcher::default();
        let half = MAX_COMMAND_BYTES / 2;
        let _rx = queue(&b, vec![(link(1), half), (link(2), half), (link(3), 10)]);
        assert_eq!(sizes(&b), vec![1, 2]);
        let many: Vec<_> = (0..MAX_BATCH_COMMANDS as u64 * 2 + 1).map(|n| (link(n), 10)).collect();
        let _rx = queue(&b, many);
        assert_eq!(sizes(&b), vec![MAX_BATCH_COMMANDS, MAX_BATCH_COMMANDS, 1]);
    }

    #[test]
    fn only_push_path_commands_are_batchable() {
        assert!(batchable(&link(1)));
        assert!(!batchable(&put("a")));
        assert!(!batchable(&CatalogCommand::DeleteRepo { repo: "ns/r".into() }));
        assert!(batchable(&CatalogCommand::TagIf {
            repo: "ns/r".into(),
            tag: "t".into(),
            expected: None,
            then: Box::new(link(1)),
        }));
        assert!(!batchable(&CatalogCommand::Batch(vec![link(1)])));
    }
}
