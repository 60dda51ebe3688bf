"""Kraken REST request signing (API-Sign).

API-Sign = base64(HMAC-SHA512(key=base64decode(secret), msg=uri_path + SHA256(nonce + postdata)))
where ``postdata`` is the exact url-encoded body sent (it contains ``nonce=...`` too).
Used by the client to sign and by the simulator to verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = ["sign", "verify"]


def sign(uri_path: str, nonce: str | int, postdata: str, secret_b64: str) -> str:
    """Return the API-Sign header value for one private request."""
    try:
        key = base64.b64decode(secret_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        # never include the secret itself in the message
        raise ValueError("API secret is not valid base64") from exc
    sha = hashlib.sha256((str(nonce) + postdata).encode()).digest()
    mac = hmac.new(key, uri_path.encode() + sha, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def verify(uri_path: str, nonce: str | int, postdata: str, secret_b64: str, signature: str) -> bool:
    """True when ``signature`` is the right API-Sign for this request (constant-time compare)."""
    try:
        expected = sign(uri_path, nonce, postdata, secret_b64)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)
