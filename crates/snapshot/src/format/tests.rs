use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::manifest::{LogPosition, MemberAddress, Membership};

fn manifest() -> Manifest {
    Manifest {
        format_version: 0,
        cluster_id: "c0ffee".into(),
        node_id: 7,
        schema_version: 2,
        release_version: "0.1.0".into(),
        last_applied: LogPosition { term: 3, leader_node_id: 7, index: 42 },
        membership: Membership {
            voters: vec![7, 8],
            learners: vec![],
            nodes: vec![MemberAddress { id: 7, addr: "10.0.0.7:9600".into() }],
        },
        state_hash: "ab".repeat(32),
        created_at_ms: 1_733_000_000_000,
        sections: vec![],
        state_bytes: 0,
        secrets: None,
    }
}

fn secrets() -> Secrets {
    Secrets { node_id: 7, files: BTreeMap::from([("bootstrap-token".to_owned(), "t0ken\n".to_owned())]) }
}

fn plain() -> Vec<u8> {
    write(manifest(), br#"{"state":"image"}"#, None).unwrap()
}

fn sealed(passphrase: &[u8]) -> Vec<u8> {
    let secrets = secrets();
    let input = SecretsInput { secrets: &secrets, passphrase };
    write_with_kdf(manifest(), br#"{"state":"image"}"#, Some(input), KdfParams::MIN).unwrap()
}

/// Recomputes the trailer after a deliberate edit, so only the intended check can fail.
fn reseal_trailer(bytes: &mut [u8]) {
    let n = bytes.len() - 32;
    let digest = sha256(&bytes[..n]);
    bytes[n..].copy_from_slice(&digest);
}

#[test]
fn a_snapshot_round_trips_with_and_without_secrets() {
    let bytes = plain();
    let file = read(&bytes).unwrap();
    assert_eq!(file.state, br#"{"state":"image"}"#);
    assert_eq!(file.manifest.cluster_id, "c0ffee");
    assert_eq!(file.manifest.last_applied, LogPosition { term: 3, leader_node_id: 7, index: 42 });
    assert_eq!(file.manifest.sections, vec![SectionKind::Manifest, SectionKind::State]);
    assert_eq!(file.manifest.state_bytes, 17);
    assert_eq!(file.manifest.format_version, FORMAT_VERSION);
    assert!(file.sealed_secrets.is_none());
    assert_eq!(file.open_secrets(b"x").unwrap_err(), SnapshotError::NoSecrets);
    assert_eq!(file.file_sha256_hex.len(), 64);

    let bytes = sealed(b"correct horse");
    let file = read(&bytes).unwrap();
    assert_eq!(file.manifest.sections.last(), Some(&SectionKind::Secrets));
    let info = file.manifest.secrets.clone().unwrap();
    assert_eq!((info.kdf.as_str(), info.m_kib, info.t_cost), ("argon2id", 8, 1));
    assert_eq!(file.open_secrets(b"correct horse").unwrap(), secrets());
    assert!(!String::from_utf8_lossy(&bytes).contains("t0ken"), "the secret is not in the clear");
    assert!(!format!("{:?}", secrets()).contains("t0ken"), "Debug hides contents");
}

#[test]
fn a_wrong_or_empty_passphrase_is_refused() {
    let bytes = sealed(b"correct horse");
    let file = read(&bytes).unwrap();
    assert_eq!(file.open_secrets(b"battery staple").unwrap_err(), SnapshotError::WrongPassphrase);
    assert_eq!(file.open_secrets(b"").unwrap_err(), SnapshotError::EmptyPassphrase);
    let secrets = secrets();
    let empty = write(manifest(), b"{}", Some(SecretsInput { secrets: &secrets, passphrase: b"" }));
    assert_eq!(empty.unwrap_err(), SnapshotError::EmptyPassphrase);
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    for bytes in [plain(), sealed(b"pw")] {
        for len in 0..bytes.len() {
            match read(&bytes[..len]) {
                Err(SnapshotError::Truncated(_)) => {}
                other => panic!("prefix of {len} of {} bytes: {other:?}", bytes.len()),
            }
        }
    }
}

#[test]
fn a_flipped_byte_in_a_section_names_that_section() {
    let bytes = sealed(b"pw");
    for (kind, range) in section_offsets(&bytes).unwrap() {
        for at in [range.start, range.start + range.len() / 2, range.end - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert_eq!(read(&bad).unwrap_err(), SnapshotError::SectionCorrupted { kind }, "{kind:?} at {at}");
        }
    }
}

#[test]
fn a_flipped_byte_outside_the_sections_is_refused() {
    let bytes = plain();
    let inside: Vec<_> = section_offsets(&bytes).unwrap().into_iter().map(|(_, r)| r).collect();
    for at in 0..bytes.len() {
        if inside.iter().any(|r| r.contains(&at)) {
            continue;
        }
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        assert!(read(&bad).is_err(), "flip at {at} accepted");
    }
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(read(&bad).unwrap_err(), SnapshotError::FileChecksum);
}

#[test]
fn wrong_magic_future_format_and_trailing_bytes_say_so() {
    let mut bad = plain();
    bad[0] = b'X';
    assert_eq!(read(&bad).unwrap_err(), SnapshotError::WrongMagic);
    let mut future = plain();
    future[16..20].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(read(&future).unwrap_err(), SnapshotError::FutureFormat { found: 7, supported: FORMAT_VERSION });
    let mut longer = plain();
    longer.extend_from_slice(b"more");
    assert_eq!(read(&longer).unwrap_err(), SnapshotError::TrailingBytes { extra: 4 });
    assert!(read(b"").unwrap_err().to_string().contains("24-byte header"));
}

#[test]
fn malformed_section_tables_are_refused() {
    let bytes = plain();
    let with_count = |count: u32| {
        let mut b = bytes.clone();
        b[20..24].copy_from_slice(&count.to_le_bytes());
        b
    };
    assert!(matches!(read(&with_count(0)), Err(SnapshotError::BadSectionTable(_))));
    assert!(matches!(read(&with_count(9)), Err(SnapshotError::BadSectionTable(_))));
    // One section only: the file then has trailing bytes where the state was.
    assert!(read(&with_count(1)).is_err());
    let mut unknown = bytes.clone();
    unknown[24..28].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(read(&unknown), Err(SnapshotError::BadSectionTable(m)) if m.contains("unknown kind 99")));
    let mut state_first = bytes.clone();
    state_first[24..28].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(read(&state_first), Err(SnapshotError::BadSectionTable(m)) if m.contains("not the manifest")));
    let (_, state) = section_offsets(&bytes).unwrap()[1].clone();
    let mut twice = bytes.clone();
    twice[state.start - 44..state.start - 40].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(read(&twice), Err(SnapshotError::BadSectionTable(m)) if m.contains("twice")));
    let mut huge = bytes.clone();
    huge[28..36].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(read(&huge), Err(SnapshotError::BadSectionTable(_))));
    let mut beyond = bytes.clone();
    beyond[28..36].copy_from_slice(&100_000u64.to_le_bytes());
    assert!(matches!(read(&beyond), Err(SnapshotError::Truncated(_))));
}

