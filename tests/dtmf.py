"""A DTMF decoder for tests (Goertzel, ITU-T Q.23 frequencies), independent of pipecat."""

from __future__ import annotations

import numpy as np

RATE = 8000
BLOCK = 320  # 40 ms
ROWS = (697, 770, 852, 941)
COLS = (1209, 1336, 1477, 1633)
KEYS = ("123A", "456B", "789C", "*0#D")


def _power(block: np.ndarray, freq: float) -> float:
    """Goertzel: the block's power at `freq`, on the same scale as its total energy."""
    coeff = 2 * np.cos(2 * np.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2 / len(block)


def key_at(block: np.ndarray) -> str | None:
    """The key whose two tones carry most of this block's energy, if any."""
    energy = float(np.sum(block**2))
    if energy < len(block) * 300.0**2:  # too quiet to be a tone
        return None
    rows = [_power(block, f) for f in ROWS]
    cols = [_power(block, f) for f in COLS]
    r, c = int(np.argmax(rows)), int(np.argmax(cols))
    if rows[r] + cols[c] < 0.7 * energy:  # speech or noise, not a pure tone pair
        return None
    if not 0.25 < rows[r] / cols[c] < 4.0:  # twist: the two tones have similar levels
        return None
    return KEYS[r][c]


def decode(pcm8k: bytes) -> list[tuple[str, float, float]]:
    """(key, start s, end s) of each tone held for at least two blocks (80 ms)."""
    samples = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float64)
    found: list[tuple[str, float, float]] = []
    run_key, run_start, run_len = None, 0, 0
    for i in range(0, len(samples) - BLOCK + 1, BLOCK):
        key = key_at(samples[i : i + BLOCK])
        if key == run_key:
            run_len += 1
            continue
        if run_key and run_len >= 2:
            found.append((run_key, run_start / RATE, i / RATE))
        run_key, run_start, run_len = key, i, 1
    if run_key and run_len >= 2:
        found.append((run_key, run_start / RATE, len(samples) / RATE))
    return found
