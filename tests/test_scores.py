import random

import numpy as np
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from training.evaluation.scores import (
    Evaluation,
    compare,
    count_matches,
    format_comparison,
    format_scores,
    invalid_i_starts,
    micro_f1,
    prf_ratios,
    score,
    seqeval_scores,
    span_scores,
)
from training.text import Span


def test_prf_by_hand():
    precision, recall, f1 = prf_ratios([3, 1, 2])
    assert precision == 0.75 and recall == 0.6
    assert f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    # Nothing to score at all: F1 is undefined (left out of bootstrap intervals), the rest 0.
    precision, recall, f1 = prf_ratios([0, 0, 0])
    assert precision == 0.0 and recall == 0.0 and np.isnan(f1)


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
    assert set(result) == {
        "strict",
        "default",
        "spans",
        "muc",
        "confusion",
        "errors",
        "invalid_i_starts",
        "bootstrap",
        "documents",
    }
    for mode in ("strict", "default", "spans"):
        assert set(result[mode]) == {"micro", "macro", "per_label"}
        assert set(result[mode]["micro"]) == {"precision", "recall", "f1", "ci_low", "ci_high", "support"}
    assert set(result["muc"]) == {"strict", "exact", "partial", "type"}
    assert set(result["muc"]["partial"]["overall"]) == {
        "correct",
        "incorrect",
        "partial",
        "missed",
        "spurious",
        "possible",
        "actual",
        "precision",
        "recall",
        "f1",
        "ci_low",
        "ci_high",
    }
    assert result["strict"]["micro"]["f1"] == 1.0 and result["documents"] == 1
    assert "GPE" in format_scores(result)
    assert "m1" in format_comparison([("m1", result), ("m2", result)])
    with pytest.raises(ValueError, match="document 0"):
        score([["O", "O"]], [["O"]])


# --- counts-based scores, MUC, intervals, comparisons ---------------------------------------

RANDOM_TAGS = ["O", "O", "O", "B-GPE", "I-GPE", "B-ROLE", "I-ROLE", "B-DATE", "I-DATE"]


def random_corpus(seed: int, documents: int = 40, noise: float = 0.3):
    rng = random.Random(seed)
    gold = [[rng.choice(RANDOM_TAGS) for _ in range(rng.randint(0, 30))] for _ in range(documents)]
    predicted = [[rng.choice(RANDOM_TAGS) if rng.random() < noise else t for t in seq] for seq in gold]
    return gold, predicted


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_seqeval_number_matches_seqeval_on_random_sequences(seed):
    # Ours come from per-document counts; the reference is seqeval's own classification_report.
    gold, predicted = random_corpus(seed)
    result = score(gold, predicted, bootstrap=0)
    for mode in ("strict", "default"):
        reference = seqeval_scores(gold, predicted, strict=mode == "strict")
        assert set(result[mode]["per_label"]) == set(reference["per_label"])
        for key in ("micro", "macro"):
            for field in ("precision", "recall", "f1", "support"):
                assert result[mode][key][field] == pytest.approx(reference[key][field]), (mode, key, field)
        for label, leaf in reference["per_label"].items():
            for field in ("precision", "recall", "f1", "support"):
                assert result[mode]["per_label"][label][field] == pytest.approx(leaf[field])


def test_seqeval_strict_mode_drops_invalid_chunks_that_default_mode_keeps():
    # seqeval's documented difference: default mode reads an I- start as an entity, strict IOB2
    # mode drops it; B-X followed by I-Y ends X at B-X in strict mode.
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    predicted = [["I-PER", "I-PER", "O", "B-LOC", "I-PER"]]
    result = score(gold, predicted, bootstrap=0)
    # Default mode: I-PER I-PER is PER 0-1 (a hit) and the lone I-PER is PER 4-4 (a false positive).
    assert result["default"]["per_label"]["PER"]["recall"] == 1.0
    assert result["default"]["per_label"]["PER"]["precision"] == 0.5
    assert result["strict"]["per_label"]["PER"]["precision"] == 0.0  # no valid PER predicted
    assert result["strict"]["per_label"]["PER"]["support"] == 1
    assert result["strict"]["per_label"]["LOC"]["recall"] == 0.0  # predicted LOC is 3-3, gold 3-4
    assert result["invalid_i_starts"] == 2


