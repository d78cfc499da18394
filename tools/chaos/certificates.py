"""Short-lived certificates made with `cryptography`, for brokers started by the fault harness and the tests.

A CA, and certificates it signs: a server's for IP 127.0.0.1 only (so `localhost` does not match
it, and hostname checks are exercised), or a client's. They live a day: long enough for any run.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyAndCertificate = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
LIFETIME = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + LIFETIME)
    )


def authority(common_name: str) -> KeyAndCertificate:
    """A self-signed CA that may sign certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def signed(by: KeyAndCertificate, common_name: str, server: bool) -> KeyAndCertificate:
    """A certificate `by` signs: for a server on 127.0.0.1, or for a client."""
    ca_key, ca_cert = by
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _builder(common_name, ca_cert.subject, key).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def broker_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, and a broker's key and certificate it signed in one PEM file (Kafka's PEM keystore); returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = authority("purchase-prediction test CA")
    key, cert = signed(ca, "broker", server=True)
    ca_path, keystore = directory / "ca.pem", directory / "keystore.pem"
    ca_path.write_bytes(cert_pem(ca[1]))
    keystore.write_bytes(key_pem(key) + cert_pem(cert))
    keystore.chmod(0o600)
    return ca_path, keystore
