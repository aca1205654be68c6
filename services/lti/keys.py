"""The tool's own key pair: it signs the tool's service requests to platforms (the NRPS
token request, RFC 7523) and its public half is the tool's JWKS, which platforms fetch.

The ``kid`` is the key's RFC 7638 thumbprint, so the same key always has the same id and a
rotated key a new one; previous public keys stay published until platforms' caches move on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def _public_jwk(public: rsa.RSAPublicKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(public))
    # RFC 7638: the required members, lexicographic order, no whitespace.
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return {"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "kid": kid, "alg": "RS256", "use": "sig"}


class ToolKeys:
    def __init__(
        self, private: rsa.RSAPrivateKey, previous: tuple[rsa.RSAPublicKey, ...] = ()
    ) -> None:
        self._private = private
        self._current = _public_jwk(private.public_key())
        self._jwks = {"keys": [self._current, *(_public_jwk(key) for key in previous)]}

    @classmethod
    def load(cls, private_key_file: str | None, previous_files: list[str]) -> ToolKeys:
        if private_key_file is None:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            loaded = serialization.load_pem_private_key(
                Path(private_key_file).read_bytes(), password=None
            )
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError(f"{private_key_file}: an RSA private key is needed (RS256)")
            private = loaded
        previous = []
        for name in previous_files:
            public = serialization.load_pem_public_key(Path(name).read_bytes())
            if not isinstance(public, rsa.RSAPublicKey):
                raise ValueError(f"{name}: an RSA public key is needed (RS256)")
            previous.append(public)
        return cls(private, tuple(previous))

    @property
    def kid(self) -> str:
        return str(self._current["kid"])

    def jwks(self) -> dict[str, Any]:
        return self._jwks

    def client_assertion(self, client_id: str, token_url: str, *, ttl_s: int = 300) -> str:
        """The JWT that authenticates this tool at a platform's token endpoint (RFC 7523)."""
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self.kid})