def test_invalid_i_starts_by_hand():
    assert invalid_i_starts(["I-GPE", "I-GPE", "O", "B-ROLE", "I-GPE", "I-ROLE"]) == 3
    assert invalid_i_starts(["B-GPE", "I-GPE", "B-GPE", "I-GPE", "O"]) == 0


def test_muc_counts_by_hand():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG", "O", "O"],
        ["B-GPE", "I-GPE", "I-GPE", "O"],
    ]
    predicted = [
        ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "O", "O", "O", "B-LOC"],
        ["O", "B-GPE", "I-GPE", "I-GPE"],
    ]
    # Doc 1: PER exact hit; ORG predicted on gold LOC's exact span; ORG 6 missed; LOC 8 spurious.
    # Doc 2: GPE 1-3 overlaps gold GPE 0-2.
    muc = score(gold, predicted, bootstrap=0)["muc"]

    def counts(mode):
        o = muc[mode]["overall"]
        return tuple(o[k] for k in ("correct", "incorrect", "partial", "missed", "spurious"))

    assert counts("strict") == (1, 2, 0, 1, 1)
    assert counts("exact") == (2, 1, 0, 1, 1)
    assert counts("partial") == (2, 0, 1, 1, 1)
    assert counts("type") == (2, 1, 0, 1, 1)
    assert muc["partial"]["overall"]["precision"] == pytest.approx((2 + 0.5) / 4)
    assert muc["strict"]["overall"]["f1"] == pytest.approx(0.25)
    # Per label, labels are scored alone: the ORG prediction on gold LOC is spurious for ORG.
    org = muc["strict"]["per_label"]["ORG"]
    assert (org["correct"], org["missed"], org["spurious"]) == (0, 1, 1)


@pytest.mark.parametrize("seed", [4, 5])
def test_muc_matches_nervaluate_on_random_sequences(seed):
    from nervaluate import Evaluator

    gold, predicted = random_corpus(seed)
    ours = score(gold, predicted, bootstrap=0)["muc"]
    theirs = Evaluator(gold, predicted, tags=["GPE", "ROLE", "DATE"], loader="list").evaluate()
    fields = ("correct", "incorrect", "partial", "missed", "spurious", "possible", "actual")
    for mode, their_mode in (
        ("strict", "strict"),
        ("exact", "exact"),
        ("partial", "partial"),
        ("type", "ent_type"),
    ):
        overall = theirs["overall"][their_mode]
        for field in (*fields, "precision", "recall", "f1"):
            assert ours[mode]["overall"][field] == pytest.approx(getattr(overall, field)), (mode, field)
        assert set(ours[mode]["per_label"]) == set(theirs["entities"])
        for label, results in theirs["entities"].items():
            for field in (*fields, "f1"):
                assert ours[mode]["per_label"][label][field] == pytest.approx(
                    getattr(results[their_mode], field)
                ), (mode, label, field)


def test_intervals_are_seeded_reproducible_and_bracket_the_estimate():
    gold, predicted = random_corpus(6, documents=60)
    first = score(gold, predicted, bootstrap=300, seed=11)
    again = score(gold, predicted, bootstrap=300, seed=11)
    other = score(gold, predicted, bootstrap=300, seed=12)
    assert first == again
    assert first["strict"]["micro"]["ci_low"] != other["strict"]["micro"]["ci_low"]
    assert first["bootstrap"] == {"samples": 300, "seed": 11, "confidence": 0.95, "unit": "document"}
    leaves = [first[m]["micro"] for m in ("strict", "default")] + [
        first[m]["macro"] for m in ("strict", "default")
    ]
    leaves += list(first["strict"]["per_label"].values())
    leaves += [first["muc"][mode]["overall"] for mode in ("strict", "exact", "partial", "type")]
    for leaf in leaves:
        assert leaf["ci_low"] < leaf["f1"] < leaf["ci_high"]
    no_bootstrap = score(gold, predicted, bootstrap=0)
    assert no_bootstrap["strict"]["micro"]["ci_low"] is None
    assert no_bootstrap["strict"]["micro"]["f1"] == first["strict"]["micro"]["f1"]


