//! Applying webhook commands, and queueing events: the changes an origin is attached to
//! (`Attributed`), retention deletions and the pull events nodes send all end in
//! [`Applier::emit`], which appends the event to every subscribed endpoint's queue of its
//! tenancy in the same transaction as the change.

use crate::apply::{rejected, Applied, Applier, Done};
use crate::command::{CatalogCommand, CatalogResponse, Rejection};
use crate::keys::{join, CF_LIFECYCLE, CF_MANIFESTS, CF_TAGS};
use crate::lifecycle::tenancy_of;
use crate::txn::TxnError;
use crate::webhooks::*;

/// What an attributed change will announce, worked out before it is applied.
#[derive(Clone)]
struct Planned {
    kind: EventKind,
    repo: String,
    digest: String,
    media_type: String,
    size: u64,
    tag: Option<String>,
}

/// A push's events: `push`, and `tag` when it named a tag.
fn pushed(repo: &str, digest: &str, manifest: &crate::command::ManifestRecord, tag: Option<&str>) -> Vec<Planned> {
    let push = Planned {
        kind: EventKind::Push,
        repo: repo.to_string(),
        digest: digest.to_string(),
        media_type: manifest.media_type.clone(),
        size: manifest.body.len() as u64,
        tag: tag.map(str::to_string),
    };
    match tag {
        Some(_) => {
            let tagged = Planned {
                kind: EventKind::Tag,
                ..push.clone()
            };
            vec![push, tagged]
        }
        None => vec![push],
    }
}

