"""One-time, short-lived stream tokens: HMAC-signed so any worker can check them.

The signature proves we issued the token for this call and that it is fresh; the
nonce is spent in the database on first use, so a replayed token is refused even
on another worker behind the same load balancer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass


class TokenError(ValueError):
    """A stream token that cannot be accepted; the message says why."""

    pass


@dataclass(frozen=True, kw_only=True)
class StreamToken:
    """What a stream token carries.

    Attributes:
        call_sid: The call it was issued for.
        nonce: Random and one-time: spent in the database when the stream claims the call.
        expires: Unix time, in seconds, after which `verify` refuses the token.
    """

    call_sid: str
    nonce: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: bytes, call_sid: str, ttl_s: float) -> tuple[str, StreamToken]:
    """Issue a signed token for `call_sid`, valid for `ttl_s` seconds.

    Returns:
        The token as text (`body.signature`, URL-safe base64), and what it carries; store
        its nonce with the call so that the stream can spend it.
    """
    expires = round(time.time() + ttl_s, 3)
    token = StreamToken(call_sid=call_sid, nonce=secrets.token_hex(16), expires=expires)
    body = f"{token.call_sid}|{token.nonce}|{token.expires:.3f}".encode()
    signature = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(signature)}", token


def verify(key: bytes, text: str | None) -> StreamToken:
    """Check a token's signature and expiry; what it carries.

    It neither compares the call SID nor spends the nonce: callers do both.

    Raises:
        TokenError: The token is missing, malformed, wrongly signed or expired.
    """
    if not text:
        raise TokenError("missing stream token")
    try:
        body_b64, signature_b64 = text.split(".", 1)
        body, signature = _unb64(body_b64), _unb64(signature_b64)
        call_sid, nonce, expires = body.decode().split("|")
        expiry = float(expires)
    except ValueError as exc:  # also covers bad base64 and bad UTF-8
        raise TokenError("malformed stream token") from exc
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), signature):
        raise TokenError("stream token signature is wrong")
    if time.time() > expiry:
        raise TokenError("stream token expired")
    return StreamToken(call_sid=call_sid, nonce=nonce, expires=expiry)
