//! Release stamps: a fixed region in the `sluice` binary that can override the version it
//! reports and inject a start-up fault, written into a *copy* of a built binary. This is
//! how `cargo xtask release-variant` and the lab tests make real, distinct artifacts (other
//! bytes, other sha256, another version, a release that never becomes ready or that
//! crashes at start) without rebuilding. A binary whose region is blank reports the
//! version it was built with and injects nothing.
//!
//! The region is `MARKER` followed by [`PAYLOAD_BYTES`] bytes: `v=<version>;f=<fault>;`
//! padded with NULs. The marker is assembled at run time here so that only the region
//! itself contains it in a binary.

use std::path::Path;

/// The bytes after the marker.
pub const PAYLOAD_BYTES: usize = 96;

/// The marker that starts the stamp region.
pub fn marker() -> Vec<u8> {
    [&b"SLUICE-RELEASE-"[..], &b"STAMP:"[..]].concat()
}

/// A fault a test release injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The node runs and serves, but its readiness never passes.
    NeverReady,
    /// `sluice run` aborts before doing anything.
    CrashAtStart,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::None => "",
            Fault::NeverReady => "never-ready",
            Fault::CrashAtStart => "crash-at-start",
        }
    }

    pub fn parse(text: &str) -> Option<Fault> {
        [Fault::None, Fault::NeverReady, Fault::CrashAtStart].into_iter().find(|f| f.as_str() == text)
    }
}

/// What a stamp region says.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Stamp {
    pub version: Option<String>,
    pub fault: Option<String>,
}

/// Reads a payload (the bytes after the marker).
pub fn parse_payload(payload: &[u8]) -> Stamp {
    let end = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
    let text = String::from_utf8_lossy(&payload[..end]);
    let mut stamp = Stamp::default();
    for field in text.split(';') {
        match field.split_once('=') {
            Some(("v", v)) if !v.is_empty() => stamp.version = Some(v.to_owned()),
            Some(("f", f)) if !f.is_empty() => stamp.fault = Some(f.to_owned()),
            _ => {}
        }
    }
    stamp
}

/// Copies `binary` to `out` with its stamp region set to `version` and `fault`.
pub fn write_variant(binary: &Path, out: &Path, version: &str, fault: Fault) -> Result<(), String> {
    crate::releases::check_version(version).map_err(|e| e.to_string())?;
    let mut bytes = std::fs::read(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let marker = marker();
    let mut hits = Vec::new();
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|&b| b == marker[0]) {
        let at = from + offset;
        if bytes[at..].starts_with(&marker) && bytes.len() >= at + marker.len() + PAYLOAD_BYTES {
            hits.push(at);
        }
        from = at + 1;
    }
    let at = match hits.as_slice() {
        [at] => *at,
        [] => return Err(format!("{} has no release stamp region", binary.display())),
        _ => return Err(format!("{} has more than one release stamp region", binary.display())),
    };
    let payload = format!("v={version};f={};", fault.as_str());
    if payload.len() > PAYLOAD_BYTES {
        return Err(format!("the stamp {payload:?} is longer than {PAYLOAD_BYTES} bytes"));
    }
    let region = &mut bytes[at + marker.len()..at + marker.len() + PAYLOAD_BYTES];
    region.fill(0);
    region[..payload.len()].copy_from_slice(payload.as_bytes());
    std::fs::write(out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("{}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back() {
        let s = parse_payload(b"v=2.0.0;f=never-ready;\0\0\0");
        assert_eq!(s.version.as_deref(), Some("2.0.0"));
        assert_eq!(s.fault.as_deref(), Some("never-ready"));
        assert_eq!(parse_payload(&[0u8; 96]), Stamp::default());
    }

    #[test]
    fn a_variant_rewrites_only_the_region() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = b"head".to_vec();
        image.extend(marker());
        image.extend([0u8; PAYLOAD_BYTES]);
        image.extend(b"tail");
        std::fs::write(dir.path().join("in"), &image).unwrap();
        write_variant(&dir.path().join("in"), &dir.path().join("out"), "9.9.9", Fault::CrashAtStart).unwrap();
        let out = std::fs::read(dir.path().join("out")).unwrap();
        assert_eq!(out.len(), image.len());
        let at = 4 + marker().len();
        let stamp = parse_payload(&out[at..at + PAYLOAD_BYTES]);
        assert_eq!(stamp.version.as_deref(), Some("9.9.9"));
        assert_eq!(stamp.fault.as_deref(), Some("crash-at-start"));
        assert!(out.ends_with(b"tail"));
        std::fs::write(dir.path().join("none"), b"no region").unwrap();
        assert!(write_variant(&dir.path().join("none"), &dir.path().join("x"), "1", Fault::None).is_err());
    }
}
