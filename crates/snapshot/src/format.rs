//! Writing and reading the container: header, sections with checksums, trailer.

use std::ops::Range;

use ring::digest::SHA256;

use crate::error::SnapshotError;
use crate::manifest::{is_hex, to_hex, Manifest, SectionKind};
use crate::secrets::{self, KdfParams, Secrets, SecretsInput};

pub const MAGIC: &[u8; 16] = b"SLUICE-SNAPSHOT\n";
pub const FORMAT_VERSION: u32 = 1;
/// Magic, format version, section count.
pub const HEADER_LEN: usize = 24;
const MAX_SECTIONS: u32 = 8;
/// Kind, length, SHA-256.
const SECTION_HEADER_LEN: usize = 4 + 8 + 32;
const TRAILER_LEN: usize = 32;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A snapshot just written: the file, its manifest as written, and the file's SHA-256 (what
/// [`read`] would report, without reading the file back).
#[derive(Debug)]
pub struct Written {
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
    pub file_sha256_hex: String,
}

/// Writes a snapshot with the default KDF cost.
pub fn write(manifest: Manifest, state: &[u8], secrets: Option<SecretsInput<'_>>) -> Result<Vec<u8>, SnapshotError> {
    write_with_kdf(manifest, state, secrets, KdfParams::DEFAULT)
}

/// Writes a snapshot with the given KDF cost; see [`write_written`].
pub fn write_with_kdf(
    manifest: Manifest,
    state: &[u8],
    secrets: Option<SecretsInput<'_>>,
    kdf: KdfParams,
) -> Result<Vec<u8>, SnapshotError> {
    Ok(write_written(manifest, state, secrets, kdf)?.bytes)
}

/// Writes a snapshot. The writer fills the manifest's `format_version`, `sections`,
/// `state_bytes` and `secrets`; the caller the rest.
pub fn write_written(
    mut manifest: Manifest,
    state: &[u8],
    secrets: Option<SecretsInput<'_>>,
    kdf: KdfParams,
) -> Result<Written, SnapshotError> {
    let limit = SectionKind::State.max_len();
    if state.len() as u64 > limit {
        return Err(SnapshotError::TooLarge { what: "state section", bytes: state.len() as u64, limit });
    }
    if !is_hex(&manifest.state_hash, 32) {
        return Err(SnapshotError::Manifest("state_hash must be 64 lowercase hex digits".into()));
    }
    manifest.format_version = FORMAT_VERSION;
    manifest.state_bytes = state.len() as u64;
    manifest.sections = vec![SectionKind::Manifest, SectionKind::State];
    manifest.secrets = None;
    if let Some(input) = &secrets {
        if input.passphrase.is_empty() {
            return Err(SnapshotError::EmptyPassphrase);
        }
        manifest.sections.push(SectionKind::Secrets);
        manifest.secrets = Some(secrets::plan(kdf)?);
    }
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| SnapshotError::Manifest(e.to_string()))?;
    let sealed = match (&secrets, &manifest.secrets) {
        (Some(input), Some(info)) => Some(secrets::seal(input, info, &manifest_bytes)?),
        _ => None,
    };
    let mut sections: Vec<(SectionKind, &[u8])> =
        vec![(SectionKind::Manifest, &manifest_bytes), (SectionKind::State, state)];
    if let Some(sealed) = &sealed {
        sections.push((SectionKind::Secrets, sealed));
    }
    let total = HEADER_LEN + sections.iter().map(|(_, b)| SECTION_HEADER_LEN + b.len()).sum::<usize>() + TRAILER_LEN;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (kind, bytes) in &sections {
        out.extend_from_slice(&kind.code().to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&sha256(bytes));
        out.extend_from_slice(bytes);
    }
    let trailer = sha256(&out);
    out.extend_from_slice(&trailer);
    debug_assert_eq!(out.len(), total);
    let file_sha256_hex = to_hex(&sha256(&out));
    Ok(Written { bytes: out, manifest, file_sha256_hex })
}

/// A snapshot file whose every check passed; the sections borrow the input.
#[derive(Debug)]
pub struct SnapshotFile<'a> {
    pub manifest: Manifest,
    /// The manifest section exactly as written (the secrets' associated data).
    pub manifest_bytes: &'a [u8],
    pub state: &'a [u8],
    pub sealed_secrets: Option<&'a [u8]>,
    /// SHA-256 of the whole file, hex.
    pub file_sha256_hex: String,
}

