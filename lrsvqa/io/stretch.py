"""Per-band contrast stretch of non-uint8 data to uint8."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BandStretch:
    """Linear map of one band from [low, high] to [0, 255]; ``None`` means constant → 0."""

    low: float | None
    high: float | None

    @property
    def constant(self) -> bool:
        return self.low is None or self.high is None or not self.high > self.low

    def apply(self, values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """Map ``values`` to uint8; invalid pixels (nodata, NaN) and constant bands give 0.

        ``valid=None``: every pixel is valid."""
        out = np.zeros(values.shape, dtype=np.uint8)
        if self.constant:
            return out
        assert self.low is not None and self.high is not None
        scaled = (values.astype(np.float64, copy=False) - self.low) * (
            255.0 / (self.high - self.low)
        )
        if valid is not None:
            scaled[~valid] = 0.0  # NaN and nodata never reach the cast
        np.clip(scaled, 0.0, 255.0, out=scaled)
        if valid is None:
            np.rint(scaled, out=scaled)
            out[...] = scaled
        else:
            np.copyto(out, np.rint(scaled).astype(np.uint8), where=valid)
        return out


def percentile_stretch(
    sample: np.ndarray, valid: np.ndarray | None, low_pct: float = 2.0, high_pct: float = 98.0
) -> BandStretch:
    """Stretch statistics of one band from a sample (an overview or decimated read)."""
    values = sample.ravel() if valid is None else sample[valid]
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return BandStretch(None, None)
    low, high = np.percentile(values, [low_pct, high_pct])
    if not high > low:
        # A nearly constant band: fall back to the full range before giving up.
        low, high = float(values.min()), float(values.max())
    if not high > low:
        return BandStretch(None, None)
    return BandStretch(float(low), float(high))
