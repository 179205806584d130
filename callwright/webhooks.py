"""How business webhooks are signed, and how a receiver checks them.

Every delivery carries `Callwright-Signature: t=<unix time>,v1=<hex>`, where the hex is
HMAC-SHA256, keyed with WEBHOOK_SECRET, over `"<t>."` followed by the exact bytes of the
body (Stripe's scheme). A receiver recomputes it with `verify_signature` and refuses
anything else; the timestamp bounds how long a captured request could be replayed, and
`Callwright-Delivery` (the same on every retry) lets it drop a delivery it has seen.

This module needs only the standard library, so receivers can copy it as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Callwright-Signature"
DELIVERY_HEADER = "Callwright-Delivery"  # one id per event and URL, kept across retries
EVENT_HEADER = "Callwright-Event"  # call.ended
ATTEMPT_HEADER = "Callwright-Attempt"  # 1 for the first try
DEFAULT_TOLERANCE_S = 300


def sign(secret: str | bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """The `Callwright-Signature` header value for `body`.

    Args:
        secret: The shared signing secret (WEBHOOK_SECRET).
        body: The exact bytes sent.
        timestamp: Unix time to sign at; now by default.

    Returns:
        `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>`.
    """
    at = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={at},v1={_mac(secret, at, body)}"


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes | str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> bool:
    """Whether `header` is a valid `Callwright-Signature` of `body` made recently.

    Args:
        secret: The shared signing secret (WEBHOOK_SECRET on the callwright side).
        header: The request's `Callwright-Signature` header (None when it had none).
        body: The request body exactly as received (bytes; a str is taken as UTF-8). Do
            not parse and re-serialise the JSON first: the signature covers the bytes.
        tolerance_s: How far the signature's timestamp may be from now, in seconds, either
            way; older ones are refused as possible replays.
        now: Unix time to check against; the clock by default.

    Returns:
        True when the header parses, its timestamp is within `tolerance_s` of `now`, and
        one of its `v1` signatures matches (compared in constant time). Several `v1`
        entries are allowed, as when a sender signs with an old and a new secret.
    """
    if not header:
        return False
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body.encode() if isinstance(body, str) else body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


def _mac(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
