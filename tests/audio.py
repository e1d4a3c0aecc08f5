"""Audio the speech tests make: tones, chirps and WAV files."""

import os

import numpy as np
import scipy.io.wavfile

RATE = 16000


def tone(freq, seconds, rate=RATE, amplitude=0.5, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = amplitude * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        # Channel 2 is the same tone with a phase that keeps the mono mix a pure tone.
        x = np.stack([x, amplitude * np.sin(2 * np.pi * freq * t + 0.3)], axis=1)
    return (x * 32767).astype(np.int16)


def chirp(start_hz, seconds, rate=RATE, sweep_hz=3000.0):
    """A linear chirp from `start_hz` (features that change over time, unlike a tone's, which
    normalise to ~0)."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * (start_hz + sweep_hz / (2 * seconds) * t) * t)
    return (x * 32767).astype(np.int16)


def write(path, rate, samples):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.wavfile.write(path, rate, samples)
    return path
