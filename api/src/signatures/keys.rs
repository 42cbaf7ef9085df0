//! Key material for image signatures: registered public keys and certificates parsed and
//! checked where they enter, signature checks over them (webpki's algorithms on ring), and the
//! ECDSA P-256 keys the cluster makes and signs with for server-side signing.

use base64::Engine as _;
use keelson_raft::signing::KeyMaterial;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, SubjectPublicKeyInfoDer};
use sha2::{Digest as _, Sha256};

/// Algorithms a cosign signature may use: ECDSA P-256 with SHA-256 (cosign's default), P-384
/// with SHA-384, RSA PKCS#1 v1.5 with SHA-256, Ed25519.
const RAW_KEY_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::ED25519,
];

/// A registered key, parsed.
pub enum Material {
    PublicKey(SubjectPublicKeyInfoDer<'static>),
    Certificate(CertificateDer<'static>),
}

impl Material {
    /// Parses and checks the PEM text of a key of kind `kind`.
    pub fn parse(kind: KeyMaterial, pem: &str) -> Result<Material, String> {
        match kind {
            KeyMaterial::PublicKey => {
                let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
                    .map_err(|e| format!("not a PEM public key (BEGIN PUBLIC KEY): {e}"))?;
                webpki::RawPublicKeyEntity::try_from(&spki).map_err(|e| format!("unusable public key: {e}"))?;
                Ok(Material::PublicKey(spki))
            }
            KeyMaterial::Certificate => {
                let cert = CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|e| format!("not a PEM certificate (BEGIN CERTIFICATE): {e}"))?;
                webpki::anchor_from_trusted_cert(&cert).map_err(|e| format!("unusable certificate: {e}"))?;
                Ok(Material::Certificate(cert))
            }
        }
    }

    /// Whether `signature` is a signature of `message` by this public key (any supported
    /// algorithm its type allows). A certificate is never used as a raw key.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Material::PublicKey(spki) = self else {
            return false;
        };
        let Ok(key) = webpki::RawPublicKeyEntity::try_from(spki) else {
            return false;
        };
        RAW_KEY_ALGORITHMS
            .iter()
            .any(|alg| key.verify_signature(*alg, message, signature).is_ok())
    }

    /// SHA-256 of the key's DER (the public key's, or the certificate's), in hex.
    pub fn fingerprint(&self) -> String {
        let der: &[u8] = match self {
            Material::PublicKey(k) => k.as_ref(),
            Material::Certificate(c) => c.as_ref(),
        };
        hex::encode(Sha256::digest(der))
    }
}

/// The DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480: id-ecPublicKey, prime256v1, and
/// the BIT STRING header of a 65-byte uncompressed point).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A key the cluster made: its private key (PKCS#8) and public key (PEM).
pub struct MadeKey {
    pub pkcs8: Vec<u8>,
    pub public_pem: String,
}

/// Makes an ECDSA P-256 key, as `cosign generate-key-pair` does.
pub fn make_key() -> Result<MadeKey, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| "the system random source failed".to_string())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| format!("made key unreadable: {e}"))?;
    let spki = [&P256_SPKI_PREFIX[..], pair.public_key().as_ref()].concat();
    Ok(MadeKey {
        pkcs8: pkcs8.as_ref().to_vec(),
        public_pem: pem("PUBLIC KEY", &spki),
    })
}

/// Signs `message` with a P-256 private key (PKCS#8): an ASN.1 DER ECDSA signature over its
/// SHA-256, as cosign makes.
pub fn sign(pkcs8: &[u8], message: &[u8]) -> Result<Vec<u8>, String> {
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
        .map_err(|e| format!("the held private key is unreadable: {e}"))?;
    pair.sign(&rng, message)
        .map(|s| s.as_ref().to_vec())
        .map_err(|_| "signing failed".to_string())
}

/// PEM text of `der` under `label`, in 64-column lines.
fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_keys_sign_and_verify_and_other_keys_do_not() {
        let made = make_key().expect("key");
        let key = Material::parse(KeyMaterial::PublicKey, &made.public_pem).expect("own PEM parses");
        let signature = sign(&made.pkcs8, b"payload").expect("sign");
        assert!(key.verifies(b"payload", &signature));
        assert!(!key.verifies(b"payload!", &signature));
        let other = make_key().expect("key");
        let other_key = Material::parse(KeyMaterial::PublicKey, &other.public_pem).expect("parses");
        assert!(!other_key.verifies(b"payload", &signature));
        assert_ne!(key.fingerprint(), other_key.fingerprint());
    }

    #[test]
    fn garbage_is_refused_where_it_enters() {
        assert!(Material::parse(KeyMaterial::PublicKey, "hello").is_err());
        assert!(Material::parse(
            KeyMaterial::PublicKey,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
        let made = make_key().expect("key");
        assert!(Material::parse(KeyMaterial::Certificate, &made.public_pem).is_err());
    }
}
