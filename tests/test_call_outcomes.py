"""Each call's outcome from how it ended, the emotion trajectory, and webhook signatures."""

import hashlib
import hmac
import re
import time
from types import SimpleNamespace

import pytest

from callwright.memory.outcomes import END_REASONS, OUTCOMES, call_outcome, emotion_trajectory
from callwright.webhooks import sign, verify_signature
from tests.support import ROOT

# Twilio's statuses that end a call (telephony/twilio/routes.py), read without importing it.
TERMINAL_STATUSES = set(re.findall(r'"([a-z-]+)"', re.search(
    r"TERMINAL_STATUSES = \{([^}]*)\}",
    (ROOT / "telephony" / "twilio" / "routes.py").read_text()).group(1)))

SECRET = "whsec-test-" + "5" * 16
# The status each transport stores with each end reason (telephony/, callwright/cluster.py).
STORED = {
    "agent-hangup": ("completed", "resolved"),
    "caller-hangup": ("completed", "abandoned"),
    "idle-timeout": ("completed", "abandoned"),
    "transferred": ("completed", "transferred"),
    "voicemail": ("completed", "voicemail"),
    "pipeline-error": ("failed", "failed"),
    "stream-dropped": ("failed", "failed"),
    "no-connection": ("failed", "failed"),
    "server-stopped": ("interrupted", "failed"),
    "server-shutdown": ("completed", "failed"),
    "worker-lost": ("interrupted", "failed"),
    **{f"twilio-{s}": (s, "failed") for s in TERMINAL_STATUSES},
}


def _reasons_in_source() -> set[str]:
    """End reasons written in the code: `reason = "…"`, `status, reason = "…", "…"`,
    `ended_by or "…"`, `reason: str = "…"`, and the Twilio status callback's."""
    found = set()
    assignment = re.compile(  # the right-hand side all literals, to the end of the line
        r'(?:\breason\b|\bended_by\b)(?:\s*:\s*str)?\s*(?:=(?!=)|\bor\b)[ \t]*'
        r'((?:"[^"]*"[ \t]*,[ \t]*)*"[^"]*")[ \t),]*$', re.MULTILINE)
    files = [*(ROOT / "telephony").rglob("*.py"), *(ROOT / "callwright").rglob("*.py"),
             ROOT / "memory" / "store.py"]
    for path in files:
        text = path.read_text()
        for match in assignment.finditer(text):
            found.add(re.findall(r'"([^"]*)"', match.group(1))[-1])
        found.update(re.findall(r'_store_finish\([^)]*"([a-z-]+)"\)', text))
        if 'reason=f"twilio-{call_status}"' in text:
            found.update(f"twilio-{s}" for s in TERMINAL_STATUSES)
    return found


def test_every_end_reason_in_the_code_has_an_outcome():
    in_code = _reasons_in_source()
    assert set(STORED) <= in_code, set(STORED) - in_code  # the scan finds them all
    assert in_code <= set(END_REASONS), f"no outcome for: {in_code - set(END_REASONS)}"
    assert set(END_REASONS.values()) <= set(OUTCOMES)


@pytest.mark.parametrize("reason", sorted(STORED))
def test_outcome_of_each_end_reason(reason):
    status, expected = STORED[reason]
    assert call_outcome(status=status, end_reason=reason) == expected
    # What the flow set wins over every end.
    assert call_outcome(status=status, end_reason=reason, flow_outcome="booked") == "booked"


def test_transfer_and_answering_machines_come_first():
    assert call_outcome(status="completed", end_reason="agent-hangup",
                        transferred_to="+15550001111") == "transferred"
    # A machine that hung up after the message was left, or a call we hung up on a machine.
    for reason in ("caller-hangup", "agent-hangup", "twilio-completed"):
        assert call_outcome(status="completed", end_reason=reason,
                            answered_by="machine_end_beep") == "voicemail"
    assert call_outcome(status="completed", end_reason="agent-hangup",
                        answered_by="human") == "resolved"
    assert call_outcome(status="completed", end_reason="caller-hangup",
                        answered_by="fax") == "failed"
    assert call_outcome(status="busy", end_reason="twilio-busy") == "failed"
    # Unknown reasons: by status.
    assert call_outcome(status="completed", end_reason="something-new") == "resolved"
    assert call_outcome(status="failed", end_reason="something-new") == "failed"
    assert call_outcome(status="completed", end_reason=None) == "resolved"


def test_emotion_trajectory():
    def turn(seq, speaker, emotion=None, arousal=None, valence=None):
        return SimpleNamespace(seq=seq, speaker=speaker, start_ms=seq * 1000, emotion=emotion,
                               arousal=arousal, valence=valence)

    turns = [turn(3, "caller", "frustrated", 0.7, -0.6), turn(0, "agent"),
             turn(1, "caller", "neutral", 0.1, 0.0), turn(4, "agent"), turn(5, "caller"),
             turn(2, "agent")]
    trajectory = emotion_trajectory(turns)
    assert trajectory["turns"] == [
        {"seq": 1, "start_ms": 1000, "emotion": "neutral", "arousal": 0.1, "valence": 0.0},
        {"seq": 3, "start_ms": 3000, "emotion": "frustrated", "arousal": 0.7, "valence": -0.6},
        {"seq": 5, "start_ms": 5000, "emotion": None, "arousal": None, "valence": None},
    ]
    assert trajectory["counts"] == {"neutral": 1, "positive": 0, "frustrated": 1, "sad": 0}
    assert trajectory["last"] == "frustrated"
    assert emotion_trajectory([])["last"] is None


def test_signatures():
    body = b'{"event":"call.ended","delivery_id":"d1"}'
    header = sign(SECRET, body)
    assert verify_signature(SECRET, header, body)
    assert verify_signature(SECRET.encode(), header, body.decode())  # bytes or str alike
    # Forged: another secret, another body, a made-up or missing signature.
    assert not verify_signature("another-secret-0000000", header, body)
    assert not verify_signature(SECRET, header, body + b" ")
    assert not verify_signature(SECRET, header.split(",v1=")[0] + ",v1=" + "0" * 64, body)
    for bad in (None, "", "v1=abc", "t=abc,v1=def", f"t={int(time.time())}", "garbage"):
        assert not verify_signature(SECRET, bad, body), bad
    # Expired (or from the future): outside the tolerance.
    old = sign(SECRET, body, timestamp=int(time.time()) - 301)
    assert not verify_signature(SECRET, old, body)
    assert verify_signature(SECRET, old, body, tolerance_s=600)
    assert not verify_signature(SECRET, sign(SECRET, body, timestamp=int(time.time()) + 400),
                                body)
    # The timestamp is signed: moving it breaks the signature.
    t, v1 = header.split(",")
    assert not verify_signature(SECRET, f"t={int(t[2:]) - 1},{v1}", body)
    # Several v1 entries (a secret being rotated): one match suffices.
    rotated = f"{header},v1={'f' * 64}"
    assert verify_signature(SECRET, rotated, body)
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, timestamp=1700000000) == f"t=1700000000,v1={expected}"
