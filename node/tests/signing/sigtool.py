#!/usr/bin/env python3
"""An independent implementation of the signatures Keelson checks and makes, for its tests.

Built on the `cryptography` package only (no Keelson code): cosign-format ECDSA P-256 keys and
signatures over simple-signing payloads, and Notary Project (notation) JWS envelopes signed by
a leaf certificate with the code-signing EKU under a test CA.

  sigtool.py keygen PRIV PUB              write a P-256 key pair (PKCS#8 / SubjectPublicKeyInfo PEM)
  sigtool.py sign PRIV FILE               print the base64 DER ECDSA-SHA256 signature of FILE
  sigtool.py verify PUB FILE SIG_B64      exit 0 when SIG verifies FILE under PUB, else 1
  sigtool.py notation-ca DIR NAME         write DIR/NAME-ca.pem, DIR/NAME-leaf.pem, DIR/NAME-leaf.key
  sigtool.py notation-sign DIR NAME DESC  print a JWS envelope signing descriptor file DESC
"""
import base64
import datetime
import json
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def load_private(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def keygen(priv_path, pub_path):
    key = ec.generate_private_key(ec.SECP256R1())
    with open(priv_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(pub_path, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def sign(priv_path, file_path):
    with open(file_path, "rb") as f:
        data = f.read()
    signature = load_private(priv_path).sign(data, ec.ECDSA(hashes.SHA256()))
    print(base64.b64encode(signature).decode())


def verify(pub_path, file_path, sig_b64):
    with open(pub_path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    with open(file_path, "rb") as f:
        data = f.read()
    try:
        key.verify(base64.b64decode(sig_b64), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        print("signature does not verify")
        return 1
    print("verified")
    return 0


def name(common):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def notation_ca(directory, label):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder()
          .subject_name(name(f"{label} test CA")).issuer_name(name(f"{label} test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(name(f"{label} signer")).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    for suffix, data in [("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
                         ("leaf.pem", leaf.public_bytes(serialization.Encoding.PEM)),
                         ("leaf.key", leaf_key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))]:
        with open(f"{directory}/{label}-{suffix}", "wb") as f:
            f.write(data)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def notation_sign(directory, label, descriptor_path):
    with open(descriptor_path) as f:
        descriptor = json.load(f)
    key = load_private(f"{directory}/{label}-leaf.key")
    with open(f"{directory}/{label}-leaf.pem", "rb") as f:
        leaf = x509.load_pem_x509_certificate(f.read())
    with open(f"{directory}/{label}-ca.pem", "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    signing_time = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    protected = {
        "alg": "ES256",
        "crit": ["io.cncf.notary.signingScheme"],
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": signing_time,
    }
    payload = {"targetArtifact": descriptor}
    protected_b64 = b64url(json.dumps(protected).encode())
    payload_b64 = b64url(json.dumps(payload).encode())
    der = key.sign(f"{protected_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    envelope = {
        "payload": payload_b64,
        "protected": protected_b64,
        "header": {
            "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in (leaf, ca)],
            "io.cncf.notary.signingAgent": "keelson-test-sigtool",
        },
        "signature": b64url(raw),
    }
    print(json.dumps(envelope))


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "keygen":
        keygen(*args)
    elif command == "sign":
        sign(*args)
    elif command == "verify":
        return verify(*args)
    elif command == "notation-ca":
        notation_ca(*args)
    elif command == "notation-sign":
        notation_sign(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
