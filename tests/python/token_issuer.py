"""A local token issuer for the bearer-token tests: an RSA key made with `cryptography`, its
public JWKS, and RS256 JWTs signed by hand (compact JWS, RFC 7515), so no JWT library is needed.

Tokens look like Entra ID access tokens for the ledger: `iss`, `aud`, `tid`, `oid`, `iat`,
`nbf`, `exp`.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://login.example.test/tenant-1/v2.0"
AUDIENCE = "https://confidential-ledger.azure.com"
TENANT = "tenant-1"
SCOPE = "https://confidential-ledger.azure.com/.default"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class LocalIssuer:
    """One RSA signing key (`kid`) and the tokens it signs."""

    def __init__(self, kid: str = "test-key-1"):
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid,
                          "n": _uint(numbers.n), "e": _uint(numbers.e)}]}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def token(self, oid: str, *, lifetime: int = 3600, not_before: int = -10, **overrides) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "tid": TENANT, "oid": oid,
                  "iat": now - 10, "nbf": now + not_before, "exp": now + lifetime}
        claims.update(overrides)
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = (_b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())).encode()
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + _b64(signature)


class StaticTokenCredential:
    """An azure-core `TokenCredential` (`get_token(*scopes, **kwargs) -> AccessToken`) that
    returns a fixed token; records the scopes it was asked for."""

    def __init__(self, token: str, expires_on: int | None = None):
        self._token = token
        self._expires_on = expires_on if expires_on is not None else int(time.time()) + 3600
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self._token, self._expires_on)
