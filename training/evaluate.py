"""Score a model on whole documents: seqeval entity P/R/F1 (default and strict IOB2) and
exact character-span F1.

Every word of every document is predicted (windows merged back) and scored against the full
gold sequence, never against a truncated copy.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from training.validation import Span


@dataclass
class PRF:
    """True positives, false positives and false negatives, with their ratios."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.tp + self.fn,
        }


def _leaf(row: dict) -> dict:
    return {
        "precision": float(row["precision"]),
        "recall": float(row["recall"]),
        "f1": float(row["f1-score"]),
        "support": int(row["support"]),
    }


def seqeval_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], strict: bool) -> dict:
    """Entity-level micro, macro and per-label scores from seqeval."""
    kwargs = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(
        [list(s) for s in gold],
        [list(s) for s in predicted],
        output_dict=True,
        zero_division=0,
        **kwargs,
    )
    per_label = {label: _leaf(row) for label, row in sorted(report.items()) if not label.endswith(" avg")}
    return {
        "micro": _leaf(report["micro avg"]),
        "macro": _leaf(report["macro avg"]),
        "per_label": per_label,
    }


def span_scores(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> dict:
    """Exact character-span matching: a hit needs the same start, end and label."""
    per_label: dict[str, PRF] = {}
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        gold_set = {(s.start, s.end, s.label) for s in gold_spans}
        predicted_set = {(s.start, s.end, s.label) for s in predicted_spans}
        for _, _, label in gold_set | predicted_set:
            per_label.setdefault(label, PRF())
        for item in gold_set & predicted_set:
            per_label[item[2]].tp += 1
        for item in predicted_set - gold_set:
            per_label[item[2]].fp += 1
        for item in gold_set - predicted_set:
            per_label[item[2]].fn += 1
    micro = PRF(*(sum(getattr(s, k) for s in per_label.values()) for k in ("tp", "fp", "fn")))
    labels = [s for s in per_label.values() if s.tp + s.fn]
    macro = {
        "precision": sum(s.precision for s in labels) / len(labels) if labels else 0.0,
        "recall": sum(s.recall for s in labels) / len(labels) if labels else 0.0,
        "f1": sum(s.f1 for s in labels) / len(labels) if labels else 0.0,
        "support": micro.tp + micro.fn,
    }
    return {
        "micro": micro.as_dict(),
        "macro": macro,
        "per_label": {label: s.as_dict() for label, s in sorted(per_label.items())},
    }


def score(
    gold_tags: Sequence[Sequence[str]],
    predicted_tags: Sequence[Sequence[str]],
    gold_spans: Sequence[Sequence[Span]] | None = None,
    predicted_spans: Sequence[Sequence[Span]] | None = None,
) -> dict:
    """The evaluation JSON: ``strict``, ``default``, ``spans`` (when spans are given), ``documents``."""
    for n, (g, p) in enumerate(zip(gold_tags, predicted_tags, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"document {n}: {len(g)} gold tags but {len(p)} predicted")
    result = {
        "strict": seqeval_scores(gold_tags, predicted_tags, strict=True),
        "default": seqeval_scores(gold_tags, predicted_tags, strict=False),
    }
    if gold_spans is not None and predicted_spans is not None:
        result["spans"] = span_scores(gold_spans, predicted_spans)
    result["documents"] = len(gold_tags)
    return result


def evaluate_tagger(tagger, rows: Sequence[dict]) -> dict:
    """Score ``tagger`` on dataset rows (``tokens``, ``token_spans``, ``ner_tags``, ``entities``)."""
    from training.dataset import tags_to_spans
    from training.schema import BIO_TAGS

    predictions = tagger.predict_words([row["tokens"] for row in rows])
    gold_tags = [[BIO_TAGS[i] for i in row["ner_tags"]] for row in rows]
    predicted_tags = [[tag for tag, _ in doc] for doc in predictions]
    gold_spans = [[Span(e["start"], e["end"], e["label"]) for e in row["entities"]] for row in rows]
    predicted_spans = [tags_to_spans(row["token_spans"], tags) for row, tags in zip(rows, predicted_tags)]
    return score(gold_tags, predicted_tags, gold_spans, predicted_spans)


def format_scores(scores: dict, title: str = "") -> str:
    """A plain-text report: per-label and micro/macro P/R/F1, strict and default side by side."""
    strict, default = scores["strict"], scores["default"]
    labels = sorted(set(strict["per_label"]) | set(default["per_label"]))
    header = f"{'label':<12}{'P':>7}{'R':>7}{'F1':>7}{'F1 def':>8}{'support':>9}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]

    def row(name: str, s: dict, d: dict) -> str:
        return (
            f"{name:<12}{s['precision']:>7.3f}{s['recall']:>7.3f}{s['f1']:>7.3f}"
            f"{d['f1']:>8.3f}{s['support']:>9d}"
        )

    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    for label in labels:
        lines.append(
            row(label, strict["per_label"].get(label, empty), default["per_label"].get(label, empty))
        )
    lines.append("-" * len(header))
    lines.append(row("micro", strict["micro"], default["micro"]))
    lines.append(row("macro", strict["macro"], default["macro"]))
    if "spans" in scores:
        spans = scores["spans"]["micro"]
        lines.append(
            f"exact character spans: P {spans['precision']:.3f} R {spans['recall']:.3f} F1 {spans['f1']:.3f}"
        )
    lines.append(f"documents: {scores['documents']} (P/R/F1: seqeval strict IOB2; F1 def: default mode)")
    return "\n".join(lines)


def format_comparison(named_scores: Sequence[tuple[str, dict]]) -> str:
    """One table comparing several models' micro scores."""
    header = f"{'model':<40}{'strict F1':>10}{'default F1':>11}{'span F1':>9}{'docs':>6}"
    lines = [header, "-" * len(header)]
    for name, s in named_scores:
        span_f1 = s["spans"]["micro"]["f1"] if "spans" in s else float("nan")
        lines.append(
            f"{name[-40:]:<40}{s['strict']['micro']['f1']:>10.3f}"
            f"{s['default']['micro']['f1']:>11.3f}{span_f1:>9.3f}{s['documents']:>6d}"
        )
    return "\n".join(lines)


def worst_labels(scores: dict, n: int = 3) -> list[tuple[str, float]]:
    """The ``n`` labels with the lowest strict F1."""
    per_label = scores["strict"]["per_label"]
    return sorted(((k, v["f1"]) for k, v in per_label.items()), key=lambda kv: kv[1])[:n]


def write_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def label_support(rows: Sequence[dict]) -> Counter:
    """Gold entities per label in dataset rows."""
    return Counter(e["label"] for row in rows for e in row["entities"])
