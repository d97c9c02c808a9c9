//! Typed commands, their outcomes and their errors. There is no generic key-value command:
//! every change the state can undergo is one of these variants.
//!
//! The state hash covers the JSON encoding of requests and outcomes as this binary produces
//! it, and replays re-encode entries written by older releases. So an encoding must never
//! change for existing values: add fields only as `#[serde(default, skip_serializing_if =
//! ...)]` options, add variants rather than reshape them, and never rename. The
//! `the_encoding_of_a_known_history_is_pinned` test fails on any such change.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::hash::{StateHash, TokenHash};

/// One proposed change: who asks, when (milliseconds since the Unix epoch, read by the caller:
/// the state machine has no clock), and what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub actor: String,
    pub at_ms: u64,
    pub command: Command,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Sets the cluster identity once; repeating it with the same id is a no-op.
    InitCluster {
        cluster_id: String,
    },
    /// Gives a state restored from a snapshot its new cluster id (design §7: a restore mints a
    /// new cluster so the old members cannot rejoin by mistake).
    RestoreCluster {
        cluster_id: String,
        from: RestoreSource,
    },
    /// Stores a new policy version (already validated and compiled by the caller) and makes it
    /// the active one.
    PutPolicy {
        document: String,
        comment: String,
    },
    /// Makes a stored version active again (rollback).
    ActivatePolicy {
        version: u64,
    },
    /// Adds an API token; only the hash of its secret is given.
    MintToken {
        id: String,
        role: Role,
        secret_hash: TokenHash,
        label: String,
        expires_at_ms: Option<u64>,
    },
    RevokeToken {
        id: String,
    },
    /// Changes the settings named; `None` leaves a setting as it is.
    UpdateSettings {
        policy_history_limit: Option<u32>,
        audit_log_limit: Option<u32>,
    },
    /// Replaces the rolling-upgrade record (its plan, progress and events, opaque to the
    /// state: `sluice-lifecycle` owns its shape) if the stored one still has
    /// `expected_revision` (0: none stored), so two leaders driving one rollout across a
    /// leader change cannot overwrite each other's progress. `active_schema`, when given,
    /// moves the cluster's active schema (only forward: finalize).
    PutRollout {
        expected_revision: u64,
        plan: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        active_schema: Option<u32>,
    },
}

/// The snapshot a restored state came from, as its manifest says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    pub cluster_id: String,
    pub index: u64,
    pub state_hash: StateHash,
    pub snapshot_created_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and writes.
    Admin,
    /// Reads only.
    Readonly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Readonly => "readonly",
        }
    }
}

/// What an accepted command (or a Raft-internal entry) did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// A blank or membership entry: nothing in the application state changed.
    Internal,
    ClusterInitialized {
        cluster_id: String,
    },
    ClusterRestored {
        cluster_id: String,
        from_cluster_id: String,
    },
    PolicyStored {
        version: u64,
        evicted: Vec<u64>,
    },
    PolicyActivated {
        version: u64,
        previous: Option<u64>,
    },
    TokenMinted {
        id: String,
    },
    TokenRevoked {
        id: String,
    },
    SettingsUpdated {
        policy_history_limit: u32,
        audit_log_limit: u32,
        evicted_versions: Vec<u64>,
    },
    RolloutSaved {
        revision: u64,
        active_schema: u32,
    },
}

/// Why a command was refused. A refused command changes nothing but the state hash (it is a
/// log entry like any other).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CommandError {
    ClusterIdMismatch {
        existing: String,
        requested: String,
    },
    UnknownPolicyVersion {
        version: u64,
    },
    TokenExists {
        id: String,
    },
    UnknownToken {
        id: String,
    },
    TooManyTokens {
        limit: usize,
    },
    /// A field is empty, too long, or out of range.
    InvalidField {
        field: String,
        reason: String,
    },
    /// The rollout record changed since the writer read it.
    RolloutRevisionMismatch {
        expected: u64,
        actual: u64,
    },
}

impl CommandError {
    /// A stable machine-readable code (the API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::ClusterIdMismatch { .. } => "cluster_id_mismatch",
            CommandError::UnknownPolicyVersion { .. } => "unknown_policy_version",
            CommandError::TokenExists { .. } => "token_exists",
            CommandError::UnknownToken { .. } => "unknown_token",
            CommandError::TooManyTokens { .. } => "too_many_tokens",
            CommandError::InvalidField { .. } => "invalid_field",
            CommandError::RolloutRevisionMismatch { .. } => "rollout_revision_mismatch",
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> CommandError {
        CommandError::InvalidField { field: field.to_owned(), reason: reason.into() }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::ClusterIdMismatch { existing, requested } => {
                write!(f, "cluster id is already {existing}; cannot set it to {requested}")
            }
            CommandError::UnknownPolicyVersion { version } => {
                write!(f, "policy version {version} is not in the stored history")
            }
            CommandError::TokenExists { id } => write!(f, "a token with id {id} already exists"),
            CommandError::UnknownToken { id } => write!(f, "no token with id {id}"),
            CommandError::TooManyTokens { limit } => write!(f, "at most {limit} tokens may exist"),
            CommandError::InvalidField { field, reason } => write!(f, "{field}: {reason}"),
            CommandError::RolloutRevisionMismatch { expected, actual } => write!(
                f,
                "the rollout record is at revision {actual}, not {expected}: another writer changed it; read it again"
            ),
        }
    }
}

impl std::error::Error for CommandError {}
