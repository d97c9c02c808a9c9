//! Pure tests of the state transition function, the hash chain and the image.

use super::*;

const T0: u64 = 1_700_000_000_000;

fn request(command: Command) -> Request {
    Request { actor: "alice".into(), at_ms: T0, command }
}

/// Applies commands at consecutive indexes after the state's current one.
fn run(state: &mut State, commands: impl IntoIterator<Item = Command>) -> Vec<Result<Outcome, CommandError>> {
    commands
        .into_iter()
        .map(|command| {
            let index = state.applied_index() + 1;
            state.apply(index, &request(command))
        })
        .collect()
}

fn put(document: &str) -> Command {
    Command::PutPolicy { document: document.into(), comment: String::new() }
}

fn mint(id: &str, secret: &str, role: Role, expires_at_ms: Option<u64>) -> Command {
    Command::MintToken {
        id: id.into(),
        role,
        secret_hash: hash_token_secret(secret),
        label: "ci".into(),
        expires_at_ms,
    }
}

fn settings(policy_history_limit: Option<u32>, audit_log_limit: Option<u32>) -> Command {
    Command::UpdateSettings { policy_history_limit, audit_log_limit }
}

fn versions(state: &State) -> Vec<u64> {
    state.policy_versions().map(|policy| policy.version).collect()
}

/// Everything but the applied index and hash, to show a refusal changed nothing else.
fn content(state: &State) -> State {
    let mut copy = state.clone();
    copy.applied_index = 0;
    copy.state_hash = StateHash::default();
    copy
}

#[test]
fn a_new_state_is_empty_at_the_current_schema() {
    let state = State::default();
    assert_eq!(state.schema_version(), SCHEMA_VERSION);
    assert_eq!(state.applied_index(), 0);
    assert_eq!(state.state_hash(), StateHash::default());
    assert!(state.cluster().is_none() && state.active_policy().is_none());
    assert_eq!(state.settings(), Settings { policy_history_limit: 50, audit_log_limit: 1000 });
}

#[test]
fn cluster_identity_is_set_once() {
    let mut state = State::default();
    let results = run(
        &mut state,
        [
            Command::InitCluster { cluster_id: "c-1".into() },
            Command::InitCluster { cluster_id: "c-1".into() },
            Command::InitCluster { cluster_id: "c-2".into() },
            Command::InitCluster { cluster_id: String::new() },
        ],
    );
    assert_eq!(results[0], Ok(Outcome::ClusterInitialized { cluster_id: "c-1".into() }));
    assert_eq!(results[1], Ok(Outcome::ClusterInitialized { cluster_id: "c-1".into() }));
    assert_eq!(results[2], Err(CommandError::ClusterIdMismatch { existing: "c-1".into(), requested: "c-2".into() }));
    assert_eq!(results[3].as_ref().unwrap_err().code(), "invalid_field");
    assert_eq!(
        state.cluster(),
        Some(&ClusterIdentity { cluster_id: "c-1".into(), created_at_ms: T0, lineage: Vec::new() })
    );
    assert_eq!(state.audit_log().count(), 1, "the repeated init changed nothing, so it is not audited");
}

#[test]
fn a_policy_put_stores_a_new_active_version_and_audits_it() {
    let mut state = State::default();
    let results = run(&mut state, [put("{\"a\":1}"), put("{\"b\":2}")]);
    assert_eq!(results[1], Ok(Outcome::PolicyStored { version: 2, evicted: vec![] }));
    let active = state.active_policy().expect("an active policy");
    assert_eq!((active.version, &*active.document), (2, "{\"b\":2}"));
    assert_eq!(active.sha256, Digest::of(b"{\"b\":2}"));
    assert_eq!((active.created_by.as_str(), active.created_at_ms), ("alice", T0));
    let last = state.audit_log().next_back().unwrap();
    assert_eq!((last.index, last.actor.as_str()), (2, "alice"));
    assert!(last.action.starts_with("policy.put version=2 sha256="), "{}", last.action);
}

#[test]
fn an_empty_policy_document_is_refused() {
    let mut state = State::default();
    let before = content(&state);
    let result = run(&mut state, [put("  ")]).remove(0);
    assert_eq!(result, Err(CommandError::invalid("document", "must not be empty")));
    assert_eq!(content(&state), before);
}

