//! The replicated state and its pure transition function. No I/O, no clock, no Raft: the
//! storage layer feeds log entries in index order and keeps what `apply` returns.

mod command;
mod hash;
mod image;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use command::{Command, CommandError, Outcome, Request, RestoreSource, Role};
use hash::EntryKind;
pub use hash::{hash_token_secret, Digest, StateHash, TokenHash};
pub use image::{decode_image, encode_image, ImageError, MIN_READABLE_SCHEMA_VERSION, SCHEMA_VERSION};

/// Limits that keep every part of the state bounded.
pub const MAX_POLICY_HISTORY_LIMIT: u32 = 10_000;
pub const MAX_AUDIT_LOG_LIMIT: u32 = 100_000;
pub const MIN_AUDIT_LOG_LIMIT: u32 = 10;
pub const MAX_TOKENS: usize = 10_000;
pub const MAX_ID_LEN: usize = 128;
pub const MAX_LABEL_LEN: usize = 256;
pub const MAX_ACTOR_LEN: usize = 256;

/// The cluster this state belongs to. Schema 2 renamed `initialized_at_ms` to
/// `created_at_ms` and added `lineage` (see `image.rs` for the migration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    pub cluster_id: String,
    pub created_at_ms: u64,
    /// The clusters this state was restored from, oldest first: a restore mints a new
    /// cluster id, and the old one is remembered so its members are told why they cannot join.
    pub lineage: Vec<RestoreOrigin>,
}

/// Where a restored cluster's state came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOrigin {
    pub cluster_id: String,
    /// The applied index and state hash of the snapshot restored (equal to its manifest's).
    pub index: u64,
    pub state_hash: StateHash,
    pub snapshot_created_at_ms: u64,
    pub restored_at_ms: u64,
}

impl ClusterIdentity {
    /// Whether `cluster_id` is an earlier identity of this cluster (before a restore).
    pub fn descends_from(&self, cluster_id: &str) -> Option<&RestoreOrigin> {
        self.lineage.iter().find(|origin| origin.cluster_id == cluster_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: u64,
    /// The policy JSON exactly as the caller validated it.
    pub document: Arc<str>,
    /// SHA-256 of `document`.
    pub sha256: Digest,
    pub comment: String,
    pub created_at_ms: u64,
    pub created_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub role: Role,
    pub secret_hash: TokenHash,
    pub label: String,
    pub created_at_ms: u64,
    pub created_by: String,
    pub expires_at_ms: Option<u64>,
}

impl Token {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|expiry| now_ms >= expiry)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// How many policy versions are kept (the active one is never evicted).
    pub policy_history_limit: u32,
    /// How many audit entries are kept.
    pub audit_log_limit: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { policy_history_limit: 50, audit_log_limit: 1000 }
    }
}

/// One change, as the audit log remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub index: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
}

/// Why a presented token is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    Unknown,
    Expired,
}

/// The whole replicated state at `applied_index`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    schema_version: u32,
    applied_index: u64,
    state_hash: StateHash,
    cluster: Option<ClusterIdentity>,
    policies: BTreeMap<u64, PolicyVersion>,
    active_policy: Option<u64>,
    /// Version numbers are never reused, even after eviction.
    next_policy_version: u64,
    tokens: BTreeMap<String, Token>,
    settings: Settings,
    audit: VecDeque<AuditEntry>,
    /// The rolling-upgrade record, if a rollout was ever started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollout: Option<Rollout>,
    /// The schema the cluster writes in (design §7: it moves forward only at an upgrade's
    /// finalize); `None`: this binary's [`SCHEMA_VERSION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_schema: Option<u32>,
    /// The hashes of the last entries applied here: not state, a memory of this node's, so a
    /// leader can compare a follower's hash at the follower's index with its own there.
    #[serde(skip)]
    recent: RecentHashes,
}

/// How many (index, hash) pairs [`State::hash_at`] remembers.
pub const RECENT_HASHES: usize = 4096;

