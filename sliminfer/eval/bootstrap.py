"""Percentile bootstrap intervals for accuracy means: how far a score could move with other samples.

Why a bootstrap and why this one: per-sample scores are bounded, often 0/1, and a comparison of
configs reads a difference of a few points at 100 samples, which is noise unless an interval says
otherwise; the percentile bootstrap needs no normality assumption. The generator is seeded, so a
report is reproducible, and it draws positions (not values): configs with the same number of samples
get the SAME resamples, i.e. their intervals are paired, as their samples are.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sliminfer.core.errors import ConfigError

RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A mean with its percentile-bootstrap interval and the number of samples behind it."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (e.g. x100 for percent)."""
        return Estimate(self.mean * factor, self.low * factor, self.high * factor, self.n, self.confidence)

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "confidence": self.confidence}


def bootstrap_mean(groups: Sequence[Sequence[float]], resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                   seed: int = SEED) -> Estimate:
    """The mean of the groups' means, with a percentile bootstrap interval.

    One group is the plain sample mean. Several groups (one per task) give the mean over tasks, each
    task weighted equally whatever its sample count; each resample redraws every group from itself,
    with replacement. The interval's ends are the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of the resampled statistics, linearly interpolated between order statistics (numpy's
    default percentile method).
    """
    if not groups or any(len(g) == 0 for g in groups):
        raise ConfigError("bootstrap samples", [len(g) for g in groups], "every group needs at least one value")
    if resamples < 1:
        raise ConfigError("bootstrap resamples", resamples, "must be at least 1")
    if not 0.0 < confidence < 1.0:
        raise ConfigError("bootstrap confidence", confidence, "must lie strictly between 0 and 1")
    rng = random.Random(seed)
    statistic = _mean_of_means(groups)
    draws = sorted(_mean_of_means([rng.choices(g, k=len(g)) for g in groups]) for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    return Estimate(statistic, _quantile(draws, tail), _quantile(draws, 1.0 - tail), sum(map(len, groups)),
                    confidence)


def _mean_of_means(groups: Sequence[Sequence[float]]) -> float:
    return math.fsum(math.fsum(g) / len(g) for g in groups) / len(groups)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linear between order statistics."""
    h = (len(ordered) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])
