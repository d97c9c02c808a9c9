//! The serialized image of the whole state (what a Raft snapshot carries), its schema version
//! and the hook that migrates older images forward.

use std::fmt;

use super::State;

/// The schema this binary writes.
///
/// - 1: the first.
/// - 2: the cluster identity's `initialized_at_ms` is called `created_at_ms` (a restored
///   cluster is created, not initialised, at its restore) and it gains `lineage`, the clusters
///   it was restored from.
pub const SCHEMA_VERSION: u32 = 2;
/// The oldest schema this binary can read and migrate forward (design: its own and the
/// previous one).
pub const MIN_READABLE_SCHEMA_VERSION: u32 = SCHEMA_VERSION - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Not JSON, or not the shape of a state image.
    Malformed(String),
    /// Written by a newer release; this binary must not guess what it means.
    TooNew {
        found: u32,
        supported: u32,
    },
    TooOld {
        found: u32,
        oldest_readable: u32,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Malformed(reason) => write!(f, "state image is malformed: {reason}"),
            ImageError::TooNew { found, supported } => write!(
                f,
                "state image has schema version {found}, newer than the {supported} this release supports; \
                 run a newer release"
            ),
            ImageError::TooOld { found, oldest_readable } => {
                write!(f, "state image has schema version {found}; this release reads {oldest_readable} and newer")
            }
        }
    }
}

impl std::error::Error for ImageError {}

pub fn encode_image(state: &State) -> Vec<u8> {
    serde_json::to_vec(state).expect("the state serializes")
}

/// Reads an image of any readable schema and returns the state in the current schema.
pub fn decode_image(bytes: &[u8]) -> Result<State, ImageError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed(e.to_string()))?;
    let found = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| ImageError::Malformed("schema_version is missing".into()))?;
    let found = u32::try_from(found).map_err(|_| ImageError::Malformed("schema_version is out of range".into()))?;
    if found > SCHEMA_VERSION {
        return Err(ImageError::TooNew { found, supported: SCHEMA_VERSION });
    }
    if found < MIN_READABLE_SCHEMA_VERSION {
        return Err(ImageError::TooOld { found, oldest_readable: MIN_READABLE_SCHEMA_VERSION });
    }
    migrate_forward(&mut value, found)?;
    serde_json::from_value(value).map_err(|e| ImageError::Malformed(e.to_string()))
}

/// One migration per schema step: `MIGRATIONS[n - 1]` rewrites schema `n` into `n + 1`.
type Migration = fn(&mut serde_json::Value) -> Result<(), ImageError>;
const MIGRATIONS: &[Migration] = &[schema_1_to_2];

/// Schema 1 -> 2: `cluster.initialized_at_ms` becomes `cluster.created_at_ms`, and
/// `cluster.lineage` starts empty (a schema-1 state was never restored).
fn schema_1_to_2(value: &mut serde_json::Value) -> Result<(), ImageError> {
    let Some(cluster) = value.get_mut("cluster") else {
        return Err(ImageError::Malformed("schema 1 image has no `cluster` field".into()));
    };
    if cluster.is_null() {
        return Ok(());
    }
    let cluster =
        cluster.as_object_mut().ok_or_else(|| ImageError::Malformed("schema 1 `cluster` is not an object".into()))?;
    let created = cluster
        .remove("initialized_at_ms")
        .ok_or_else(|| ImageError::Malformed("schema 1 `cluster.initialized_at_ms` is missing".into()))?;
    cluster.insert("created_at_ms".into(), created);
    cluster.insert("lineage".into(), serde_json::Value::Array(Vec::new()));
    Ok(())
}

/// Rewrites an image of schema `from` into the current schema, one version step at a time.
fn migrate_forward(value: &mut serde_json::Value, from: u32) -> Result<(), ImageError> {
    for step in from..SCHEMA_VERSION {
        let migrate = MIGRATIONS
            .get(step as usize - 1)
            .ok_or_else(|| ImageError::Malformed(format!("no migration from schema version {step}")))?;
        migrate(value)?;
    }
    value["schema_version"] = serde_json::Value::from(SCHEMA_VERSION);
    Ok(())
}