/// A bounded memory of recent hashes; equal for every state (it is not part of the state).
#[derive(Clone, Debug, Default)]
struct RecentHashes(VecDeque<(u64, StateHash)>);

impl PartialEq for RecentHashes {
    fn eq(&self, _: &RecentHashes) -> bool {
        true
    }
}

impl Eq for RecentHashes {}

/// The stored rolling-upgrade record: an opaque plan and the revision guarding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub revision: u64,
    pub plan: serde_json::Value,
}

/// The largest rollout record accepted (its event log is bounded by its owner).
pub const MAX_ROLLOUT_BYTES: usize = 512 * 1024;

impl Default for State {
    fn default() -> State {
        State {
            schema_version: SCHEMA_VERSION,
            applied_index: 0,
            state_hash: StateHash::default(),
            cluster: None,
            policies: BTreeMap::new(),
            active_policy: None,
            next_policy_version: 1,
            tokens: BTreeMap::new(),
            settings: Settings::default(),
            audit: VecDeque::new(),
            rollout: None,
            active_schema: None,
            recent: RecentHashes::default(),
        }
    }
}

impl State {
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The log index of the last entry applied (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn state_hash(&self) -> StateHash {
        self.state_hash
    }

    pub fn cluster(&self) -> Option<&ClusterIdentity> {
        self.cluster.as_ref()
    }

    pub fn active_policy(&self) -> Option<&PolicyVersion> {
        self.active_policy.and_then(|version| self.policies.get(&version))
    }

    pub fn policy(&self, version: u64) -> Option<&PolicyVersion> {
        self.policies.get(&version)
    }

    /// Stored versions, oldest first.
    pub fn policy_versions(&self) -> impl DoubleEndedIterator<Item = &PolicyVersion> {
        self.policies.values()
    }

    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.values()
    }

    pub fn token(&self, id: &str) -> Option<&Token> {
        self.tokens.get(id)
    }

