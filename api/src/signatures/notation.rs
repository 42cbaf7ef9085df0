//! Notary Project (notation) signatures: a referrer manifest of artifactType
//! `application/vnd.cncf.notary.signature` whose layer is a JWS envelope in JSON serialization
//! (notaryproject `specification/signature/signature-envelope-jws.md`). The envelope signs a
//! payload naming the target artifact's descriptor and carries the signer's certificate chain
//! in `x5c`; it verifies when that chain leads to a certificate the tenancy trusts (with the
//! code-signing extended key usage where one is named) and the leaf key verifies the signature.
//! COSE envelopes are recognised and reported as not verified here.

use base64::Engine as _;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use serde::Deserialize;
use serde_json::Value;

use super::keys::Material;

/// The artifactType of a notation signature manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
/// A JWS envelope layer.
pub const JWS: &str = "application/jose+json";
/// A COSE envelope layer.
pub const COSE: &str = "application/cose";
/// The payload content type a notation envelope signs.
const PAYLOAD_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";
/// Critical protected headers understood here.
const UNDERSTOOD: [&str; 3] = [
    "io.cncf.notary.signingScheme",
    "io.cncf.notary.expiry",
    "io.cncf.notary.authenticSigningTime",
];
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), the OID's content octets.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Certificates one chain may carry.
const MAX_CHAIN: usize = 8;

/// An envelope layer of a signature manifest.
pub struct Envelope {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The envelope layers of a notation signature manifest.
pub fn envelopes(manifest: &[u8]) -> Result<Vec<Envelope>, String> {
    #[derive(Deserialize)]
    struct M {
        #[serde(default)]
        layers: Vec<L>,
    }
    #[derive(Deserialize)]
    struct L {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: String,
        size: u64,
    }
    let m: M = serde_json::from_slice(manifest).map_err(|e| format!("not a signature manifest: {e}"))?;
    let out: Vec<Envelope> = m
        .layers
        .into_iter()
        .filter(|l| l.media_type == JWS || l.media_type == COSE)
        .take(super::cosign::MAX_CLAIMS)
        .map(|l| Envelope {
            media_type: l.media_type,
            digest: l.digest,
            size: l.size,
        })
        .collect();
    if out.is_empty() {
        return Err("no signature envelope layer".into());
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Jws {
    payload: String,
    protected: String,
    #[serde(default)]
    header: Unprotected,
    signature: String,
}

#[derive(Deserialize, Default)]
struct Unprotected {
    #[serde(default)]
    x5c: Vec<String>,
}

fn b64url(text: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("{what} is not base64url: {e}"))
}

/// Verifies a JWS envelope for image `digest` against the trusted certificate `anchor` at
/// `now_ms`.
pub fn verify(envelope: &[u8], media_type: &str, digest: &str, anchor: &Material, now_ms: u64) -> Result<(), String> {
    let Material::Certificate(anchor_der) = anchor else {
        return Err("notation signatures verify with a certificate, not a public key".into());
    };
    if media_type != JWS {
        return Err("COSE envelopes are not verified here".into());
    }
    let jws: Jws = serde_json::from_slice(envelope).map_err(|e| format!("not a JWS envelope: {e}"))?;
    let protected: Value = serde_json::from_slice(&b64url(&jws.protected, "protected header")?)
        .map_err(|e| format!("protected header is not JSON: {e}"))?;
    if protected["cty"].as_str() != Some(PAYLOAD_TYPE) {
        return Err(format!("protected header cty is not {PAYLOAD_TYPE}"));
    }
    for critical in protected["crit"].as_array().into_iter().flatten() {
        let name = critical.as_str().unwrap_or_default();
        if !UNDERSTOOD.contains(&name) {
            return Err(format!("critical header {name:?} is not understood"));
        }
    }
    if let Some(expiry) = protected["io.cncf.notary.expiry"].as_str() {
        let expires = humantime::parse_rfc3339_weak(expiry).map_err(|e| format!("expiry {expiry:?}: {e}"))?;
        let expires_ms = expires
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if expires_ms <= now_ms {
            return Err(format!("the signature expired at {expiry}"));
        }
    }
    let (algorithm, fixed_ecdsa) = algorithm(protected["alg"].as_str().unwrap_or_default())?;
    let payload: Value =
        serde_json::from_slice(&b64url(&jws.payload, "payload")?).map_err(|e| format!("payload is not JSON: {e}"))?;
    match payload["targetArtifact"]["digest"].as_str() {
        Some(d) if d == digest => {}
        Some(other) => return Err(format!("the signature is for {other}, not this image")),
        None => return Err("payload names no target artifact".into()),
    }
    if jws.header.x5c.is_empty() || jws.header.x5c.len() > MAX_CHAIN {
        return Err(format!("x5c carries 1 to {MAX_CHAIN} certificates"));
    }
    let chain: Vec<CertificateDer<'static>> = jws
        .header
        .x5c
        .iter()
        .map(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .map(CertificateDer::from)
                .map_err(|e| format!("x5c certificate is not base64: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| format!("signing certificate: {e}"))?;
    if chain[0].as_ref() != anchor_der.as_ref() {
        let anchors = [webpki::anchor_from_trusted_cert(anchor_der)
            .map_err(|e| format!("trusted certificate: {e}"))?
            .to_owned()];
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &chain[1..],
            UnixTime::since_unix_epoch(std::time::Duration::from_millis(now_ms)),
            webpki::KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| format!("the signing certificate does not chain to the trusted one: {e}"))?;
    }
    let mut signature = b64url(&jws.signature, "signature")?;
    if let Some(half) = fixed_ecdsa {
        signature = fixed_to_der(&signature, half)?;
    }
    let signing_input = format!("{}.{}", jws.protected, jws.payload);
    leaf.verify_signature(algorithm, signing_input.as_bytes(), &signature)
        .map_err(|_| "the signature does not verify with the signing certificate".to_string())
}

/// The verification algorithm of a JWS `alg`, and for ECDSA the length of each half of its
/// fixed-size signature (JWS's encoding; webpki takes ASN.1).
fn algorithm(alg: &str) -> Result<(&'static dyn SignatureVerificationAlgorithm, Option<usize>), String> {
    Ok(match alg {
        "PS256" => (webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY, None),
        "PS384" => (webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY, None),
        "PS512" => (webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY, None),
        "ES256" => (webpki::ring::ECDSA_P256_SHA256, Some(32)),
        "ES384" => (webpki::ring::ECDSA_P384_SHA384, Some(48)),
        other => return Err(format!("signature algorithm {other:?} is not supported")),
    })
}

/// An ECDSA signature `r || s` (each `half` bytes) as ASN.1 DER `SEQUENCE { r, s }`.
fn fixed_to_der(fixed: &[u8], half: usize) -> Result<Vec<u8>, String> {
    if fixed.len() != 2 * half {
        return Err(format!("an ECDSA signature here has {} bytes", 2 * half));
    }
    let integer = |bytes: &[u8]| {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
        let mut v = bytes[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let body = [integer(&fixed[..half]), integer(&fixed[half..])].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ecdsa_signatures_become_der() {
        let mut fixed = vec![0u8; 64];
        fixed[0] = 0x80; // r needs a leading zero
        fixed[63] = 1; // s is 1
        let der = fixed_to_der(&fixed, 32).expect("der");
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 1]);
        assert!(fixed_to_der(&fixed[..63], 32).is_err());
    }

    #[test]
    fn unknown_algorithms_are_refused() {
        assert!(algorithm("ES512").is_err());
        assert!(algorithm("none").is_err());
        assert!(algorithm("PS256").is_ok());
    }
}