impl SnapshotFile<'_> {
    /// Opens the secrets section with `passphrase`.
    pub fn open_secrets(&self, passphrase: &[u8]) -> Result<Secrets, SnapshotError> {
        let (Some(sealed), Some(info)) = (self.sealed_secrets, &self.manifest.secrets) else {
            return Err(SnapshotError::NoSecrets);
        };
        if passphrase.is_empty() {
            return Err(SnapshotError::EmptyPassphrase);
        }
        secrets::open(sealed, info, self.manifest_bytes, passphrase)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

struct Section {
    kind: SectionKind,
    checksum: Range<usize>,
    body: Range<usize>,
}

/// Walks the header and section table, checking every bound; no checksum yet.
fn table(bytes: &[u8]) -> Result<Vec<Section>, SnapshotError> {
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated(format!(
            "{} bytes; a snapshot starts with a {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if &bytes[..16] != MAGIC {
        return Err(SnapshotError::WrongMagic);
    }
    let version = u32_at(bytes, 16);
    if version > FORMAT_VERSION {
        return Err(SnapshotError::FutureFormat { found: version, supported: FORMAT_VERSION });
    }
    if version == 0 {
        return Err(SnapshotError::BadSectionTable("format version 0 does not exist".into()));
    }
    let count = u32_at(bytes, 20);
    if count == 0 || count > MAX_SECTIONS {
        return Err(SnapshotError::BadSectionTable(format!("{count} sections declared (1 to {MAX_SECTIONS} allowed)")));
    }
    let mut sections: Vec<Section> = Vec::new();
    let mut at = HEADER_LEN;
    for n in 0..count {
        let remaining = bytes.len() - at;
        if remaining < SECTION_HEADER_LEN + TRAILER_LEN {
            return Err(SnapshotError::Truncated(format!(
                "section {n}'s header at offset {at} needs {SECTION_HEADER_LEN} bytes and the trailer {TRAILER_LEN}, \
                 but only {remaining} bytes remain"
            )));
        }
        let code = u32_at(bytes, at);
        let kind = SectionKind::from_code(code)
            .ok_or_else(|| SnapshotError::BadSectionTable(format!("section {n} has unknown kind {code}")))?;
        let length = u64_at(bytes, at + 4);
        if length > kind.max_len() {
            return Err(SnapshotError::BadSectionTable(format!(
                "section {n} ({}) declares {length} bytes, more than the {} allowed",
                kind.as_str(),
                kind.max_len()
            )));
        }
        let body_start = at + SECTION_HEADER_LEN;
        let available = (bytes.len() - body_start).saturating_sub(TRAILER_LEN) as u64;
        if length > available {
            return Err(SnapshotError::Truncated(format!(
                "section {n} ({}) declares {length} bytes at offset {body_start}, but only {available} remain before \
                 the trailer",
                kind.as_str()
            )));
        }
        if n == 0 && kind != SectionKind::Manifest {
            return Err(SnapshotError::BadSectionTable(format!(
                "the first section is {}, not the manifest",
                kind.as_str()
            )));
        }
        if sections.iter().any(|s| s.kind == kind) {
            return Err(SnapshotError::BadSectionTable(format!("the {} section appears twice", kind.as_str())));
        }
        let body_end = body_start + length as usize;
        sections.push(Section { kind, checksum: at + 12..at + SECTION_HEADER_LEN, body: body_start..body_end });
        at = body_end;
    }
    let rest = bytes.len() - at;
    if rest < TRAILER_LEN {
        return Err(SnapshotError::Truncated(format!("the {TRAILER_LEN}-byte trailer has only {rest} bytes")));
    }
    if rest > TRAILER_LEN {
        return Err(SnapshotError::TrailingBytes { extra: rest - TRAILER_LEN });
    }
    if !sections.iter().any(|s| s.kind == SectionKind::State) {
        return Err(SnapshotError::BadSectionTable("there is no state section".into()));
    }
    Ok(sections)
}

/// Where each section's bytes are in a well-formed file (diagnostics and tests).
pub fn section_offsets(bytes: &[u8]) -> Result<Vec<(SectionKind, Range<usize>)>, SnapshotError> {
    Ok(table(bytes)?.into_iter().map(|s| (s.kind, s.body)).collect())
}

/// Reads and checks a whole snapshot file; does not decrypt the secrets.
pub fn read(bytes: &[u8]) -> Result<SnapshotFile<'_>, SnapshotError> {
    let sections = table(bytes)?;
    for section in &sections {
        if sha256(&bytes[section.body.clone()]) != bytes[section.checksum.clone()] {
            return Err(SnapshotError::SectionCorrupted { kind: section.kind });
        }
    }
    let (content, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let file_sha = sha256(content);
    if file_sha != trailer {
        return Err(SnapshotError::FileChecksum);
    }
    let body = |kind: SectionKind| sections.iter().find(|s| s.kind == kind).map(|s| &bytes[s.body.clone()]);
    let manifest_bytes = body(SectionKind::Manifest).expect("the table checked the manifest is first");
    let state = body(SectionKind::State).expect("the table checked a state section is present");
    let sealed_secrets = body(SectionKind::Secrets);
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| SnapshotError::Manifest(e.to_string()))?;
    check_manifest(&manifest, &sections, state.len(), u32_at(bytes, 16))?;
    Ok(SnapshotFile { manifest, manifest_bytes, state, sealed_secrets, file_sha256_hex: to_hex(&sha256(bytes)) })
}

fn check_manifest(
    manifest: &Manifest,
    sections: &[Section],
    state_len: usize,
    version: u32,
) -> Result<(), SnapshotError> {
    let inconsistent = |why: String| Err(SnapshotError::Inconsistent(why));
    if manifest.format_version != version {
        return inconsistent(format!("the manifest says format {}, the header {version}", manifest.format_version));
    }
    let present: Vec<SectionKind> = sections.iter().map(|s| s.kind).collect();
    if manifest.sections != present {
        return inconsistent(format!(
            "the manifest lists sections {:?}, the file has {:?}",
            manifest.sections.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            present.iter().map(|k| k.as_str()).collect::<Vec<_>>()
        ));
    }
    if manifest.state_bytes != state_len as u64 {
        return inconsistent(format!(
            "the manifest says {} state bytes, the section has {state_len}",
            manifest.state_bytes
        ));
    }
    if !is_hex(&manifest.state_hash, 32) {
        return Err(SnapshotError::Manifest("state_hash is not 64 lowercase hex digits".into()));
    }
    let has_secrets = present.contains(&SectionKind::Secrets);
    match &manifest.secrets {
        Some(info) if !has_secrets => inconsistent(format!("secrets info ({}) but no secrets section", info.kdf)),
        None if has_secrets => inconsistent("a secrets section but no secrets info".into()),
        Some(info) if !secrets::info_shape_ok(info) => {
            Err(SnapshotError::Manifest("secrets salt or nonce is not lowercase hex of the right length".into()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
