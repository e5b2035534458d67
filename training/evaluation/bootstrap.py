"""Bootstrap over documents: confidence intervals and paired tests from per-document counts.

Match counts (tp/fp/fn, or MUC's correct/incorrect/...) are computed once per document. A
bootstrap sample is then a vector of document weights (how often each document was drawn),
so the counts of all samples are one matrix product and every score is recomputed with numpy
from those totals, never by re-running the matcher.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_SAMPLES = 1000
DEFAULT_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Resampling:
    """``weights[b, d]``: how many times document ``d`` is drawn in bootstrap sample ``b``."""

    weights: np.ndarray
    seed: int

    @property
    def samples(self) -> int:
        return int(self.weights.shape[0])

    def totals(self, counts: np.ndarray) -> np.ndarray:
        """Per-sample totals of per-document ``counts`` (documents first): shape (samples, ...)."""
        return np.tensordot(self.weights, counts, axes=(1, 0))

    def describe(self) -> dict:
        """The settings, for the JSON output."""
        return settings(self.samples, self.seed)


def settings(samples: int, seed: int) -> dict:
    """The bootstrap settings as the JSON output records them."""
    return {"samples": samples, "seed": seed, "confidence": CONFIDENCE, "unit": "document"}


def resample_documents(
    documents: int, samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED
) -> Resampling:
    """``samples`` seeded draws of ``documents`` documents with replacement."""
    if samples < 0:
        raise ValueError(f"bootstrap samples must be >= 0, got {samples}")
    if documents == 0 or samples == 0:
        return Resampling(np.zeros((0, documents), dtype=np.int64), seed)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(documents, np.full(documents, 1.0 / documents), size=samples)
    return Resampling(weights.astype(np.int64), seed)


def interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 (the samples); NaN samples (an undefined score) are left out.

    A column without any defined sample, or no samples at all, gives NaN bounds.
    """
    values = np.asarray(values, dtype=float)
    if values.shape[0] == 0:
        return np.full(values.shape[1:], np.nan), np.full(values.shape[1:], np.nan)
    alpha = 100 * (1.0 - CONFIDENCE) / 2
    with warnings.catch_warnings():
        # "All-NaN slice": a label absent from every sample has no interval, which NaN says.
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(values, [alpha, 100 - alpha], axis=0)
    return low, high


def paired_difference(
    observed_a: float, observed_b: float, samples_a: np.ndarray, samples_b: np.ndarray
) -> dict:
    """Paired bootstrap test of ``a - b`` over the same document resamples.

    The p-value is two-sided, from the bootstrap distribution shifted to the null hypothesis
    (no difference): the share of samples whose difference lies at least as far from the
    observed one as the observed one is from zero, with the usual +1 correction.
    """
    observed = observed_a - observed_b
    differences = np.asarray(samples_a, dtype=float) - np.asarray(samples_b, dtype=float)
    differences = differences[~np.isnan(differences)]
    if differences.size == 0:
        return {"difference": observed, "ci_low": None, "ci_high": None, "p_value": None, "samples": 0}
    low, high = interval(differences)
    extreme = np.count_nonzero(np.abs(differences - observed) >= abs(observed) - 1e-12)
    return {
        "difference": observed,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": (extreme + 1) / (differences.size + 1),
        "samples": int(differences.size),
    }
