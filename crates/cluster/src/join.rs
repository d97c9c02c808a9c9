//! The join handshake's cryptography and bookkeeping, pure (no I/O).
//!
//! The joiner proves it holds the bootstrap token without sending it: it asks for a challenge
//! (a fresh nonce), then sends its request with an HMAC-SHA256, keyed with the token, over the
//! nonce and every field it asks for. The answering node checks the nonce (issued by it, unused,
//! not older than [`NONCE_LIFETIME_MS`]), the cluster id and the MAC, and answers with the cluster
//! CA, the joiner's signed certificate and the CA key sealed with a key derived from the token
//! and both nonces, all under a MAC of its own. A party without the token can neither produce a
//! request that passes nor read or forge an answer, even when it sits between the two.
//!
//! Every field enters a MAC with its length in front, so no two different requests have the
//! same MAC input.

use std::collections::{HashMap, VecDeque};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;
use ring::hmac;

/// A challenge nonce may be used this long after it was issued.
pub const NONCE_LIFETIME_MS: u64 = 60_000;
/// Outstanding challenges kept at most (the oldest is forgotten beyond it).
pub const MAX_OUTSTANDING_NONCES: usize = 1024;
/// Used nonces remembered, so a replay is named as such rather than as unknown.
pub const MAX_REMEMBERED_USED: usize = 4096;

const REQUEST_CONTEXT: &[u8] = b"sluice-join-request-v1";
const ANSWER_CONTEXT: &[u8] = b"sluice-join-answer-v1";
const SEAL_CONTEXT: &[u8] = b"sluice-join-seal-v1";

/// Why a join was refused; the text is what the joiner is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownNonce,
    Replayed,
    ExpiredNonce,
    ForeignCluster {
        asked: String,
        ours: String,
    },
    /// The joiner belongs to a cluster this one was restored from.
    RestoredFrom {
        asked: String,
        ours: String,
    },
    BadToken,
    BadRequest(String),
    AlreadyMember(u64),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownNonce => f.write_str("the challenge nonce was not issued by this node (ask for a new one)"),
            Refusal::Replayed => f.write_str("replayed request: this challenge nonce was already used"),
            Refusal::ExpiredNonce => write!(f, "the challenge nonce is older than {} s", NONCE_LIFETIME_MS / 1000),
            Refusal::ForeignCluster { asked, ours } => {
                write!(f, "this node belongs to cluster {ours}, not to cluster {asked}")
            }
            Refusal::RestoredFrom { asked, ours } => write!(
                f,
                "cluster {asked} was restored from a snapshot as cluster {ours}; members of {asked} cannot join \
                 it: move this node's data root aside and start it with an empty one and --join"
            ),
            Refusal::BadToken => f.write_str("the request was not made with this cluster's bootstrap token"),
            Refusal::BadRequest(why) => write!(f, "malformed join request: {why}"),
            Refusal::AlreadyMember(id) => write!(f, "node id {id} is already a member of this cluster"),
        }
    }
}

/// What a joiner asks for; the MAC covers all of it and the nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinFields<'a> {
    pub nonce: &'a [u8],
    pub node_id: u64,
    pub advertise: &'a str,
    pub cluster_id: &'a str,
    pub csr_pem: &'a str,
    pub client_nonce: &'a [u8],
}

fn put(message: &mut Vec<u8>, field: &[u8]) {
    message.extend_from_slice(&(field.len() as u64).to_be_bytes());
    message.extend_from_slice(field);
}

fn key(token: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes())
}

fn request_message(fields: &JoinFields<'_>) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(256 + fields.csr_pem.len());
    put(&mut ctx, REQUEST_CONTEXT);
    put(&mut ctx, fields.nonce);
    put(&mut ctx, &fields.node_id.to_be_bytes());
    put(&mut ctx, fields.advertise.as_bytes());
    put(&mut ctx, fields.cluster_id.as_bytes());
    put(&mut ctx, fields.csr_pem.as_bytes());
    put(&mut ctx, fields.client_nonce);
    ctx
}

pub fn request_mac(token: &str, fields: &JoinFields<'_>) -> Vec<u8> {
    hmac::sign(&key(token), &request_message(fields)).as_ref().to_vec()
}

/// Constant-time check of a request's MAC.
pub fn verify_request(token: &str, fields: &JoinFields<'_>, mac: &[u8]) -> Result<(), Refusal> {
    hmac::verify(&key(token), &request_message(fields), mac).map_err(|_| Refusal::BadToken)
}

