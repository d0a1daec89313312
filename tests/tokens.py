"""Keys and tokens minted by the tests (an issuer under the tests' control)."""

import base64
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def b64u(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class RsaKey:
    def __init__(self, kid):
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        nums = self.private.public_key().public_numbers()
        self.jwk = {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64u(nums.n), "e": b64u(nums.e)}

    def sign(self, claims, alg="RS256", headers=None):
        h = {"kid": self.kid, **(headers or {})}
        return jwt.encode(claims, self.private, algorithm=alg, headers=h)


class EcKey:
    def __init__(self, kid):
        self.kid = kid
        self.private = ec.generate_private_key(ec.SECP256R1())
        nums = self.private.public_key().public_numbers()
        pad = lambda n: base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()
        self.jwk = {"kty": "EC", "kid": kid, "crv": "P-256", "x": pad(nums.x), "y": pad(nums.y)}

    def sign(self, claims, headers=None):
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"kid": self.kid, **(headers or {})})


def jwks(*keys):
    return {"keys": [k.jwk for k in keys]}


def claims(issuer, audience, sub="alice", roles=(), scope="", ttl=300, **extra):
    now = int(time.time())
    c = {"iss": issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + ttl,
         "client_id": "test-client", "realm_access": {"roles": list(roles)}}
    if scope:
        c["scope"] = scope
    c.update(extra)
    return c
