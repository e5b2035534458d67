import json
import random

from training.evaluation.error_analysis import (
    classify_document_errors,
    classify_errors,
    confusion_matrix,
    error_counts,
    error_record,
    top_confusions,
    write_jsonl,
)
from training.text import Span


def test_each_kind_by_hand():
    gold = [Span(0, 5, "GPE"), Span(10, 20, "GOV_ORG"), Span(30, 35, "PERSON"), Span(50, 55, "DATE")]
    predicted = [Span(0, 5, "GPE"), Span(10, 20, "ORG"), Span(30, 33, "PERSON"), Span(40, 44, "MONEY")]
    errors = classify_document_errors(0, gold, predicted)
    assert [(e.kind, e.gold, e.predicted) for e in errors] == [
        ("wrong_type", Span(10, 20, "GOV_ORG"), Span(10, 20, "ORG")),
        ("wrong_boundary", Span(30, 35, "PERSON"), Span(30, 33, "PERSON")),
        ("spurious", None, Span(40, 44, "MONEY")),
        ("missed", Span(50, 55, "DATE"), None),
    ]
    assert error_counts(errors) == {"wrong_type": 1, "wrong_boundary": 1, "missed": 1, "spurious": 1}


def test_a_prediction_swallowing_two_gold_spans_is_the_wrong_boundary_of_both():
    gold = [Span(0, 5, "GPE"), Span(6, 10, "GPE")]
    errors = classify_document_errors(0, gold, [Span(0, 10, "GPE")])
    assert [(e.kind, e.gold) for e in errors] == [("wrong_boundary", gold[0]), ("wrong_boundary", gold[1])]


def random_spans(rng: random.Random, n: int) -> list[Span]:
    spans, position = [], 0
    for _ in range(n):
        position += rng.randint(0, 4)
        end = position + rng.randint(1, 4)
        spans.append(Span(position, end, rng.choice(["GPE", "ORG", "DATE"])))
        position = end
    return spans


def test_every_false_negative_once_and_every_false_positive_at_least_once():
    rng = random.Random(0)
    for _ in range(200):
        gold, predicted = random_spans(rng, rng.randint(0, 6)), random_spans(rng, rng.randint(0, 6))
        errors = classify_document_errors(0, gold, predicted)
        false_negatives = set(gold) - set(predicted)
        false_positives = set(predicted) - set(gold)
        # Predictions never overlap each other, so no error involves a correctly found gold span.
        assert {e.gold for e in errors if e.gold is not None} == false_negatives
        assert sum(e.kind in ("missed", "wrong_type") for e in errors) <= len(false_negatives)
        assert {e.predicted for e in errors if e.predicted is not None} == false_positives
        assert all(e.gold is None or e.gold in set(gold) for e in errors)
        for e in errors:
            if e.kind == "wrong_type":
                assert (e.gold.start, e.gold.end) == (e.predicted.start, e.predicted.end)
                assert e.gold.label != e.predicted.label
            elif e.kind == "wrong_boundary":
                assert (e.gold.start, e.gold.end) != (e.predicted.start, e.predicted.end)
                assert max(e.gold.start, e.predicted.start) < min(e.gold.end, e.predicted.end)
            elif e.kind == "missed":
                assert e.predicted is None and not any(
                    p.start < e.gold.end and e.gold.start < p.end for p in predicted
                )
            else:
                assert e.gold is None and not any(
                    g.start < e.predicted.end and e.predicted.start < g.end for g in gold
                )


def test_confusion_matrix_over_matching_boundaries():
    gold = [[Span(0, 5, "GPE"), Span(10, 20, "GOV_ORG"), Span(30, 35, "GOV_ORG")], [Span(0, 3, "GOV_ORG")]]
    predicted = [[Span(0, 5, "GPE"), Span(10, 20, "ORG"), Span(30, 34, "ORG")], [Span(0, 3, "ORG")]]
    matrix = confusion_matrix(gold, predicted)
    assert matrix == {"GPE": {"GPE": 1}, "GOV_ORG": {"ORG": 2}}
    assert top_confusions(matrix) == [("GOV_ORG", "ORG", 2)]
    assert [e.document for e in classify_errors(gold, predicted)] == [0, 0, 1]


def test_error_record_has_document_id_and_context(tmp_path):
    text = "In Seoul, the Defence Ministry said on Monday that talks would resume."
    gold, predicted = Span(14, 30, "GOV_ORG"), Span(14, 30, "ORG")
    (error,) = classify_document_errors(0, [gold], [predicted])
    record = error_record(error, "doc-7", text, context=10)
    assert record["doc_id"] == "doc-7" and record["kind"] == "wrong_type"
    assert record["gold"] == {"label": "GOV_ORG", "start": 14, "end": 30, "text": "Defence Ministry"}
    assert record["context"] == {"before": "eoul, the ", "text": "Defence Ministry", "after": " said on M"}
    path = tmp_path / "errors.jsonl"
    write_jsonl(path, [record, record])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [record, record]
