"""A DPoP client (RFC 9449) for the tests: a key, proofs made with a
standard JOSE library (PyPI `jwcrypto`, an implementation nobody here
wrote), and the proofs a broken or hostile client makes, built by hand."""

import base64
import hashlib
import hmac
import json
import time
import uuid

from jwcrypto import jwk, jws
from jwcrypto.common import json_encode

# alg -> how jwcrypto makes a key for it
KEY_TYPES = {
    "ES256": {"kty": "EC", "crv": "P-256"},
    "ES384": {"kty": "EC", "crv": "P-384"},
    "EdDSA": {"kty": "OKP", "crv": "Ed25519"},
    "RS256": {"kty": "RSA", "size": 2048},
    "PS256": {"kty": "RSA", "size": 2048},
}


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(token):
    return b64u(hashlib.sha256(token.encode()).digest())


class DpopKey:
    def __init__(self, alg="ES256"):
        self.alg = alg
        self.key = jwk.JWK.generate(**KEY_TYPES[alg])

    @property
    def public_jwk(self):
        return self.key.export_public(as_dict=True)

    @property
    def jkt(self):
        """The RFC 7638 thumbprint, as jwcrypto computes it."""
        return self.key.thumbprint()

    def claims(self, htm, htu, token=None, nonce=None, iat=None, jti=None):
        c = {"jti": jti or str(uuid.uuid4()), "htm": htm, "htu": htu,
             "iat": int(time.time()) if iat is None else iat}
        if token is not None:
            c["ath"] = ath(token)
        if nonce is not None:
            c["nonce"] = nonce
        return c

    def header(self):
        return {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk}

    def sign(self, header, claims):
        """A compact JWS of these header and claims, signed by this key with
        jwcrypto."""
        signed = jws.JWS(json_encode(claims).encode())
        signed.add_signature(self.key, alg=header["alg"], protected=json_encode(header))
        return signed.serialize(compact=True)

    def sign_text(self, header_text, claims_text):
        """A compact JWS of exactly these texts (duplicate keys and all),
        signed by this key with jwcrypto."""
        signed = jws.JWS(claims_text.encode())
        signed.add_signature(self.key, alg=self.alg, protected=header_text)
        return signed.serialize(compact=True)

    def proof(self, htm, htu, token=None, nonce=None, iat=None, jti=None, header=None, claims=None):
        """A proof for a request; `header` and `claims` (dicts) are merged
        over the normal ones (a value None removes the member)."""
        h = {**self.header(), **(header or {})}
        c = {**self.claims(htm, htu, token, nonce, iat, jti), **(claims or {})}
        h = {k: v for k, v in h.items() if v is not None}
        c = {k: v for k, v in c.items() if v is not None}
        return self.sign(h, c)


def raw_jws(header_text, claims_text, signature=b""):
    """A compact JWS of exactly these texts, with any signature bytes."""
    return f"{b64u(header_text)}.{b64u(claims_text)}.{b64u(signature)}"


def hs256(header, claims, secret):
    """A proof MACed with HS256 (which no resource server may accept)."""
    signing_input = f"{b64u(json.dumps(header))}.{b64u(json.dumps(claims))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64u(mac)}"