#[test]
fn kdf_parameters_out_of_bounds_are_refused_before_the_kdf_runs() {
    let bytes = sealed(b"pw");
    let file = read(&bytes).unwrap();
    let mut info = file.manifest.secrets.clone().unwrap();
    info.m_kib = 10_000_000;
    let error = crate::secrets::open(file.sealed_secrets.unwrap(), &info, file.manifest_bytes, b"pw").unwrap_err();
    assert!(matches!(&error, SnapshotError::BadKdfParams(m) if m.contains("m_kib")), "{error}");
    assert!(write_with_kdf(
        manifest(),
        b"{}",
        Some(SecretsInput { secrets: &secrets(), passphrase: b"pw" }),
        KdfParams { m_kib: 8, t_cost: 11, p_cost: 1 }
    )
    .is_err());

    // The same through a whole file whose checksums are valid: rewrite the manifest.
    let mut manifest = file.manifest.clone();
    manifest.secrets.as_mut().unwrap().m_kib = 10_000_000;
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let sealed_bytes = file.sealed_secrets.unwrap().to_vec();
    let mut crafted = Vec::new();
    crafted.extend_from_slice(MAGIC);
    crafted.extend_from_slice(&1u32.to_le_bytes());
    crafted.extend_from_slice(&3u32.to_le_bytes());
    for (code, body) in [(1u32, &manifest_bytes[..]), (2, file.state), (3, &sealed_bytes[..])] {
        crafted.extend_from_slice(&code.to_le_bytes());
        crafted.extend_from_slice(&(body.len() as u64).to_le_bytes());
        crafted.extend_from_slice(&sha256(body));
        crafted.extend_from_slice(body);
    }
    crafted.extend_from_slice(&[0; 32]);
    reseal_trailer(&mut crafted);
    let crafted_file = read(&crafted).unwrap();
    assert!(matches!(crafted_file.open_secrets(b"pw"), Err(SnapshotError::BadKdfParams(_))));
}

#[test]
fn secrets_cannot_be_moved_to_another_snapshot() {
    // Same key material (salt, nonce, passphrase), another manifest: the associated data
    // differs, so the sealed bytes do not open.
    let bytes = sealed(b"pw");
    let file = read(&bytes).unwrap();
    let mut other = file.manifest.clone();
    other.created_at_ms += 1;
    let other_bytes = serde_json::to_vec(&other).unwrap();
    let info = file.manifest.secrets.as_ref().unwrap();
    assert!(crate::secrets::open(file.sealed_secrets.unwrap(), info, file.manifest_bytes, b"pw").is_ok());
    let moved = crate::secrets::open(file.sealed_secrets.unwrap(), info, &other_bytes, b"pw");
    assert_eq!(moved.unwrap_err(), SnapshotError::WrongPassphrase);
}

#[test]
fn a_manifest_that_disagrees_with_the_sections_is_refused() {
    // Claim a state length the section does not have, with every checksum made valid.
    let bytes = plain();
    let file = read(&bytes).unwrap();
    let mut manifest = file.manifest.clone();
    manifest.state_bytes += 1;
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let mut crafted = Vec::new();
    crafted.extend_from_slice(MAGIC);
    crafted.extend_from_slice(&1u32.to_le_bytes());
    crafted.extend_from_slice(&2u32.to_le_bytes());
    for (code, body) in [(1u32, &manifest_bytes[..]), (2, file.state)] {
        crafted.extend_from_slice(&code.to_le_bytes());
        crafted.extend_from_slice(&(body.len() as u64).to_le_bytes());
        crafted.extend_from_slice(&sha256(body));
        crafted.extend_from_slice(body);
    }
    crafted.extend_from_slice(&[0; 32]);
    reseal_trailer(&mut crafted);
    assert!(matches!(read(&crafted), Err(SnapshotError::Inconsistent(m)) if m.contains("state bytes")));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any single changed byte is detected, and no mutation makes the reader panic.
    #[test]
    fn any_single_byte_change_is_detected(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let bytes = plain();
        let mut bad = bytes.clone();
        let i = at.index(bad.len());
        bad[i] ^= xor;
        prop_assert!(read(&bad).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut with_magic = MAGIC.to_vec();
        with_magic.extend_from_slice(&data);
        let _ = read(&data);
        let _ = read(&with_magic);
    }
}