/// What the answering node sends back; the MAC covers all of it and both nonces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerFields<'a> {
    pub nonce: &'a [u8],
    pub client_nonce: &'a [u8],
    pub cluster_id: &'a str,
    pub ca_pem: &'a str,
    pub node_cert_pem: &'a str,
    pub sealed_ca_key: &'a [u8],
    pub voters: &'a [u64],
}

fn answer_message(fields: &AnswerFields<'_>) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(512 + fields.ca_pem.len() + fields.node_cert_pem.len());
    put(&mut ctx, ANSWER_CONTEXT);
    put(&mut ctx, fields.nonce);
    put(&mut ctx, fields.client_nonce);
    put(&mut ctx, fields.cluster_id.as_bytes());
    put(&mut ctx, fields.ca_pem.as_bytes());
    put(&mut ctx, fields.node_cert_pem.as_bytes());
    put(&mut ctx, fields.sealed_ca_key);
    let voters: Vec<u8> = fields.voters.iter().flat_map(|v| v.to_be_bytes()).collect();
    put(&mut ctx, &voters);
    ctx
}

pub fn answer_mac(token: &str, fields: &AnswerFields<'_>) -> Vec<u8> {
    hmac::sign(&key(token), &answer_message(fields)).as_ref().to_vec()
}

pub fn verify_answer(token: &str, fields: &AnswerFields<'_>, mac: &[u8]) -> Result<(), String> {
    hmac::verify(&key(token), &answer_message(fields), mac).map_err(|_| {
        "the answer is not from a holder of this bootstrap token (wrong token, or someone in between)".to_owned()
    })
}

struct SealKeyLen;

impl hkdf::KeyType for SealKeyLen {
    fn len(&self) -> usize {
        32
    }
}

/// The sealing key of one join: HKDF-SHA256 of the token, salted with both nonces. Each join
/// has its own, so the fixed AEAD nonce below is never reused under one key.
fn seal_key(token: &str, nonce: &[u8], client_nonce: &[u8]) -> LessSafeKey {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &[nonce, client_nonce].concat());
    let prk = salt.extract(token.as_bytes());
    let okm = prk.expand(&[SEAL_CONTEXT], SealKeyLen).expect("32 bytes is a valid HKDF-SHA256 length");
    let mut bytes = [0u8; 32];
    okm.fill(&mut bytes).expect("the length matches");
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes is an AES-256 key"))
}

pub fn seal(token: &str, nonce: &[u8], client_nonce: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut data = secret.to_vec();
    seal_key(token, nonce, client_nonce)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut data)
        .expect("sealing into a growable buffer cannot fail");
    data
}

pub fn open(token: &str, nonce: &[u8], client_nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
    let mut data = sealed.to_vec();
    let plain = seal_key(token, nonce, client_nonce)
        .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut data)
        .map_err(|_| "the sealed CA key does not open with this bootstrap token".to_owned())?;
    Ok(plain.to_vec())
}

/// The challenges a node issued and which of them were used. Bounded both ways.
#[derive(Default)]
pub struct NonceBook {
    outstanding: HashMap<[u8; 32], u64>,
    order: VecDeque<[u8; 32]>,
    used: HashMap<[u8; 32], ()>,
    used_order: VecDeque<[u8; 32]>,
}

impl NonceBook {
    /// Records a fresh nonce issued at `now_ms`.
    pub fn issue(&mut self, nonce: [u8; 32], now_ms: u64) {
        if self.order.len() >= MAX_OUTSTANDING_NONCES {
            if let Some(oldest) = self.order.pop_front() {
                self.outstanding.remove(&oldest);
            }
        }
        self.outstanding.insert(nonce, now_ms);
        self.order.push_back(nonce);
        debug_assert_eq!(self.outstanding.len(), self.order.len());
    }