    /// Finds the token whose secret hashes to `secret_hash`. Every stored hash is compared in
    /// constant time, so the answer's timing does not tell how close a guess was.
    pub fn authenticate(&self, secret_hash: &TokenHash, now_ms: u64) -> Result<&Token, AuthError> {
        let mut found = None;
        for token in self.tokens.values() {
            if token.secret_hash.constant_time_eq(secret_hash) {
                found = Some(token);
            }
        }
        match found {
            None => Err(AuthError::Unknown),
            Some(token) if token.is_expired(now_ms) => Err(AuthError::Expired),
            Some(token) => Ok(token),
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }

    /// The schema the cluster writes in: moved forward only by an upgrade's finalize.
    pub fn active_schema(&self) -> u32 {
        self.active_schema.unwrap_or(SCHEMA_VERSION)
    }

    /// The audit log, oldest first.
    pub fn audit_log(&self) -> impl DoubleEndedIterator<Item = &AuditEntry> {
        self.audit.iter()
    }

    /// Applies a command entry at log `index`. Refusals are deterministic outcomes, not
    /// failures: they leave the state unchanged except for the applied index and hash.
    pub fn apply(&mut self, index: u64, request: &Request) -> Result<Outcome, CommandError> {
        let result = self.execute(index, request);
        let entry = serde_json::to_vec(request).expect("requests serialize");
        let outcome = serde_json::to_vec(&result).expect("outcomes serialize");
        self.advance(index, EntryKind::Command, &entry, &outcome);
        result
    }

    /// Applies a blank entry (a new leader's first entry).
    pub fn apply_blank(&mut self, index: u64) {
        self.advance(index, EntryKind::Blank, &[], &[]);
    }

    /// Applies a membership entry, given in a canonical encoding chosen by the caller.
    pub fn apply_membership(&mut self, index: u64, canonical_membership: &[u8]) {
        self.advance(index, EntryKind::Membership, canonical_membership, &[]);
    }

    fn advance(&mut self, index: u64, kind: EntryKind, entry: &[u8], outcome: &[u8]) {
        self.state_hash = hash::chain(&self.state_hash, index, kind, entry, outcome);
        self.applied_index = index;
        if self.recent.0.len() == RECENT_HASHES {
            self.recent.0.pop_front();
        }
        self.recent.0.push_back((index, self.state_hash));
    }

    /// The state hash right after entry `index`, if this node applied it recently (or it is
    /// the current index).
    pub fn hash_at(&self, index: u64) -> Option<StateHash> {
        if index == self.applied_index {
            return Some(self.state_hash);
        }
        let recent = &self.recent.0;
        let at = recent.binary_search_by_key(&index, |(i, _)| *i).ok()?;
        Some(recent[at].1)
    }

    fn execute(&mut self, index: u64, request: &Request) -> Result<Outcome, CommandError> {
        check_text("actor", &request.actor, MAX_ACTOR_LEN)?;
        let (outcome, action) = match &request.command {
            Command::InitCluster { cluster_id } => self.init_cluster(cluster_id, request.at_ms)?,
            Command::RestoreCluster { cluster_id, from } => self.restore_cluster(cluster_id, from, request.at_ms)?,
            Command::PutPolicy { document, comment } => self.put_policy(document, comment, request)?,
            Command::ActivatePolicy { version } => self.activate_policy(*version)?,
            Command::MintToken { id, role, secret_hash, label, expires_at_ms } => {
                let token = Token {
                    id: id.clone(),
                    role: *role,
                    secret_hash: *secret_hash,
                    label: label.clone(),
                    created_at_ms: request.at_ms,
                    created_by: request.actor.clone(),
                    expires_at_ms: *expires_at_ms,
                };
                self.mint_token(token)?
            }
            Command::RevokeToken { id } => match self.tokens.remove(id) {
                Some(_) => (Outcome::TokenRevoked { id: id.clone() }, Some(format!("token.revoke id={id}"))),
                None => return Err(CommandError::UnknownToken { id: id.clone() }),
            },
            Command::UpdateSettings { policy_history_limit, audit_log_limit } => {
                self.update_settings(*policy_history_limit, *audit_log_limit)?
            }
            Command::PutRollout { expected_revision, plan, active_schema } => {
                self.put_rollout(*expected_revision, plan, *active_schema)?
            }
        };
        if let Some(action) = action {
            self.record(AuditEntry { index, at_ms: request.at_ms, actor: request.actor.clone(), action });
        }
        Ok(outcome)
    }

    fn put_rollout(
        &mut self,
        expected_revision: u64,
        plan: &serde_json::Value,
        active_schema: Option<u32>,
    ) -> Result<(Outcome, Option<String>), CommandError> {
        let actual = self.rollout.as_ref().map_or(0, |r| r.revision);
        if actual != expected_revision {
            return Err(CommandError::RolloutRevisionMismatch { expected: expected_revision, actual });
        }
        if !plan.is_object() {
            return Err(CommandError::invalid("plan", "must be a JSON object"));
        }
        let size = serde_json::to_vec(plan).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_ROLLOUT_BYTES {
            return Err(CommandError::invalid("plan", format!("is {size} bytes; at most {MAX_ROLLOUT_BYTES}")));
        }
        let mut action = None;
        if let Some(schema) = active_schema {
            let current = self.active_schema();
            if schema < current {
                return Err(CommandError::invalid(
                    "active_schema",
                    format!("the active schema moves only forward (it is {current}, asked {schema})"),
                ));
            }
            if schema != current {
                action = Some(format!("schema.finalize from={current} to={schema}"));
            }
            self.active_schema = Some(schema);
        }
        let revision = actual + 1;
        self.rollout = Some(Rollout { revision, plan: plan.clone() });
        Ok((Outcome::RolloutSaved { revision, active_schema: self.active_schema() }, action))
    }

    fn init_cluster(&mut self, cluster_id: &str, at_ms: u64) -> Result<(Outcome, Option<String>), CommandError> {
        check_text("cluster_id", cluster_id, MAX_ID_LEN)?;
        let outcome = Outcome::ClusterInitialized { cluster_id: cluster_id.to_owned() };
        match &self.cluster {
            Some(existing) if existing.cluster_id == cluster_id => Ok((outcome, None)),
            Some(existing) => Err(CommandError::ClusterIdMismatch {
                existing: existing.cluster_id.clone(),
                requested: cluster_id.to_owned(),
            }),
            None => {
                self.cluster = Some(ClusterIdentity {
                    cluster_id: cluster_id.to_owned(),
                    created_at_ms: at_ms,
                    lineage: Vec::new(),
                });
                Ok((outcome, Some(format!("cluster.init id={cluster_id}"))))
            }
        }
    }

    /// Renames a restored cluster: the first entry a restored node writes. It must name the
    /// cluster the state came from, so it cannot be applied twice or to another cluster.
    fn restore_cluster(
        &mut self,
        cluster_id: &str,
        from: &RestoreSource,
        at_ms: u64,
    ) -> Result<(Outcome, Option<String>), CommandError> {
        check_text("cluster_id", cluster_id, MAX_ID_LEN)?;
        let Some(existing) = &mut self.cluster else {
            return Err(CommandError::invalid("from.cluster_id", "the state has no cluster identity to restore from"));
        };
        if existing.cluster_id != from.cluster_id {
            return Err(CommandError::ClusterIdMismatch {
                existing: existing.cluster_id.clone(),
                requested: from.cluster_id.clone(),
            });
        }
        if cluster_id == existing.cluster_id || existing.descends_from(cluster_id).is_some() {
            return Err(CommandError::invalid("cluster_id", "a restored cluster needs an id it never had"));
        }
        if from.index > self.applied_index {
            return Err(CommandError::invalid("from.index", "must be an index this state has already applied"));
        }
        existing.lineage.push(RestoreOrigin {
            cluster_id: from.cluster_id.clone(),
            index: from.index,
            state_hash: from.state_hash,
            snapshot_created_at_ms: from.snapshot_created_at_ms,
            restored_at_ms: at_ms,
        });
        let old = std::mem::replace(&mut existing.cluster_id, cluster_id.to_owned());
        existing.created_at_ms = at_ms;
        let action = format!("cluster.restore id={cluster_id} from={old} index={}", from.index);
        Ok((Outcome::ClusterRestored { cluster_id: cluster_id.to_owned(), from_cluster_id: old }, Some(action)))
    }

    fn put_policy(
        &mut self,
        document: &str,
        comment: &str,
        request: &Request,
    ) -> Result<(Outcome, Option<String>), CommandError> {
        if document.trim().is_empty() {
            return Err(CommandError::invalid("document", "must not be empty"));
        }
        if comment.len() > MAX_LABEL_LEN {
            return Err(CommandError::invalid("comment", format!("longer than {MAX_LABEL_LEN} bytes")));
        }
        let version = self.next_policy_version;
        self.next_policy_version += 1;
        let sha256 = Digest::of(document.as_bytes());
        self.policies.insert(
            version,
            PolicyVersion {
                version,
                document: Arc::from(document),
                sha256,
                comment: comment.to_owned(),
                created_at_ms: request.at_ms,
                created_by: request.actor.clone(),
            },
        );
        self.active_policy = Some(version);
        let evicted = self.evict_policies();
        let action = format!("policy.put version={version} sha256={}", &sha256.to_hex()[..16]);
        Ok((Outcome::PolicyStored { version, evicted }, Some(action)))
    }

    fn activate_policy(&mut self, version: u64) -> Result<(Outcome, Option<String>), CommandError> {
        if !self.policies.contains_key(&version) {
            return Err(CommandError::UnknownPolicyVersion { version });
        }
        let previous = self.active_policy.replace(version);
        let action = match previous {
            Some(previous) if previous == version => None,
            Some(previous) => Some(format!("policy.activate version={version} previous={previous}")),
            None => Some(format!("policy.activate version={version}")),
        };
        Ok((Outcome::PolicyActivated { version, previous }, action))
    }

    fn mint_token(&mut self, token: Token) -> Result<(Outcome, Option<String>), CommandError> {
        check_text("id", &token.id, MAX_ID_LEN)?;
        if token.label.len() > MAX_LABEL_LEN {
            return Err(CommandError::invalid("label", format!("longer than {MAX_LABEL_LEN} bytes")));
        }
        if token.expires_at_ms.is_some_and(|expiry| expiry <= token.created_at_ms) {
            return Err(CommandError::invalid("expires_at_ms", "must be later than the request time"));
        }
        if self.tokens.contains_key(&token.id) {
            return Err(CommandError::TokenExists { id: token.id });
        }
        if self.tokens.values().any(|existing| existing.secret_hash == token.secret_hash) {
            return Err(CommandError::invalid("secret_hash", "another token has the same secret"));
        }
        // At the limit, tokens that have expired by this request's time make room. The time is
        // part of the replicated request, so every replica prunes the same tokens.
        let mut pruned = 0;
        if self.tokens.len() >= MAX_TOKENS {
            let before = self.tokens.len();
            self.tokens.retain(|_, existing| !existing.is_expired(token.created_at_ms));
            pruned = before - self.tokens.len();
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(CommandError::TooManyTokens { limit: MAX_TOKENS });
        }
        let mut action = format!("token.mint id={} role={}", token.id, token.role.as_str());
        if pruned > 0 {
            action.push_str(&format!(" pruned_expired={pruned}"));
        }
        let outcome = Outcome::TokenMinted { id: token.id.clone() };
        self.tokens.insert(token.id.clone(), token);
        Ok((outcome, Some(action)))
    }

    fn update_settings(
        &mut self,
        policy_history_limit: Option<u32>,
        audit_log_limit: Option<u32>,
    ) -> Result<(Outcome, Option<String>), CommandError> {
        if let Some(limit) = policy_history_limit {
            if !(1..=MAX_POLICY_HISTORY_LIMIT).contains(&limit) {
                return Err(CommandError::invalid(
                    "policy_history_limit",
                    format!("must be between 1 and {MAX_POLICY_HISTORY_LIMIT}"),
                ));
            }
        }
        if let Some(limit) = audit_log_limit {
            if !(MIN_AUDIT_LOG_LIMIT..=MAX_AUDIT_LOG_LIMIT).contains(&limit) {
                return Err(CommandError::invalid(
                    "audit_log_limit",
                    format!("must be between {MIN_AUDIT_LOG_LIMIT} and {MAX_AUDIT_LOG_LIMIT}"),
                ));
            }
        }
        let mut changes = Vec::new();
        if let Some(limit) = policy_history_limit {
            self.settings.policy_history_limit = limit;
            changes.push(format!("policy_history_limit={limit}"));
        }
        if let Some(limit) = audit_log_limit {
            self.settings.audit_log_limit = limit;
            changes.push(format!("audit_log_limit={limit}"));
        }
        let evicted_versions = self.evict_policies();
        self.trim_audit();
        let outcome = Outcome::SettingsUpdated {
            policy_history_limit: self.settings.policy_history_limit,
            audit_log_limit: self.settings.audit_log_limit,
            evicted_versions,
        };
        let action = (!changes.is_empty()).then(|| format!("settings.update {}", changes.join(" ")));
        Ok((outcome, action))
    }

    /// Drops the oldest versions beyond the history limit, never the active one.
    fn evict_policies(&mut self) -> Vec<u64> {
        let limit = self.settings.policy_history_limit as usize;
        let mut evicted = Vec::new();
        while self.policies.len() > limit {
            let oldest = self.policies.keys().copied().find(|version| Some(*version) != self.active_policy);
            let Some(oldest) = oldest else { break };
            self.policies.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    fn record(&mut self, entry: AuditEntry) {
        self.audit.push_back(entry);
        self.trim_audit();
    }

    fn trim_audit(&mut self) {
        while self.audit.len() > self.settings.audit_log_limit as usize {
            self.audit.pop_front();
        }
    }
}

fn check_text(field: &str, value: &str, max_len: usize) -> Result<(), CommandError> {
    if value.is_empty() {
        return Err(CommandError::invalid(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(CommandError::invalid(field, format!("longer than {max_len} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(CommandError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}