#[test]
fn an_earlier_version_can_be_activated_again() {
    let mut state = State::default();
    run(&mut state, [put("one"), put("two")]);
    let result = run(&mut state, [Command::ActivatePolicy { version: 1 }]).remove(0);
    assert_eq!(result, Ok(Outcome::PolicyActivated { version: 1, previous: Some(2) }));
    assert_eq!(&*state.active_policy().unwrap().document, "one");
    assert_eq!(state.audit_log().next_back().unwrap().action, "policy.activate version=1 previous=2");
    assert_eq!(versions(&state), [1, 2], "activation does not create a version");
}

#[test]
fn activating_an_unknown_version_is_refused_and_changes_nothing_but_the_hash() {
    let mut state = State::default();
    run(&mut state, [put("one")]);
    let (before, hash_before) = (content(&state), state.state_hash());
    let result = run(&mut state, [Command::ActivatePolicy { version: 7 }]).remove(0);
    assert_eq!(result, Err(CommandError::UnknownPolicyVersion { version: 7 }));
    assert_eq!(content(&state), before);
    assert_eq!(state.applied_index(), 2);
    assert_ne!(state.state_hash(), hash_before, "a refused command is still a log entry");
}

#[test]
fn history_is_bounded_and_evicts_the_oldest_but_never_the_active_version() {
    let mut state = State::default();
    run(&mut state, [settings(Some(3), None)]);
    let results = run(&mut state, [put("1"), put("2"), put("3"), put("4"), put("5")]);
    assert_eq!(results[3], Ok(Outcome::PolicyStored { version: 4, evicted: vec![1] }));
    assert_eq!(versions(&state), [3, 4, 5]);

    run(&mut state, [Command::ActivatePolicy { version: 3 }]);
    let result = run(&mut state, [settings(Some(2), None)]).remove(0);
    assert_eq!(
        result,
        Ok(Outcome::SettingsUpdated { policy_history_limit: 2, audit_log_limit: 1000, evicted_versions: vec![4] })
    );
    assert_eq!(versions(&state), [3, 5], "the active version 3 survives although it is the oldest");

    let result = run(&mut state, [put("6")]).remove(0);
    assert_eq!(result, Ok(Outcome::PolicyStored { version: 6, evicted: vec![3] }));
    assert_eq!(versions(&state), [5, 6], "version numbers are never reused");
    assert_eq!(
        run(&mut state, [Command::ActivatePolicy { version: 1 }]).remove(0),
        Err(CommandError::UnknownPolicyVersion { version: 1 })
    );
}

#[test]
fn settings_out_of_range_are_refused() {
    let mut state = State::default();
    let before = content(&state);
    let results = run(
        &mut state,
        [
            settings(Some(0), None),
            settings(Some(MAX_POLICY_HISTORY_LIMIT + 1), None),
            settings(None, Some(MIN_AUDIT_LOG_LIMIT - 1)),
            settings(Some(5), Some(MAX_AUDIT_LOG_LIMIT + 1)),
        ],
    );
    let fields: Vec<_> = results
        .iter()
        .map(|result| match result {
            Err(CommandError::InvalidField { field, .. }) => field.as_str(),
            other => panic!("expected a refusal, got {other:?}"),
        })
        .collect();
    assert_eq!(fields, ["policy_history_limit", "policy_history_limit", "audit_log_limit", "audit_log_limit"]);
    assert_eq!(content(&state), before, "a partly invalid update changes nothing");
}

#[test]
fn the_audit_log_is_bounded_and_keeps_the_newest() {
    let mut state = State::default();
    run(&mut state, [settings(None, Some(10))]);
    run(&mut state, (0..15).map(|n| put(&n.to_string())));
    let indexes: Vec<u64> = state.audit_log().map(|entry| entry.index).collect();
    assert_eq!(indexes, (7..=16).collect::<Vec<_>>());
}

