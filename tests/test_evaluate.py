import random

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from training.evaluate import PRF, format_comparison, format_scores, score, seqeval_scores, span_scores
from training.validation import Span


def test_prf_by_hand():
    s = PRF(tp=3, fp=1, fn=2)
    assert s.precision == 0.75 and s.recall == 0.6
    assert s.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert PRF().f1 == 0.0


def test_default_and_strict_modes_differ_like_seqeval_documents():
    # seqeval's README example: an entity starting with I- counts in default mode only.
    gold = [["B-PER", "I-PER", "O"]]
    predicted = [["I-PER", "I-PER", "O"]]
    assert seqeval_scores(gold, predicted, strict=False)["micro"]["f1"] == 1.0
    assert seqeval_scores(gold, predicted, strict=True)["micro"]["f1"] == 0.0


def test_hand_computed_micro_and_macro():
    gold = [["B-GPE", "O", "B-ROLE", "I-ROLE"], ["B-GPE", "O"]]
    predicted = [["B-GPE", "O", "B-ROLE", "O"], ["B-GPE", "B-GPE"]]
    scores = seqeval_scores(gold, predicted, strict=True)
    # GPE: tp 2, fp 1, fn 0 -> P 2/3, R 1; ROLE: tp 0, fp 1, fn 1.
    assert scores["per_label"]["GPE"]["precision"] == pytest.approx(2 / 3)
    assert scores["per_label"]["ROLE"]["f1"] == 0.0
    assert scores["micro"]["precision"] == pytest.approx(2 / 4)
    assert scores["micro"]["recall"] == pytest.approx(2 / 3)
    assert scores["macro"]["f1"] == pytest.approx((0.8 + 0.0) / 2)
    assert scores["micro"]["support"] == 3


def test_agrees_with_seqeval_on_random_sequences():
    rng = random.Random(0)
    tags = ["O", "B-GPE", "I-GPE", "B-ROLE", "I-ROLE"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 30))] for _ in range(50)]
    predicted = [[rng.choice(tags) if rng.random() < 0.3 else t for t in seq] for seq in gold]
    for strict in (False, True):
        kwargs = {"mode": "strict", "scheme": IOB2} if strict else {}
        ours = seqeval_scores(gold, predicted, strict)["micro"]
        assert ours["f1"] == pytest.approx(f1_score(gold, predicted, **kwargs))
        assert ours["precision"] == pytest.approx(precision_score(gold, predicted, **kwargs))
        assert ours["recall"] == pytest.approx(recall_score(gold, predicted, **kwargs))


def test_exact_span_scores():
    gold = [[Span(0, 5, "GPE"), Span(10, 20, "ROLE")]]
    predicted = [[Span(0, 5, "GPE"), Span(10, 19, "ROLE"), Span(30, 35, "GPE")]]
    scores = span_scores(gold, predicted)
    assert scores["micro"]["precision"] == pytest.approx(1 / 3)
    assert scores["micro"]["recall"] == pytest.approx(1 / 2)
    assert scores["per_label"]["ROLE"]["f1"] == 0.0


def test_score_json_shape_and_reports():
    result = score([["B-GPE", "O"]], [["B-GPE", "O"]], [[Span(0, 3, "GPE")]], [[Span(0, 3, "GPE")]])
    assert set(result) == {"strict", "default", "spans", "documents"}
    for mode in ("strict", "default", "spans"):
        assert set(result[mode]) == {"micro", "macro", "per_label"}
        assert set(result[mode]["micro"]) == {"precision", "recall", "f1", "support"}
    assert result["strict"]["micro"]["f1"] == 1.0 and result["documents"] == 1
    assert "GPE" in format_scores(result)
    assert "m1" in format_comparison([("m1", result), ("m2", result)])
    with pytest.raises(ValueError, match="document 0"):
        score([["O", "O"]], [["O"]])
