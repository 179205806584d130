"""A voice print's features in plain numpy: the speaker encoder's mel frames and the pitch.

Resemblyzer computes its mel frames with librosa, and librosa's pitch tracker (YIN) finds
its troughs with numba. Importing those parts of librosa compiles numba kernels into a
cache inside site-packages that every process shares: one process killed while writing
it left an install whose model processes segfaulted at every start after (issue 15).
These are the same computations, vectorised with numpy, so no process of the server
imports numba or reads or writes a JIT cache. tests/test_speakers.py holds them to
librosa's results.
"""

from __future__ import annotations

import numpy as np

# Resemblyzer's front end (resemblyzer/hparams.py): 25 ms windows every 10 ms, 40 mels.
ENCODER_RATE = 16_000
ENCODER_N_FFT = 400
ENCODER_HOP = 160
ENCODER_MELS = 40


def _frames(signal: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """Centred frames (zero-padded by half a frame each side), one per row."""
    padded = np.pad(signal, frame_length // 2)
    count = 1 + (len(padded) - frame_length) // hop
    return np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop][:count]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    hz = np.asanyarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = mel * (200.0 / 3)
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


def _mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular filters from 0 Hz to Nyquist, shape (n_mels, bins)."""
    bins_hz = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([rate / 2.0]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    return filters.astype(np.float32)


_ENCODER_FILTERS = _mel_filters(ENCODER_RATE, ENCODER_N_FFT, ENCODER_MELS)
_ENCODER_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(ENCODER_N_FFT) / ENCODER_N_FFT))


def encoder_mel_frames(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's `wav_to_mel_spectrogram`: power mel frames, shape (frames, 40).

    Args:
        wav: 16 kHz float32 mono audio.
    """
    frames = _frames(wav.astype(np.float32), ENCODER_N_FFT, ENCODER_HOP) * _ENCODER_WINDOW
    power = np.abs(np.fft.rfft(frames.astype(np.float32), axis=-1)) ** 2
    return (power.astype(np.float32) @ _ENCODER_FILTERS.T).astype(np.float32)


def yin_pitch(
    wav: np.ndarray, *, rate: int, fmin: float, fmax: float, frame_length: int, hop: int
) -> np.ndarray:
    """Per-frame fundamental frequency by YIN (de Cheveigné and Kawahara, 2002), in Hz.

    The steps and parameters of `librosa.yin` (threshold 0.1, parabolic refinement, the
    global minimum where no trough is deep enough), with centred frames.

    Args:
        wav: float mono audio.
        rate: its sample rate.
        fmin: the lowest pitch to look for.
        fmax: the highest pitch to look for.
        frame_length: samples per analysis frame.
        hop: samples between frames.
    """
    frames = _frames(wav.astype(np.float64), frame_length, hop)  # (n_frames, frame_length)
    min_period = int(np.floor(rate / fmax))
    max_period = min(int(np.ceil(rate / fmin)), frame_length - 1)
    # Autocorrelation by FFT, then the difference function
    # d(k) = 2 (r(0) - r(k)) - sum_{m<k} x(m)^2 and its cumulative mean normalisation.
    size = 1 << (2 * frame_length - 1).bit_length()
    acf = np.fft.irfft(np.abs(np.fft.rfft(frames, size, axis=-1)) ** 2, size, axis=-1)
    energy = np.cumsum(frames**2, axis=-1)
    lags = np.arange(1, max_period + 1)
    difference = 2 * (acf[:, :1] - acf[:, lags]) - energy[:, : max_period]
    cumulative_mean = np.cumsum(difference, axis=-1) / lags
    normalised = difference[:, min_period - 1 :] / (
        cumulative_mean[:, min_period - 1 :] + np.finfo(np.float64).tiny
    )
    # Parabolic refinement of every lag; none at the ends or beyond one lag.
    shifts = np.zeros_like(normalised)
    left, centre, right = normalised[:, :-2], normalised[:, 1:-1], normalised[:, 2:]
    curvature, slope = right + left - 2 * centre, (right - left) / 2
    refine = np.abs(slope) < np.abs(curvature)
    shifts[:, 1:-1] = np.where(refine, -slope / np.where(refine, curvature, 1.0), 0.0)
    # The first lag that is a local minimum below the threshold, else the global minimum.
    trough = np.zeros_like(normalised, dtype=bool)
    trough[:, 1:-1] = (centre < left) & (centre <= right)
    trough[:, 0] = normalised[:, 0] < normalised[:, 1]
    deep = trough & (normalised < 0.1)
    best = np.where(deep.any(axis=-1), deep.argmax(axis=-1), normalised.argmin(axis=-1))
    rows = np.arange(len(best))
    return rate / (min_period + best + shifts[rows, best])


def rms(wav: np.ndarray, *, frame_length: int, hop: int) -> np.ndarray:
    """Root-mean-square level of centred frames (`librosa.feature.rms`)."""
    frames = _frames(wav.astype(np.float64), frame_length, hop)
    return np.sqrt(np.mean(frames**2, axis=-1))