#[test]
fn tokens_are_minted_authenticated_expired_and_revoked() {
    let mut state = State::default();
    let expiry = T0 + 60_000;
    let results = run(
        &mut state,
        [mint("ops", "s3cret-admin", Role::Admin, None), mint("dash", "s3cret-read", Role::Readonly, Some(expiry))],
    );
    assert_eq!(results[1], Ok(Outcome::TokenMinted { id: "dash".into() }));

    let admin = state.authenticate(&hash_token_secret("s3cret-admin"), T0).unwrap();
    assert_eq!((admin.id.as_str(), admin.role), ("ops", Role::Admin));
    let reader = state.authenticate(&hash_token_secret("s3cret-read"), expiry - 1).unwrap();
    assert_eq!(reader.role, Role::Readonly);
    assert_eq!(state.authenticate(&hash_token_secret("s3cret-read"), expiry).unwrap_err(), AuthError::Expired);
    assert_eq!(state.authenticate(&hash_token_secret("guess"), T0).unwrap_err(), AuthError::Unknown);

    let result = run(&mut state, [Command::RevokeToken { id: "ops".into() }]).remove(0);
    assert_eq!(result, Ok(Outcome::TokenRevoked { id: "ops".into() }));
    assert_eq!(state.authenticate(&hash_token_secret("s3cret-admin"), T0).unwrap_err(), AuthError::Unknown);
    let actions: Vec<_> = state.audit_log().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, ["token.mint id=ops role=admin", "token.mint id=dash role=readonly", "token.revoke id=ops"]);
}

#[test]
fn bad_token_commands_are_refused() {
    let mut state = State::default();
    run(&mut state, [mint("ops", "one", Role::Admin, None)]);
    let before = content(&state);
    let results = run(
        &mut state,
        [
            mint("ops", "two", Role::Admin, None),
            mint("other", "one", Role::Admin, None),
            mint("late", "three", Role::Admin, Some(T0)),
            mint("", "four", Role::Admin, None),
            mint(&"x".repeat(MAX_ID_LEN + 1), "five", Role::Admin, None),
            Command::RevokeToken { id: "nobody".into() },
        ],
    );
    let codes: Vec<_> = results.iter().map(|result| result.as_ref().unwrap_err().code()).collect();
    assert_eq!(
        codes,
        ["token_exists", "invalid_field", "invalid_field", "invalid_field", "invalid_field", "unknown_token"]
    );
    assert_eq!(content(&state), before);
}

#[test]
fn a_request_without_an_actor_is_refused() {
    let mut state = State::default();
    let result = state.apply(1, &Request { actor: String::new(), at_ms: T0, command: put("x") });
    assert_eq!(result, Err(CommandError::invalid("actor", "must not be empty")));
    assert!(state.active_policy().is_none());
}

fn history() -> Vec<Command> {
    vec![
        Command::InitCluster { cluster_id: "c-1".into() },
        put("one"),
        mint("ops", "secret", Role::Admin, None),
        Command::ActivatePolicy { version: 9 },
        put("two"),
        settings(Some(1), Some(20)),
        Command::ActivatePolicy { version: 2 },
    ]
}

#[test]
fn the_same_entries_give_the_same_hash_at_every_index() {
    let (mut a, mut b) = (State::default(), State::default());
    let mut hashes = Vec::new();
    for (offset, command) in history().into_iter().enumerate() {
        let index = offset as u64 + 1;
        if index == 3 {
            a.apply_blank(index);
            b.apply_blank(index);
            continue;
        }
        assert_eq!(a.apply(index, &request(command.clone())), b.apply(index, &request(command)));
        assert_eq!(a.state_hash(), b.state_hash(), "index {index}");
        hashes.push(a.state_hash());
    }
    assert_eq!(a, b);
    hashes.dedup();
    assert_eq!(hashes.len(), 6, "every entry moves the hash");
}

#[test]
fn a_different_time_actor_or_membership_gives_a_different_hash() {
    let base = {
        let mut state = State::default();
        state.apply(1, &request(put("x"))).unwrap();
        state.state_hash()
    };
    let mut later = State::default();
    later.apply(1, &Request { at_ms: T0 + 1, ..request(put("x")) }).unwrap();
    let mut bob = State::default();
    bob.apply(1, &Request { actor: "bob".into(), ..request(put("x")) }).unwrap();
    assert_ne!(later.state_hash(), base);
    assert_ne!(bob.state_hash(), base);

    let (mut one, mut two) = (State::default(), State::default());
    one.apply_membership(1, b"[[1]]");
    two.apply_membership(1, b"[[1,2]]");
    assert_ne!(one.state_hash(), two.state_hash());
}

