import numpy as np
import pytest

from training.evaluation.bootstrap import interval, paired_difference, resample_documents


def test_resampling_is_seeded_and_draws_every_document_count():
    first = resample_documents(documents=7, samples=50, seed=3)
    assert first.weights.shape == (50, 7)
    assert (first.weights.sum(axis=1) == 7).all()
    assert np.array_equal(first.weights, resample_documents(7, 50, seed=3).weights)
    assert not np.array_equal(first.weights, resample_documents(7, 50, seed=4).weights)
    assert resample_documents(7, 0).samples == 0 and resample_documents(0, 50).samples == 0
    with pytest.raises(ValueError, match="bootstrap samples"):
        resample_documents(7, -1)


def test_totals_are_weighted_sums_of_document_counts():
    resampling = resample_documents(documents=3, samples=4, seed=0)
    counts = np.array([[1, 0, 2], [0, 5, 0], [3, 3, 3]])  # (documents, fields)
    totals = resampling.totals(counts)
    for weights, total in zip(resampling.weights, totals):
        assert total.tolist() == sum(w * counts[d] for d, w in enumerate(weights)).tolist()


def test_interval_is_the_central_95_percent_and_skips_undefined_samples():
    values = np.arange(1001, dtype=float)  # 0..1000
    low, high = interval(values)
    assert (low, high) == pytest.approx((25.0, 975.0))
    with_gaps = np.column_stack([values, np.where(values % 2 == 0, values, np.nan), np.full(1001, np.nan)])
    low, high = interval(with_gaps)
    assert (
        low[0] == pytest.approx(25.0)
        and low[1] == pytest.approx(25.0, abs=1)
        and np.isnan(low[2])
        and np.isnan(high[2])
    )
    assert np.isnan(interval(np.zeros((0,)))[0])


def test_paired_difference_by_hand():
    # Observed difference 0.1; samples of the difference 0.0, 0.1, 0.2, 0.3: those at least 0.1
    # away from 0.1 are 0.0, 0.2 and 0.3 -> p = (3 + 1) / (4 + 1).
    result = paired_difference(0.6, 0.5, np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.5, 0.5, 0.5, 0.5]))
    assert result["difference"] == pytest.approx(0.1)
    assert result["p_value"] == pytest.approx(4 / 5)
    assert result["ci_low"] < result["ci_high"]
    assert paired_difference(0.5, 0.5, np.array([]), np.array([]))["p_value"] is None
