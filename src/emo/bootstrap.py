"""Resampling the examples of one split (the bootstrap): how often each example is drawn in each of `draws` resamples,
and the 95 % percentile interval of a statistic over them. Every interval emo reports comes from here: the paired
comparison of runs (`emo.analysis`), ECE (`emo.calibration`), prediction sets (`emo.fit.prediction_sets`)."""

import numpy as np


def bootstrap_weights(n: int, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """Shape (draws + 1, n): row 0 is the split itself (every example once), each other row a resample of it."""
    generator = np.random.default_rng(seed)
    return np.vstack([np.ones(n), generator.multinomial(n, np.full(n, 1 / n), size=draws)])


def percentile_interval(statistic: np.ndarray) -> tuple[float, float]:
    """The 95 % percentile interval of a statistic computed on each row of `bootstrap_weights` (row 0 left out)."""
    low, high = np.percentile(statistic[1:], [2.5, 97.5])
    return float(low), float(high)
