//! The cluster's certificates: a CA made by the seed, node keys with certificate signing
//! requests, and CSRs signed into node certificates. Every node certificate is valid for the
//! name [`CLUSTER_SERVER_NAME`] and for client authentication, so any member can dial any other
//! and be dialled by it; what makes a peer a member is the cluster CA's signature.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The DNS name every node certificate carries and every member checks when dialling a peer.
pub const CLUSTER_SERVER_NAME: &str = "sluice-cluster";

#[derive(Debug)]
pub struct PkiError(pub String);

impl std::fmt::Display for PkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PkiError {}

fn pki(context: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError(format!("{context}: {e}"))
}

/// A CA certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// A new cluster CA (ECDSA P-256), named after the cluster.
pub fn new_ca(cluster_id: &str) -> Result<CaMaterial, PkiError> {
    let key = KeyPair::generate().map_err(pki("generate the CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki("CA parameters"))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("Sluice cluster {cluster_id} CA"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).map_err(pki("self-sign the CA"))?;
    Ok(CaMaterial { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A node's new private key and the CSR for it, both PEM.
pub struct NodeKey {
    pub key_pem: String,
    pub csr_pem: String,
}

pub fn new_node_key(node_id: u64) -> Result<NodeKey, PkiError> {
    let key = KeyPair::generate().map_err(pki("generate the node key"))?;
    let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_owned()]).map_err(pki("CSR parameters"))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("sluice node {node_id}"));
    params.distinguished_name = name;
    let csr = params.serialize_request(&key).map_err(pki("make the CSR"))?;
    Ok(NodeKey { key_pem: key.serialize_pem(), csr_pem: csr.pem().map_err(pki("encode the CSR"))? })
}

/// Signs a node's CSR. The CSR proves possession of the key (its signature is checked); its
/// names and usages are not trusted: the certificate gets the cluster's own.
pub fn sign_node_csr(ca: &CaMaterial, csr_pem: &str, node_id: u64) -> Result<String, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(pki("read the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(pki("read the CA certificate"))?;
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(pki("the CSR is not valid"))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("sluice node {node_id}"));
    csr.params.distinguished_name = name;
    csr.params.subject_alt_names =
        vec![SanType::DnsName(CLUSTER_SERVER_NAME.try_into().map_err(pki("the cluster server name"))?)];
    csr.params.is_ca = IsCa::ExplicitNoCa;
    csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = csr.signed_by(&issuer).map_err(pki("sign the node certificate"))?;
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_csr_carries_the_cluster_name_not_what_the_csr_asked_for() {
        let ca = new_ca("c0ffee").unwrap();
        let node = new_node_key(7).unwrap();
        let cert = sign_node_csr(&ca, &node.csr_pem, 7).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"), "the CA key is not in Debug output");
        assert!(sign_node_csr(&ca, "not a csr", 7).is_err());
        let mut tampered = node.csr_pem.clone();
        tampered.replace_range(100..104, "AAAA");
        assert!(sign_node_csr(&ca, &tampered, 7).is_err(), "a CSR whose signature does not verify is refused");
    }
}