impl Applier<'_> {
    pub(crate) fn webhook_command(&mut self, cmd: WebhookCommand) -> Applied {
        match cmd {
            WebhookCommand::Put { ns, name, endpoint } => {
                if !valid_name(&name) {
                    return rejected(Rejection::Invalid(format!("{name:?} is not a webhook name")));
                }
                if let Some(why) = endpoint.invalid(&ns) {
                    return rejected(Rejection::Invalid(why));
                }
                let key = endpoint_key(&ns, &name);
                if !self.tx.exists(CF_LIFECYCLE, &key)?
                    && self.tx.scan_keys(CF_LIFECYCLE, &endpoints_prefix(&ns))?.len() >= MAX_ENDPOINTS_PER_TENANCY
                {
                    return rejected(Rejection::LimitExceeded(format!(
                        "tenancy {ns} has {MAX_ENDPOINTS_PER_TENANCY} webhooks, the most it may have"
                    )));
                }
                self.tx.put(CF_LIFECYCLE, &key, &endpoint)?;
                // A replaced endpoint (its receiver fixed, say) is tried again at once.
                if let Some(mut state) = self.tx.get::<EndpointState>(CF_LIFECYCLE, &state_key(&ns, &name))? {
                    state.failures = 0;
                    state.next_attempt_ms = 0;
                    self.tx.put(CF_LIFECYCLE, &state_key(&ns, &name), &state)?;
                }
                Ok(Done)
            }
            WebhookCommand::Delete { ns, name } => {
                let key = endpoint_key(&ns, &name);
                if !self.tx.exists(CF_LIFECYCLE, &key)? {
                    return rejected(Rejection::Invalid(format!("no webhook {name} in {ns}")));
                }
                self.tx.delete(CF_LIFECYCLE, &key)?;
                self.tx.delete(CF_LIFECYCLE, &state_key(&ns, &name))?;
                // At most MAX_QUEUED_PER_ENDPOINT keys.
                for queued in self.tx.scan_keys(CF_LIFECYCLE, &queue_prefix(&ns, &name))? {
                    self.tx.delete(CF_LIFECYCLE, &queued)?;
                }
                Ok(Done)
            }
            WebhookCommand::Ping { ns, name, origin } => {
                if !self.tx.exists(CF_LIFECYCLE, &endpoint_key(&ns, &name))? {
                    return rejected(Rejection::Invalid(format!("no webhook {name} in {ns}")));
                }
                let event = WebhookEvent {
                    id: self.next_event_id()?,
                    kind: EventKind::Ping,
                    repository: String::new(),
                    digest: String::new(),
                    media_type: String::new(),
                    size: 0,
                    tag: None,
                    origin,
                };
                self.enqueue(&ns, &name, &event)?;
                Ok(Done)
            }
            WebhookCommand::RecordPulls { node, seq, events } => {
                if events.len() > MAX_EVENTS_PER_ENTRY {
                    return rejected(Rejection::Invalid(format!(
                        "{} pull events in one entry, at most {MAX_EVENTS_PER_ENTRY}",
                        events.len()
                    )));
                }
                let seq_key = seq_key(node);
                let last: u64 = self.tx.get(CF_LIFECYCLE, &seq_key)?.unwrap_or(0);
                if seq <= last {
                    return Ok(Done); // a retry of a batch already applied
                }
                self.tx.put(CF_LIFECYCLE, &seq_key, &seq)?;
                for event in events {
                    if event.kind == EventKind::Pull {
                        self.emit(event)?;
                    }
                }
                Ok(Done)
            }
            WebhookCommand::Delivered {
                ns,
                name,
                through_seq,
                attempt,
            } => {
                let Some(mut state) = self.endpoint_state(&ns, &name)? else {
                    return Ok(Done); // deleted meanwhile
                };
                if through_seq >= state.next_seq {
                    return rejected(Rejection::Invalid(format!(
                        "event {through_seq} of webhook {name} was never queued"
                    )));
                }
                // An acknowledgement another leader already committed deletes nothing more.
                for seq in state.head_seq..=through_seq {
                    self.tx.delete(CF_LIFECYCLE, &queue_key(&ns, &name, seq))?;
                }
                let newly = (through_seq + 1).saturating_sub(state.head_seq);
                state.head_seq = state.head_seq.max(through_seq + 1);
                state.delivered = state.delivered.saturating_add(newly);
                state.failures = 0;
                state.next_attempt_ms = 0;
                state.remember(attempt);
                self.tx.put(CF_LIFECYCLE, &state_key(&ns, &name), &state)?;
                Ok(Done)
            }
            WebhookCommand::Failed {
                ns,
                name,
                attempt,
                next_attempt_ms,
            } => {
                let Some(mut state) = self.endpoint_state(&ns, &name)? else {
                    return Ok(Done);
                };
                state.failures = state.failures.saturating_add(1);
                state.next_attempt_ms = next_attempt_ms;
                state.remember(attempt);
                self.tx.put(CF_LIFECYCLE, &state_key(&ns, &name), &state)?;
                Ok(Done)
            }
            WebhookCommand::ResealSecrets { secrets } => {
                for s in secrets {
                    let key = endpoint_key(&s.ns, &s.name);
                    let Some(mut endpoint) = self.tx.get::<WebhookEndpoint>(CF_LIFECYCLE, &key)? else {
                        continue;
                    };
                    if crate::identity::stored_sha256(&endpoint.secret) == s.was_sha256 {
                        endpoint.secret = s.sealed;
                        self.tx.put(CF_LIFECYCLE, &key, &endpoint)?;
                    }
                }
                Ok(Done)
            }
        }
    }

    /// Applies a manifest or tag change made through the API, then queues its events.
    pub(crate) fn attributed(&mut self, origin: EventOrigin, then: CatalogCommand) -> Applied {
        let planned = match self.plan_events(&then)? {
            Ok(planned) => planned,
            Err(r) => return rejected(r),
        };
        let answer = self.apply(then)?;
        if answer == CatalogResponse::Applied {
            for p in planned {
                let event = WebhookEvent {
                    id: 0,
                    kind: p.kind,
                    repository: p.repo,
                    digest: p.digest,
                    media_type: p.media_type,
                    size: p.size,
                    tag: p.tag,
                    origin: origin.clone(),
                };
                self.emit(event)?;
            }
        }
        Ok(answer)
    }

    fn plan_events(&self, then: &CatalogCommand) -> Result<Result<Vec<Planned>, Rejection>, TxnError> {
        let inner = match then {
            CatalogCommand::TagIf { then, .. } => then.as_ref(),
            other => other,
        };
        Ok(Ok(match inner {
            CatalogCommand::PutManifest {
                repo,
                digest,
                manifest,
                tag,
                ..
            } => pushed(repo, digest, manifest, tag.as_deref()),
            CatalogCommand::PutManifestTags {
                repo,
                digest,
                manifest,
                tags,
                ..
            } => tags
                .iter()
                .flat_map(|tag| pushed(repo, digest, manifest, Some(tag)))
                .collect(),
            CatalogCommand::DeleteManifest { repo, digest } => {
                let (media_type, size) = self.manifest_facts(repo, digest)?;
                vec![Planned {
                    kind: EventKind::Delete,
                    repo: repo.clone(),
                    digest: digest.clone(),
                    media_type,
                    size,
                    tag: None,
                }]
            }
            CatalogCommand::DeleteTag { repo, tag, .. } => {
                let digest = self
                    .tx
                    .get_raw(CF_TAGS, &join(&[repo, tag]))?
                    .map(|d| String::from_utf8_lossy(&d).into_owned())
                    .unwrap_or_default();
                let (media_type, size) = self.manifest_facts(repo, &digest)?;
                vec![Planned {
                    kind: EventKind::Delete,
                    repo: repo.clone(),
                    digest,
                    media_type,
                    size,
                    tag: Some(tag.clone()),
                }]
            }
            _ => {
                return Ok(Err(Rejection::Invalid(
                    "only manifest pushes and manifest or tag deletions carry an origin".into(),
                )))
            }
        }))
    }

    /// A stored manifest's media type and size (empty and 0 when it is not stored).
    pub(crate) fn manifest_facts(&self, repo: &str, digest: &str) -> Result<(String, u64), TxnError> {
        Ok(self
            .tx
            .get::<crate::command::ManifestRecord>(CF_MANIFESTS, &join(&[repo, digest]))?
            .map(|m| (m.media_type, m.body.len() as u64))
            .unwrap_or_default())
    }

    /// Queues `event` (its id given here) for every endpoint of its repository's tenancy that
    /// wants it. Costs one seek when the tenancy has no endpoints.
    pub(crate) fn emit(&mut self, mut event: WebhookEvent) -> Result<(), TxnError> {
        let ns = tenancy_of(&event.repository).to_string();
        let prefix = endpoints_prefix(&ns);
        let mut targets = Vec::new();
        for (key, value) in self.tx.scan_committed(CF_LIFECYCLE, &prefix)? {
            let endpoint: WebhookEndpoint = bincode::deserialize(&value)?;
            if endpoint.wants(event.kind, &event.repository) {
                targets.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        event.id = self.next_event_id()?;
        let event = event.bounded();
        for name in targets {
            self.enqueue(&ns, &name, &event)?;
        }
        Ok(())
    }

    fn next_event_id(&mut self) -> Result<u64, TxnError> {
        let id = self.tx.get::<u64>(CF_LIFECYCLE, LAST_ID_KEY)?.unwrap_or(0) + 1;
        self.tx.put(CF_LIFECYCLE, LAST_ID_KEY, &id)?;
        Ok(id)
    }

    /// Appends to one endpoint's queue, dropping its oldest event when it is full.
    fn enqueue(&mut self, ns: &str, name: &str, event: &WebhookEvent) -> Result<(), TxnError> {
        let mut state = self.endpoint_state(ns, name)?.unwrap_or_default();
        self.tx.put(CF_LIFECYCLE, &queue_key(ns, name, state.next_seq), event)?;
        state.next_seq += 1;
        if state.queued() > MAX_QUEUED_PER_ENDPOINT {
            self.tx.delete(CF_LIFECYCLE, &queue_key(ns, name, state.head_seq))?;
            state.head_seq += 1;
            state.dropped = state.dropped.saturating_add(1);
        }
        self.tx.put(CF_LIFECYCLE, &state_key(ns, name), &state)
    }

    fn endpoint_state(&self, ns: &str, name: &str) -> Result<Option<EndpointState>, TxnError> {
        if !self.tx.exists(CF_LIFECYCLE, &endpoint_key(ns, name))? {
            return Ok(None);
        }
        Ok(Some(
            self.tx
                .get::<EndpointState>(CF_LIFECYCLE, &state_key(ns, name))?
                .unwrap_or_default(),
        ))
    }
}