#[test]
fn the_image_round_trips_and_holds_no_token_secret() {
    let mut state = State::default();
    run(&mut state, history());
    let image = encode_image(&state);
    assert_eq!(decode_image(&image), Ok(state));
    let text = String::from_utf8(image).unwrap();
    assert!(!text.contains("\"secret\""), "the token secret itself is never stored");
    assert!(text.contains(&hash_token_secret("secret").to_hex()));
}

#[test]
fn a_newer_or_malformed_image_is_refused() {
    let mut value: serde_json::Value = serde_json::from_slice(&encode_image(&State::default())).unwrap();
    value["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
    let too_new = serde_json::to_vec(&value).unwrap();
    assert_eq!(
        decode_image(&too_new),
        Err(ImageError::TooNew { found: SCHEMA_VERSION + 1, supported: SCHEMA_VERSION })
    );

    value["schema_version"] = serde_json::json!(0);
    assert!(matches!(decode_image(&serde_json::to_vec(&value).unwrap()), Err(ImageError::TooOld { found: 0, .. })));

    assert!(
        matches!(decode_image(b"{\"policies\":{}}"), Err(ImageError::Malformed(reason)) if reason.contains("schema_version"))
    );
    assert!(matches!(decode_image(b"not json"), Err(ImageError::Malformed(_))));
    let truncated = &encode_image(&State::default())[..20];
    assert!(matches!(decode_image(truncated), Err(ImageError::Malformed(_))));
}

#[test]
fn the_encoding_of_a_known_history_is_pinned() {
    let mut state = State::default();
    state.apply_membership(0, b"[[[1]],[[1,\"\"]]]");
    state.apply_blank(1);
    for (offset, command) in history().into_iter().enumerate() {
        let index = offset as u64 + 2;
        state.apply(index, &Request { actor: "alice".into(), at_ms: T0 + index, command }).ok();
    }
    // If this changes, logs written by earlier releases replay to different hashes: see the
    // encoding rule in `command.rs` before updating it.
    assert_eq!(state.state_hash().to_hex(), "21e787b6bd5d6c4e953c75e563b7d1b0a0099e31d961b6aea19c7db3766b8832");
}

#[test]
fn at_the_token_limit_expired_tokens_make_room_and_live_ones_do_not() {
    let mut state = State::default();
    let expiry = T0 + 1_000;
    // Full: 10 tokens that expire, the rest that never do.
    let commands = (0..MAX_TOKENS).map(|i| {
        let expires = (i < 10).then_some(expiry);
        mint(&format!("t{i}"), &format!("secret-{i}"), Role::Readonly, expires)
    });
    assert!(run(&mut state, commands).iter().all(Result::is_ok));
    let at = |at_ms, command| {
        let index = state.applied_index() + 1;
        let mut copy = state.clone();
        let result = copy.apply(index, &Request { actor: "alice".into(), at_ms, command });
        (result, copy)
    };

    // Before the expiry nothing can be dropped: refused, nothing changed.
    let (refused, unchanged) = at(expiry - 1, mint("late", "secret-late", Role::Admin, None));
    assert_eq!(refused.unwrap_err(), CommandError::TooManyTokens { limit: MAX_TOKENS });
    assert_eq!(content(&unchanged), content(&state));

    // After it, the expired ones go and the new token fits; the audit log says how many went.
    let (minted, after) = at(expiry, mint("late", "secret-late", Role::Admin, None));
    assert!(minted.is_ok(), "{minted:?}");
    assert_eq!(after.tokens().count(), MAX_TOKENS - 10 + 1);
    assert!(after.tokens().all(|t| t.expires_at_ms.is_none()), "only expired tokens were dropped");
    let last = after.audit_log().last().unwrap();
    assert_eq!(last.action, "token.mint id=late role=admin pruned_expired=10");
}

/// A state image written by the schema-1 release (`tests/fixtures/state-schema-1.json`:
/// two policy versions with version 1 active, two tokens, a cluster identity).
const SCHEMA_1_IMAGE: &str = include_str!("../../tests/fixtures/state-schema-1.json");

#[test]
fn a_schema_1_image_migrates_forward_and_keeps_everything() {
    let state = decode_image(SCHEMA_1_IMAGE.as_bytes()).expect("schema 1 is readable");
    assert_eq!(state.schema_version(), SCHEMA_VERSION);
    assert_eq!(state.applied_index(), 7);
    assert_eq!(state.state_hash().to_hex(), "69fd18f0c9beb706876647e9d74e0204d6a8cb3d5fca008225a7d5e14c2a0e9f");
    let cluster = state.cluster().expect("identity kept");
    assert_eq!(cluster.cluster_id, "c-v1");
    assert_eq!(cluster.created_at_ms, 1_700_000_000_002, "initialized_at_ms became created_at_ms");
    assert!(cluster.lineage.is_empty());
    assert_eq!(versions(&state), vec![1, 2]);
    assert_eq!(state.active_policy().map(|p| p.version), Some(1));
    assert_eq!(state.tokens().map(|t| t.id.as_str()).collect::<Vec<_>>(), vec!["ci", "ops"]);
    assert!(state.authenticate(&hash_token_secret("secret"), T0).is_ok());
    assert_eq!(state.audit_log().count(), 6);
    // What a schema-2 binary writes back is schema 2 and reads back equal.
    let again = decode_image(&encode_image(&state)).unwrap();
    assert_eq!(again, state);
    let written: serde_json::Value = serde_json::from_slice(&encode_image(&state)).unwrap();
    assert_eq!(written["schema_version"], serde_json::json!(SCHEMA_VERSION));
    assert!(written["cluster"].get("initialized_at_ms").is_none());
}

#[test]
fn a_schema_1_image_with_a_broken_cluster_field_is_refused() {
    let mut value: serde_json::Value = serde_json::from_str(SCHEMA_1_IMAGE).unwrap();
    value["cluster"].as_object_mut().unwrap().remove("initialized_at_ms");
    let error = decode_image(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(matches!(&error, ImageError::Malformed(why) if why.contains("initialized_at_ms")), "{error}");
    // A schema-1 state that never had a cluster identity migrates too.
    value["cluster"] = serde_json::Value::Null;
    assert!(decode_image(&serde_json::to_vec(&value).unwrap()).unwrap().cluster().is_none());
}

#[test]
fn a_restored_cluster_gets_a_new_id_and_remembers_its_origin() {
    let mut state = State::default();
    run(&mut state, [Command::InitCluster { cluster_id: "old".into() }, put("one")]);
    let hash = state.state_hash();
    let from = RestoreSource { cluster_id: "old".into(), index: 2, state_hash: hash, snapshot_created_at_ms: T0 - 5 };
    let restore = |cluster_id: &str, from: &RestoreSource| Command::RestoreCluster {
        cluster_id: cluster_id.into(),
        from: from.clone(),
    };
    state.apply_blank(3);
    let outcomes = run(&mut state, [restore("new", &from)]);
    assert_eq!(
        outcomes,
        vec![Ok(Outcome::ClusterRestored { cluster_id: "new".into(), from_cluster_id: "old".into() })]
    );
    let cluster = state.cluster().unwrap();
    assert_eq!(cluster.cluster_id, "new");
    let origin = cluster.descends_from("old").expect("lineage kept");
    assert_eq!((origin.index, origin.state_hash, origin.restored_at_ms), (2, hash, T0));
    assert_eq!(state.audit_log().last().unwrap().action, "cluster.restore id=new from=old index=2");
    assert_eq!(versions(&state), vec![1], "the restored content is untouched");

    // Applying it again, from a foreign cluster, back to an old id, or from the future: refused.
    let before = content(&state);
    let again = run(
        &mut state,
        [
            restore("newer", &from),
            restore("old", &RestoreSource { cluster_id: "new".into(), ..from.clone() }),
            restore("newer", &RestoreSource { cluster_id: "new".into(), index: 99, ..from.clone() }),
        ],
    );
    assert!(matches!(&again[0], Err(CommandError::ClusterIdMismatch { existing, .. }) if existing == "new"));
    assert!(matches!(&again[1], Err(CommandError::InvalidField { field, .. }) if field == "cluster_id"));
    assert!(matches!(&again[2], Err(CommandError::InvalidField { field, .. }) if field == "from.index"));
    assert_eq!(content(&state), before);

    let mut empty = State::default();
    assert!(run(&mut empty, [restore("x", &from)])[0].is_err(), "nothing to restore from");
}

fn put_rollout(expected_revision: u64, plan: serde_json::Value, active_schema: Option<u32>) -> Command {
    Command::PutRollout { expected_revision, plan, active_schema }
}

#[test]
fn a_rollout_is_saved_compare_and_set_on_its_revision() {
    let mut state = State::default();
    let plan = serde_json::json!({ "id": "upgrade-1", "phase": "preflight" });
    let saved = run(&mut state, [put_rollout(0, plan.clone(), None)]);
    assert_eq!(saved[0], Ok(Outcome::RolloutSaved { revision: 1, active_schema: SCHEMA_VERSION }));
    // A writer that read revision 0 lost the race: refused, the stored plan unchanged.
    let before = content(&state);
    let stale = run(&mut state, [put_rollout(0, serde_json::json!({ "id": "other" }), None)]);
    assert_eq!(stale[0], Err(CommandError::RolloutRevisionMismatch { expected: 0, actual: 1 }));
    assert_eq!(content(&state), before);
    assert_eq!(state.rollout().unwrap().plan, plan);
    let next = run(&mut state, [put_rollout(1, serde_json::json!({ "id": "upgrade-1", "phase": "rolling" }), None)]);
    assert_eq!(next[0], Ok(Outcome::RolloutSaved { revision: 2, active_schema: SCHEMA_VERSION }));
}

#[test]
fn a_rollout_must_be_a_bounded_object() {
    let mut state = State::default();
    let refused = run(
        &mut state,
        [
            put_rollout(0, serde_json::json!([1, 2]), None),
            put_rollout(0, serde_json::json!({ "events": "x".repeat(MAX_ROLLOUT_BYTES) }), None),
        ],
    );
    for r in refused {
        assert!(matches!(r, Err(CommandError::InvalidField { .. })), "{r:?}");
    }
    assert!(state.rollout().is_none());
}

#[test]
fn the_active_schema_moves_only_forward_and_the_move_is_audited() {
    let mut state = State::default();
    assert_eq!(state.active_schema(), SCHEMA_VERSION);
    let plan = serde_json::json!({ "id": "u" });
    let back = run(&mut state, [put_rollout(0, plan.clone(), Some(SCHEMA_VERSION - 1))]);
    assert!(matches!(&back[0], Err(CommandError::InvalidField { .. })), "{back:?}");
    assert!(state.rollout().is_none(), "a refused move saves no plan either");
    let forward = run(&mut state, [put_rollout(0, plan.clone(), Some(SCHEMA_VERSION + 1))]);
    assert_eq!(forward[0], Ok(Outcome::RolloutSaved { revision: 1, active_schema: SCHEMA_VERSION + 1 }));
    assert_eq!(state.active_schema(), SCHEMA_VERSION + 1);
    let last = state.audit_log().last().unwrap();
    assert_eq!(last.action, format!("schema.finalize from={SCHEMA_VERSION} to={}", SCHEMA_VERSION + 1));
    // The image carries the plan and the schema (a new node or a restart keeps them).
    let image = decode_image(&encode_image(&state)).unwrap();
    assert_eq!(image.active_schema(), SCHEMA_VERSION + 1);
    assert_eq!(image.rollout(), state.rollout());
}

#[test]
fn the_hash_at_a_recent_index_is_remembered_and_old_ones_are_forgotten() {
    let mut state = State::default();
    let mut hashes = Vec::new();
    for _ in 0..(RECENT_HASHES + 10) {
        let index = state.applied_index() + 1;
        state.apply_blank(index);
        hashes.push((index, state.state_hash()));
    }
    let current = state.applied_index();
    assert_eq!(state.hash_at(current), Some(state.state_hash()));
    let (index, hash) = hashes[hashes.len() - 100];
    assert_eq!(state.hash_at(index), Some(hash));
    assert_eq!(state.hash_at(1), None, "older than the memory");
    assert_eq!(state.hash_at(current + 1), None, "not applied yet");
}