    /// Consumes a nonce: at most once, and only within its lifetime.
    pub fn take(&mut self, nonce: &[u8], now_ms: u64) -> Result<(), Refusal> {
        let nonce: [u8; 32] =
            nonce.try_into().map_err(|_| Refusal::BadRequest(format!("nonce: {} bytes, not 32", nonce.len())))?;
        if self.used.contains_key(&nonce) {
            return Err(Refusal::Replayed);
        }
        let Some(issued) = self.outstanding.remove(&nonce) else { return Err(Refusal::UnknownNonce) };
        self.order.retain(|n| *n != nonce);
        if self.used_order.len() >= MAX_REMEMBERED_USED {
            if let Some(oldest) = self.used_order.pop_front() {
                self.used.remove(&oldest);
            }
        }
        self.used.insert(nonce, ());
        self.used_order.push_back(nonce);
        if now_ms.saturating_sub(issued) > NONCE_LIFETIME_MS {
            return Err(Refusal::ExpiredNonce);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(nonce: &'a [u8], cluster_id: &'a str) -> JoinFields<'a> {
        JoinFields {
            nonce,
            node_id: 42,
            advertise: "10.0.0.2:9600",
            cluster_id,
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----",
            client_nonce: &[7; 32],
        }
    }

    #[test]
    fn the_request_mac_binds_every_field_to_the_token() {
        let nonce = [1u8; 32];
        let good = fields(&nonce, "c1");
        let mac = request_mac("token-a", &good);
        assert_eq!(verify_request("token-a", &good, &mac), Ok(()));
        assert_eq!(verify_request("token-b", &good, &mac), Err(Refusal::BadToken));
        let other_nonce = [2u8; 32];
        for changed in [
            JoinFields { node_id: 43, ..good.clone() },
            JoinFields { advertise: "10.0.0.3:9600", ..good.clone() },
            JoinFields { cluster_id: "c2", ..good.clone() },
            JoinFields { csr_pem: "other", ..good.clone() },
            JoinFields { nonce: &other_nonce, ..good.clone() },
            JoinFields { client_nonce: &[8; 32], ..good.clone() },
        ] {
            assert_eq!(verify_request("token-a", &changed, &mac), Err(Refusal::BadToken), "{changed:?}");
        }
        // Length prefixes: moving bytes from one field to the next changes the MAC.
        let a = JoinFields { advertise: "ab", cluster_id: "c", ..good.clone() };
        let b = JoinFields { advertise: "a", cluster_id: "bc", ..good.clone() };
        assert_ne!(request_mac("t", &a), request_mac("t", &b));
    }

    #[test]
    fn the_answer_is_authenticated_and_the_ca_key_opens_only_with_the_token() {
        let (nonce, client_nonce) = ([3u8; 32], [4u8; 32]);
        let sealed = seal("tok", &nonce, &client_nonce, b"-----BEGIN PRIVATE KEY-----");
        assert!(!sealed.windows(7).any(|w| w == b"PRIVATE"), "sealed, not in the clear");
        assert_eq!(open("tok", &nonce, &client_nonce, &sealed).unwrap(), b"-----BEGIN PRIVATE KEY-----");
        assert!(open("other", &nonce, &client_nonce, &sealed).is_err());
        assert!(open("tok", &client_nonce, &nonce, &sealed).is_err(), "bound to both nonces");
        let answer = AnswerFields {
            nonce: &nonce,
            client_nonce: &client_nonce,
            cluster_id: "c1",
            ca_pem: "ca",
            node_cert_pem: "cert",
            sealed_ca_key: &sealed,
            voters: &[1, 2],
        };
        let mac = answer_mac("tok", &answer);
        assert!(verify_answer("tok", &answer, &mac).is_ok());
        assert!(verify_answer("nope", &answer, &mac).is_err());
        assert!(verify_answer("tok", &AnswerFields { voters: &[1], ..answer.clone() }, &mac).is_err());
    }

    #[test]
    fn a_nonce_is_used_once_within_its_lifetime() {
        let mut book = NonceBook::default();
        book.issue([1; 32], 1_000);
        book.issue([2; 32], 1_000);
        assert_eq!(book.take(&[1; 32], 2_000), Ok(()));
        assert_eq!(book.take(&[1; 32], 2_000), Err(Refusal::Replayed));
        assert_eq!(book.take(&[9; 32], 2_000), Err(Refusal::UnknownNonce));
        assert_eq!(book.take(&[2; 32], 1_000 + NONCE_LIFETIME_MS + 1), Err(Refusal::ExpiredNonce));
        assert_eq!(book.take(&[2; 32], 1_000), Err(Refusal::Replayed), "an expired nonce is spent too");
        assert!(matches!(book.take(&[1; 5], 0), Err(Refusal::BadRequest(_))));
        for i in 0..(MAX_OUTSTANDING_NONCES as u32 + 10) {
            let mut n = [0u8; 32];
            n[..4].copy_from_slice(&i.to_be_bytes());
            n[31] = 0xAA;
            book.issue(n, 5_000);
        }
        assert_eq!(book.outstanding.len(), MAX_OUTSTANDING_NONCES, "bounded");
    }
}
