"""How one caller turn sounded: pitch, loudness, rate and pauses, in plain numpy.

The caller's audio reaches the pipeline as 16 kHz int16 PCM, but on a phone call it came
over an 8 kHz μ-law line, so nothing above 4 kHz carries information. The analysis runs
at 8 kHz (half the samples, a quarter of the pitch tracker's work) with 40 ms frames
every 10 ms. A 3 s turn costs a few milliseconds; there is no model and no numba.

These are absolute measurements of one turn. Whether they mean "agitated" depends on the
caller: `callwright.agent.emotion.CallerMood` compares them with the caller's own earlier
turns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callwright.agent.voice_features import yin_pitch

INPUT_RATE = 16_000
ANALYSIS_RATE = 8_000
FRAME = 320  # 40 ms: two periods of the lowest pitch searched, as YIN needs
HOP = 80  # 10 ms: the level contour, fine enough to find syllables
HOP_S = HOP / ANALYSIS_RATE
PITCH_STEP = 2  # pitch every other frame (20 ms): half YIN's cost, plenty for statistics
FMIN_HZ = 60.0
FMAX_HZ = 400.0

# A frame is speech when it is within SPEECH_RANGE_DB of the turn's loud frames (95th
# percentile) and above ABSOLUTE_FLOOR_DB: line noise and breaths sit lower than that.
SPEECH_RANGE_DB = 25.0
ABSOLUTE_FLOOR_DB = -55.0
# Voiced: the normalised autocorrelation at the pitch period YIN found. Unvoiced
# consonants and noise stay well below; μ-law quantisation costs voiced frames a little.
VOICING_NACF = 0.6
# Pitch frames further than this from the turn's median are octave errors, not range.
OCTAVE_ERROR_ST = 10.0
# Syllable nuclei (after de Jong and Wempe, 2009): peaks of the smoothed level contour in
# voiced speech, each with a dip of at least NUCLEUS_DIP_DB before it, at least
# NUCLEUS_GAP_S after the last.
NUCLEUS_DIP_DB = 2.0
NUCLEUS_GAP_S = 0.05
SMOOTH_FRAMES = 5  # 50 ms
# Gaps in speech shorter than this are stop closures inside words, not pauses.
MIN_PAUSE_S = 0.15
# Below this much voiced speech there is nothing to judge.
MIN_VOICED_S = 0.25


@dataclass(frozen=True, kw_only=True)
class Prosody:
    """Audio features of one caller turn.

    Attributes:
        pitch_hz: median fundamental frequency of the voiced frames; 0 when none.
        pitch_range_st: spread of the pitch, 90th minus 10th percentile, in semitones.
        energy_db: mean level of the speech frames in dB full scale; -100 when none.
        rate_hz: syllable nuclei per second of speech (pauses excluded).
        pause_ratio: share of the time from the first to the last speech frame spent in
            pauses of at least MIN_PAUSE_S.
        speech_s: seconds of speech frames (voiced or not).
        voiced_s: seconds of voiced frames; below MIN_VOICED_S the turn carries no audio
            evidence.
    """

    pitch_hz: float = 0.0
    pitch_range_st: float = 0.0
    energy_db: float = -100.0
    rate_hz: float = 0.0
    pause_ratio: float = 0.0
    speech_s: float = 0.0
    voiced_s: float = 0.0

    @property
    def usable(self) -> bool:
        """Whether there was enough voiced speech to judge how it sounded."""
        return self.voiced_s >= MIN_VOICED_S and self.pitch_hz > 0


SILENT = Prosody()


def _frames(signal: np.ndarray) -> np.ndarray:
    """Centred frames, one per row (as in voice_features, so rows match yin_pitch's)."""
    padded = np.pad(signal, FRAME // 2)
    count = 1 + (len(padded) - FRAME) // HOP
    return np.lib.stride_tricks.sliding_window_view(padded, FRAME)[::HOP][:count]


def _periodicity(frames: np.ndarray, f0: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of each frame with itself one pitch period later."""
    lag = np.clip(np.rint(ANALYSIS_RATE / f0).astype(int), 1, FRAME - 1)
    index = np.arange(FRAME)
    later = np.minimum(index[None, :] + lag[:, None], FRAME - 1)
    inside = index[None, :] < FRAME - lag[:, None]
    head = np.where(inside, frames, 0.0)
    tail = np.take_along_axis(frames, later, axis=-1) * inside
    energy = np.sum(head**2, axis=-1) * np.sum(tail**2, axis=-1)
    return np.sum(head * tail, axis=-1) / np.sqrt(energy + 1e-20)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True, end exclusive."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _nuclei(level_db: np.ndarray, voiced: np.ndarray) -> int:
    """Count syllable nuclei: voiced peaks of the level contour with a dip before them."""
    smooth = np.convolve(level_db, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="same")
    inner = smooth[1:-1]
    peaks = np.flatnonzero((inner > smooth[:-2]) & (inner >= smooth[2:])) + 1
    peaks = peaks[voiced[peaks]]
    count, last = 0, -1
    gap = int(round(NUCLEUS_GAP_S / HOP_S))
    for peak in peaks:
        if last < 0:
            count, last = 1, peak
            continue
        dip = smooth[last : peak + 1].min()
        if peak - last >= gap and smooth[peak] - dip >= NUCLEUS_DIP_DB:
            count, last = count + 1, peak
        elif smooth[peak] > smooth[last]:
            last = peak  # the same syllable, rising further: measure dips from its top
    return count


def prosody(audio: bytes) -> Prosody:
    """Measure one caller turn.

    Args:
        audio: 16 kHz mono int16 PCM (the pipeline's caller audio).

    Returns:
        The turn's features; `SILENT` (voiced_s 0) for silence or audio too short to judge.
    """
    samples = np.frombuffer(audio[: len(audio) // 2 * 2], dtype=np.int16)
    if len(samples) < 2 * FRAME * (INPUT_RATE // ANALYSIS_RATE):
        return SILENT
    wav = samples.astype(np.float64) / 32768.0
    # Down to 8 kHz by averaging pairs: the line left nothing above 4 kHz, and the average
    # is low-pass enough that WebRTC callers' upper band does not alias into the pitch.
    wav = 0.5 * (wav[0 : len(wav) - 1 : 2] + wav[1::2])
    frames = _frames(wav)
    level_db = 10 * np.log10(np.mean(frames**2, axis=-1) + 1e-12)
    threshold = max(ABSOLUTE_FLOOR_DB, float(np.percentile(level_db, 95)) - SPEECH_RANGE_DB)
    speech = level_db > threshold
    if not speech.any():
        return SILENT

    # Pitch frame k is level frame PITCH_STEP * k: both are centred, of the same length.
    f0 = yin_pitch(wav, rate=ANALYSIS_RATE, fmin=FMIN_HZ, fmax=FMAX_HZ, frame_length=FRAME,
                   hop=HOP * PITCH_STEP)
    f0 = np.repeat(f0, PITCH_STEP)[: len(frames)]
    voiced = speech & (f0 >= FMIN_HZ) & (f0 <= FMAX_HZ)
    voiced[1::PITCH_STEP] = False  # judged with their pitch frame, just before
    voiced[voiced] = _periodicity(frames[voiced], f0[voiced]) > VOICING_NACF
    voiced[1::PITCH_STEP] = voiced[:-1:PITCH_STEP][: len(voiced[1::PITCH_STEP])]
    voiced &= speech
    semitones = 12 * np.log2(f0[voiced] / 100.0) if voiced.any() else np.zeros(0)
    if len(semitones):
        centre = np.median(semitones)
        keep = np.abs(semitones - centre) < OCTAVE_ERROR_ST
        voiced[np.flatnonzero(voiced)[~keep]] = False
        semitones = semitones[keep]
    voiced_s = float(voiced.sum() * HOP_S)
    speech_s = float(speech.sum() * HOP_S)
    energy_db = float(10 * np.log10(np.mean(10 ** (level_db[speech] / 10))))
    if voiced_s < MIN_VOICED_S:
        return Prosody(energy_db=energy_db, speech_s=speech_s, voiced_s=voiced_s)

    p10, p50, p90 = np.percentile(semitones, [10, 50, 90])
    first, last = np.flatnonzero(speech)[[0, -1]]
    min_pause = int(round(MIN_PAUSE_S / HOP_S))
    paused = sum(e - s for s, e in _runs(~speech[first : last + 1]) if e - s >= min_pause)
    return Prosody(
        pitch_hz=float(100.0 * 2 ** (p50 / 12)),
        pitch_range_st=float(p90 - p10),
        energy_db=energy_db,
        rate_hz=_nuclei(level_db, voiced) / speech_s,
        pause_ratio=float(paused / (last - first + 1)),
        speech_s=speech_s,
        voiced_s=voiced_s,
    )
