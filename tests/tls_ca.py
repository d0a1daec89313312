"""Certificate authorities made at test time (with `cryptography`), and TLS
server contexts for the tests' own servers: a test issuer serves its keys
over HTTPS with a certificate one of these CAs signed, and Envoy trusts (or
does not trust) that CA. Nothing here is stored: every run makes new keys."""

import datetime
import os
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ONE_DAY = datetime.timedelta(days=1)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Authority:
    """A root CA (EC P-256) that signs server certificates for DNS names."""

    def __init__(self, common_name):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder()
                     .subject_name(_name(common_name)).issuer_name(_name(common_name))
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - ONE_DAY).not_valid_after(now + ONE_DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self):
        """The CA certificate, PEM: what a trust bundle holds."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, dns_name):
        """A server certificate for `dns_name`: (certificate PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(_name(dns_name)).issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - ONE_DAY).not_valid_after(now + ONE_DAY)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def server_context(ca, dns_name):
    """A TLS server context presenting a certificate `ca` issued for
    `dns_name`."""
    cert, key = ca.issue(dns_name)
    directory = tempfile.mkdtemp(prefix="mcp-authz-tls-")
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert)
    with open(key_path, "wb") as f:
        f.write(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
