"""Where a model fails: type confusions and every false positive / false negative, classified.

Errors are read on exact character spans (the ``spans`` score): a gold span without an
identical prediction is a false negative, a prediction without an identical gold span a false
positive. Each is classified:

- ``wrong_type``: a prediction has the gold span's exact boundaries but another label;
- ``wrong_boundary``: a prediction overlaps the gold span with different boundaries (its label
  may differ too);
- ``missed``: no prediction overlaps the gold span;
- ``spurious``: the prediction overlaps no gold span.

A wrong-type or wrong-boundary error pairs one gold span with one prediction. Every false
negative and every false positive appears in at least one error: a prediction that swallows
two gold spans is the wrong boundary of both, a gold span split into two predictions the wrong
boundary of each.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.files import write_atomically
from training.text import Span

ERROR_KINDS = ("wrong_type", "wrong_boundary", "missed", "spurious")
CONTEXT_CHARS = 60


@dataclass(frozen=True)
class SpanError:
    """One classified error in document number ``document``."""

    document: int
    kind: str
    gold: Span | None
    predicted: Span | None

    @property
    def start(self) -> int:
        return min(s.start for s in (self.gold, self.predicted) if s is not None)

    @property
    def end(self) -> int:
        return max(s.end for s in (self.gold, self.predicted) if s is not None)


def _overlap(a: Span, b: Span) -> int:
    return max(0, min(a.end, b.end) - max(a.start, b.start))


def classify_document_errors(
    document: int, gold: Sequence[Span], predicted: Sequence[Span]
) -> list[SpanError]:
    """The classified errors of one document, in text order."""
    gold_set, predicted_set = set(gold), set(predicted)
    false_negatives = sorted(gold_set - predicted_set, key=lambda s: (s.start, s.end, s.label))
    false_positives = sorted(predicted_set - gold_set, key=lambda s: (s.start, s.end, s.label))
    errors: list[SpanError] = []
    paired: set[Span] = set()
    for g in false_negatives:
        same_boundaries = [p for p in false_positives if (p.start, p.end) == (g.start, g.end)]
        overlapping = [p for p in false_positives if _overlap(p, g)]
        if same_boundaries:
            errors.append(SpanError(document, "wrong_type", g, same_boundaries[0]))
            paired.add(same_boundaries[0])
        elif overlapping:
            best = max(overlapping, key=lambda p: (_overlap(p, g), -p.start))
            errors.append(SpanError(document, "wrong_boundary", g, best))
            paired.add(best)
        else:
            errors.append(SpanError(document, "missed", g, None))
    for p in false_positives:
        if p in paired:
            continue
        overlapping = [g for g in sorted(gold_set, key=lambda s: (s.start, s.end, s.label)) if _overlap(p, g)]
        if overlapping:
            best = max(overlapping, key=lambda g: (_overlap(p, g), -g.start))
            errors.append(SpanError(document, "wrong_boundary", best, p))
        else:
            errors.append(SpanError(document, "spurious", None, p))
    return sorted(errors, key=lambda e: (e.start, e.end, ERROR_KINDS.index(e.kind)))


def classify_errors(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> list[SpanError]:
    """The classified errors of every document, document by document."""
    return [
        error
        for n, (gold_spans, predicted_spans) in enumerate(zip(gold, predicted, strict=True))
        for error in classify_document_errors(n, gold_spans, predicted_spans)
    ]


def error_counts(errors: Sequence[SpanError]) -> dict[str, int]:
    """Errors per kind, every kind listed."""
    counts = Counter(e.kind for e in errors)
    return {kind: counts[kind] for kind in ERROR_KINDS}


def confusion_matrix(
    gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]
) -> dict[str, dict[str, int]]:
    """``{gold label: {predicted label: n}}`` over gold and predicted spans with identical boundaries.

    The diagonal is the correctly typed spans; off the diagonal, which label was taken for which.
    """
    pairs: Counter = Counter()
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        by_boundaries = {(p.start, p.end): p.label for p in predicted_spans}
        for g in gold_spans:
            label = by_boundaries.get((g.start, g.end))
            if label is not None:
                pairs[g.label, label] += 1
    matrix: dict[str, dict[str, int]] = {}
    for (gold_label, predicted_label), n in sorted(pairs.items()):
        matrix.setdefault(gold_label, {})[predicted_label] = n
    return matrix


def top_confusions(matrix: dict[str, dict[str, int]], n: int = 3) -> list[tuple[str, str, int]]:
    """The ``n`` most frequent ``(gold, predicted, count)`` type confusions (off the diagonal)."""
    off_diagonal = [
        (gold, predicted, count)
        for gold, row in matrix.items()
        for predicted, count in row.items()
        if gold != predicted
    ]
    return sorted(off_diagonal, key=lambda t: (-t[2], t[0], t[1]))[:n]


def _span_record(span: Span | None, text: str) -> dict | None:
    if span is None:
        return None
    return {"label": span.label, "start": span.start, "end": span.end, "text": text[span.start : span.end]}


def error_record(error: SpanError, document_id: str, text: str, context: int = CONTEXT_CHARS) -> dict:
    """One error as a JSON object: document id, kind, both spans and the surrounding text."""
    return {
        "doc_id": document_id,
        "kind": error.kind,
        "gold": _span_record(error.gold, text),
        "predicted": _span_record(error.predicted, text),
        "context": {
            "before": text[max(0, error.start - context) : error.start],
            "text": text[error.start : error.end],
            "after": text[error.end : error.end + context],
        },
    }


def write_jsonl(path: str | Path, records: Sequence[dict]) -> None:
    """Write ``records`` one JSON object per line, atomically."""
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    write_atomically(Path(path), lambda target: target.write_text(lines, encoding="utf-8"))
