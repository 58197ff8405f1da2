"""Summaries of repeated measurements. Pure."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile by the nearest-rank method (p95 of 20 samples is the 19th smallest)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Timing:
    """Seconds taken by repeated runs of one thing."""

    runs: int
    median: float
    p95: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        if not samples:
            raise ValueError("no samples")
        return cls(
            runs=len(samples),
            median=statistics.median(samples),
            p95=percentile(samples, 0.95),
            minimum=min(samples),
            maximum=max(samples),
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "runs": self.runs,
            "median_seconds": self.median,
            "p95_seconds": self.p95,
            "min_seconds": self.minimum,
            "max_seconds": self.maximum,
        }