def test_bootstrap_samples_equal_seqeval_on_the_resampled_documents():
    # The vectorised resampling must give exactly what re-scoring the drawn documents gives.
    from seqeval.metrics import f1_score

    from training.evaluation.bootstrap import resample_documents

    gold, predicted = random_corpus(7, documents=15)
    counts = count_matches(gold, predicted)
    resampling = resample_documents(len(gold), samples=5, seed=3)
    _, samples = micro_f1(counts.prf["strict"], resampling)
    for weights, sample in zip(resampling.weights, samples):
        drawn = [d for d, w in enumerate(weights) for _ in range(w)]
        expected = f1_score(
            [gold[d] for d in drawn],
            [predicted[d] for d in drawn],
            mode="strict",
            scheme=IOB2,
            zero_division=0,
        )
        assert sample == pytest.approx(expected)


def _evaluation(gold, predicted, ids=None) -> Evaluation:
    from training.text import tags_to_spans

    word_spans = [[(i, i + 1) for i in range(len(doc))] for doc in gold]
    return Evaluation(
        document_ids=ids or [str(n) for n in range(len(gold))],
        texts=["x" * len(doc) for doc in gold],
        gold_tags=gold,
        predicted_tags=predicted,
        gold_spans=[tags_to_spans(s, t) for s, t in zip(word_spans, gold)],
        predicted_spans=[tags_to_spans(s, t) for s, t in zip(word_spans, predicted)],
    )


def test_paired_bootstrap_test():
    gold, worse = random_corpus(8, documents=60, noise=0.5)
    _, better = random_corpus(8, documents=60, noise=0.05)
    same = compare([("a", _evaluation(gold, worse)), ("b", _evaluation(gold, worse))], bootstrap=200)
    (pair,) = same["paired"]
    assert pair["strict"]["difference"] == 0.0 and pair["strict"]["p_value"] == 1.0
    result = compare(
        [("better", _evaluation(gold, better)), ("worse", _evaluation(gold, worse))], bootstrap=200
    )
    test = result["paired"][0]["strict"]
    assert test["difference"] > 0.2 and test["ci_low"] > 0
    assert test["p_value"] == pytest.approx(1 / 201)
    assert [row["model"] for row in result["table"]] == ["better", "worse"]
    assert result["table"][0]["strict"]["f1"] == pytest.approx(
        _evaluation(gold, better).scores(0)["strict"]["micro"]["f1"]
    )
    assert (
        compare([("better", _evaluation(gold, better)), ("worse", _evaluation(gold, worse))], bootstrap=200)
        == result
    )
    named_scores = [
        ("better", _evaluation(gold, better).scores(200)),
        ("worse", _evaluation(gold, worse).scores(200)),
    ]
    text = format_comparison(named_scores, result)
    assert "better - worse: strict micro F1 difference" in text and "p = 0.005" in text
    assert f"{result['table'][0]['strict']['ci_low']:.3f}-" in text


def test_no_paired_test_across_different_documents():
    gold, predicted = random_corpus(9, documents=5)
    result = compare(
        [("a", _evaluation(gold, predicted)), ("b", _evaluation(gold, predicted, ids=list("vwxyz")))],
        bootstrap=50,
    )
    assert result["paired"] == [] and result["unpaired"][0]["reason"] == "scored on different documents"
