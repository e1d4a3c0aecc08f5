"""A compute budget: MACs per image and / or batch-1 TFLite latency on this machine.

>>> budget = Budget(max_macs=20e6)
>>> budget.fits(macs=18e6)
True
"""

import dataclasses
import json
import os
import threading


@dataclasses.dataclass(frozen=True)
class Budget:
    max_macs: float | None = None  # MACs per image (None: no limit)
    max_latency_ms: float | None = None  # median batch-1 float32 TFLite latency, this machine

    def __post_init__(self):
        for name in ("max_macs", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")

    @property
    def needs_latency(self):
        return self.max_latency_ms is not None

    def fits(self, macs=None, latency_ms=None):
        """Whether a configuration of `macs` (and `latency_ms`, where limited) fits."""
        if self.max_macs is not None and (macs is None or macs > self.max_macs):
            return False
        if self.needs_latency and (latency_ms is None or latency_ms > self.max_latency_ms):
            return False
        return True

    def excess(self, macs=None, latency_ms=None):
        """Why a configuration does not fit, in words ("" when it does)."""
        parts = []
        if self.max_macs is not None and macs is not None and macs > self.max_macs:
            parts.append(f"{macs / 1e6:.3f} M MACs > budget {self.max_macs / 1e6:.3f} M")
        if self.needs_latency and latency_ms is not None and latency_ms > self.max_latency_ms:
            parts.append(f"{latency_ms:.3f} ms > budget {self.max_latency_ms:.3f} ms")
        return "; ".join(parts)

    def describe(self):
        parts = []
        if self.max_macs is not None:
            parts.append(f"{self.max_macs / 1e6:g} M MACs")
        if self.needs_latency:
            parts.append(f"{self.max_latency_ms:g} ms batch-1 TFLite latency")
        return " and ".join(parts) or "no budget"

    def to_json(self):
        return dataclasses.asdict(self)


class LatencyCache:
    """Measured latencies by configuration key, kept in a JSON file so that a resumed or
    repeated search measures each configuration once."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._values = {}
        if path and os.path.exists(path):
            with open(path) as f:
                self._values = json.load(f)

    def get(self, key, measure):
        """The cached latency of `key`, or `measure()` (then cached)."""
        with self._lock:
            if key not in self._values:
                self._values[key] = float(measure())
                if self.path:
                    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                    tmp = f"{self.path}.tmp"
                    with open(tmp, "w") as f:
                        json.dump(self._values, f, indent=1)
                    os.replace(tmp, self.path)
            return self._values[key]
