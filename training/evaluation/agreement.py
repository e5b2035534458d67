"""Inter-annotator agreement over Label Studio tasks: span F1, token kappa, disagreements.

Only tasks with two or more submitted annotations are compared (cancelled annotations and
drafts do not count; an empty annotation does: its annotator found no entity). Spans are read
exactly as the dataset reads them (``training.data.export``: offsets, trimming, overlaps).

- **Span F1**, pairwise: for two annotators, ``2 * agreed / (spans of one + spans of the
  other)`` over exact spans (start, end and label); the usual NER agreement measure, which
  needs no chance correction and does not depend on which annotator counts as gold. Summed
  over every pair of annotators on every task, overall and per label.
- **Token kappa**: each word (``training.text.tokenize_words``) gets its BIO tag from each
  annotator (``O`` included). Two annotators: Cohen's kappa; more than two: Fleiss' kappa,
  with the number of raters allowed to vary by task (Fleiss' formula with per-item rater
  counts; equal to the textbook one when every task has the same number), and Cohen's kappa
  for every pair.
- **Disagreements**: for each pair of annotators on a task, every span not marked by both,
  classified as in ``training.evaluation.error_analysis`` (same boundaries, other type;
  overlapping, other boundaries; only one of them marked it), with its context.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from training.config import DataConfig
from training.data.export import (
    ConversionReport,
    annotation_spans,
    annotator_name,
    submitted_annotations,
    task_text,
)
from training.evaluation.error_analysis import classify_document_errors, error_record
from training.text import Span, spans_to_tags, tokenize_words, widen_to_abbreviations

# error_analysis's kinds, read between two annotators instead of gold and prediction.
DISAGREEMENT_KINDS = {
    "wrong_type": "type",
    "wrong_boundary": "boundary",
    "missed": "only_first",
    "spurious": "only_second",
}


@dataclass
class AnnotatedTask:
    """One task's text and each annotator's spans (the latest annotation of each)."""

    task_id: object
    doc_id: str
    text: str
    spans: dict[str, list[Span]]


@dataclass
class AgreementInput:
    """What was read: tasks compared, and what did not count."""

    tasks: list[AnnotatedTask] = field(default_factory=list)
    tasks_read: int = 0
    single_annotator: int = 0
    no_annotation: int = 0
    cancelled: int = 0
    drafts: int = 0
    empty: int = 0
    # An annotator with several annotations on one task: only the latest counts.
    repeated: int = 0
    conversion: ConversionReport = field(default_factory=ConversionReport)


def _recency(annotation: dict) -> str:
    return str(annotation.get("updated_at") or annotation.get("created_at") or "")


def read_annotations(tasks: Iterable[dict], options: DataConfig | None = None) -> AgreementInput:
    """Each task's annotators and spans; tasks with fewer than two annotators are counted only.

    ``options``: text field, ``from_name`` and the invalid-span policy (default: drop bad spans
    and count them in ``conversion``, so one broken span does not stop a whole project).
    """
    options = options or DataConfig(invalid_spans="drop")
    read = AgreementInput()
    for task in tasks:
        read.tasks_read += 1
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        read.cancelled += sum(1 for a in annotations if a.get("was_cancelled"))
        read.drafts += len(task.get("drafts") or [])
        latest: dict[str, dict] = {}
        for annotation in sorted(submitted_annotations(task), key=_recency):
            name = annotator_name(annotation)
            read.repeated += name in latest
            latest[name] = annotation
        if len(latest) < 2:
            if latest:
                read.single_annotator += 1
            else:
                read.no_annotation += 1
            continue
        text = task_text(task, options.text_field, hint="; pass the text field of the labeling config")
        spans = {
            name: annotation_spans(task, annotation, text, options, read.conversion)
            for name, annotation in sorted(latest.items())
        }
        read.empty += sum(1 for a in latest.values() if not a.get("result"))
        doc_id = str(task["data"].get("doc_id", task.get("id")))
        read.tasks.append(AnnotatedTask(task.get("id"), doc_id, text, spans))
    return read


# --- span F1 ---------------------------------------------------------------------------------


def _f1(agreed: int, first: int, second: int) -> float | None:
    return 2 * agreed / (first + second) if first + second else None


def span_agreement(tasks: Sequence[AnnotatedTask]) -> dict:
    """Pairwise exact-span F1: overall, per label, and per pair of annotators."""
    per_label: dict[str, Counter] = {}
    pairs: dict[tuple[str, str], Counter] = {}
    total: Counter = Counter()
    for task in tasks:
        for a, b in combinations(sorted(task.spans), 2):
            spans_a, spans_b = set(task.spans[a]), set(task.spans[b])
            agreed = spans_a & spans_b
            counts = Counter(agreed=len(agreed), first=len(spans_a), second=len(spans_b), tasks=1)
            total.update(counts)
            pairs.setdefault((a, b), Counter()).update(counts)
            for label in {s.label for s in spans_a | spans_b}:
                per_label.setdefault(label, Counter()).update(
                    agreed=sum(s.label == label for s in agreed),
                    first=sum(s.label == label for s in spans_a),
                    second=sum(s.label == label for s in spans_b),
                )

    def leaf(c: Counter) -> dict:
        return {
            "f1": _f1(c["agreed"], c["first"], c["second"]),
            "agreed": c["agreed"],
            "spans": c["first"] + c["second"],
        }

    return {
        "overall": {**leaf(total), "pairs_compared": total["tasks"]},
        "per_label": {label: leaf(c) for label, c in sorted(per_label.items())},
        "pairs": [
            {"annotators": [a, b], "tasks": c["tasks"], **leaf(c)} for (a, b), c in sorted(pairs.items())
        ],
    }


# --- token kappa -------------------------------------------------------------------------------


def word_tags(task: AnnotatedTask) -> dict[str, list[str]]:
    """Each annotator's BIO tag for every word of the task (spans read as the dataset reads them)."""
    _, word_spans = tokenize_words(task.text)
    tags = {}
    for name, spans in task.spans.items():
        widened, _ = widen_to_abbreviations(task.text, spans, word_spans)
        tags[name], _ = spans_to_tags(word_spans, widened)
    return tags


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' categories for the same items (None: chance agreement is 1)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} and {len(second)} items: the raters must rate the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(first, second)) / n
    count_a, count_b = Counter(first), Counter(second)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(items: Sequence[Counter]) -> float | None:
    """Fleiss' kappa from per-item category counts (``Counter({category: raters})``).

    Items may have different numbers of raters (at least two each): per item, the share of
    agreeing rater pairs; chance agreement from the pooled category shares.
    """
    items = [c for c in items if sum(c.values()) >= 2]
    if not items:
        return None
    per_item = []
    pooled: Counter = Counter()
    for counts in items:
        raters = sum(counts.values())
        per_item.append(sum(k * (k - 1) for k in counts.values()) / (raters * (raters - 1)))
        pooled.update(counts)
    ratings = sum(pooled.values())
    observed = sum(per_item) / len(per_item)
    expected = sum((k / ratings) ** 2 for k in pooled.values())
    return None if expected == 1 else (observed - expected) / (1 - expected)


def token_agreement(tasks: Sequence[AnnotatedTask]) -> dict:
    """Cohen's kappa (two annotators in all) or Fleiss' kappa (more), and Cohen's per pair."""
    annotators = sorted({name for task in tasks for name in task.spans})
    pair_tags: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    items: list[Counter] = []
    for task in tasks:
        tags = word_tags(task)
        names = sorted(tags)
        for a, b in combinations(names, 2):
            first, second = pair_tags.setdefault((a, b), ([], []))
            first += tags[a]
            second += tags[b]
        items += [Counter(tags[name][w] for name in names) for w in range(len(tags[names[0]]))]
    pairs = [
        {"annotators": [a, b], "words": len(first), "kappa": cohen_kappa(first, second)}
        for (a, b), (first, second) in sorted(pair_tags.items())
    ]
    if len(annotators) <= 2:
        return {
            "measure": "cohen",
            "kappa": pairs[0]["kappa"] if pairs else None,
            "words": len(items),
            "pairs": pairs,
        }
    return {"measure": "fleiss", "kappa": fleiss_kappa(items), "words": len(items), "pairs": pairs}


# --- annotators and disagreements -----------------------------------------------------------


def annotator_counts(tasks: Sequence[AnnotatedTask]) -> dict[str, dict]:
    """Per annotator: compared tasks, spans, spans per label."""
    counts: dict[str, dict] = {}
    for task in tasks:
        for name, spans in task.spans.items():
            entry = counts.setdefault(name, {"tasks": 0, "spans": 0, "per_label": Counter()})
            entry["tasks"] += 1
            entry["spans"] += len(spans)
            entry["per_label"].update(s.label for s in spans)
    return {
        name: {**entry, "per_label": dict(sorted(entry["per_label"].items()))}
        for name, entry in sorted(counts.items())
    }


def disagreements(tasks: Sequence[AnnotatedTask]) -> list[dict]:
    """Every span two annotators of a task did not both mark, with its context (JSON objects).

    ``kind``: ``type`` (same boundaries, other label), ``boundary`` (overlapping, other
    boundaries), ``only_first`` / ``only_second`` (one annotator marked it, the other nothing
    there); ``first`` and ``second`` are the two annotators' spans.
    """
    records = []
    for task in tasks:
        for a, b in combinations(sorted(task.spans), 2):
            for error in classify_document_errors(0, task.spans[a], task.spans[b]):
                record = error_record(error, task.doc_id, task.text)
                records.append(
                    {
                        "task": task.task_id,
                        "doc_id": task.doc_id,
                        "kind": DISAGREEMENT_KINDS[error.kind],
                        "annotators": [a, b],
                        "first": record["gold"],
                        "second": record["predicted"],
                        "context": record["context"],
                    }
                )
    return records


@dataclass
class Agreement:
    """The agreement of a set of tasks (``agreement``'s result)."""

    read: AgreementInput
    spans: dict
    tokens: dict
    annotators: dict
    disagreements: list[dict]

    def to_dict(self) -> dict:
        r = self.read
        return {
            "tasks": {
                "read": r.tasks_read,
                "compared": len(r.tasks),
                "single_annotator": r.single_annotator,
                "no_annotation": r.no_annotation,
            },
            "annotations_not_counted": {"cancelled": r.cancelled, "drafts": r.drafts, "repeated": r.repeated},
            "empty_annotations": r.empty,
            "dropped_spans": dict(r.conversion.dropped_spans),
            "span_f1": self.spans,
            "token_kappa": self.tokens,
            "annotators": self.annotators,
            "disagreements": dict(Counter(d["kind"] for d in self.disagreements)),
        }

    def summary(self) -> str:
        """Lines for the terminal."""
        r, overall, tokens = self.read, self.spans["overall"], self.tokens
        lines = [
            f"tasks: {r.tasks_read} read, {len(r.tasks)} with two or more annotators compared"
            f" ({r.single_annotator} with one, {r.no_annotation} with none);"
            f" not counted: {r.cancelled} cancelled annotations, {r.drafts} drafts, {r.repeated} repeated",
            f"span F1 (exact, pairwise): {_show(overall['f1'])} ({overall['agreed']} agreed of"
            f" {overall['spans']} spans, {overall['pairs_compared']} annotator pairs on tasks)",
            f"token kappa ({tokens['measure']}, BIO tags of {tokens['words']} words):"
            f" {_show(tokens['kappa'])}",
        ]
        for label, leaf in self.spans["per_label"].items():
            lines.append(
                f"  {label:<10} span F1 {_show(leaf['f1'])}  ({leaf['agreed']} agreed of {leaf['spans']})"
            )
        for name, entry in self.annotators.items():
            lines.append(f"  annotator {name}: {entry['tasks']} tasks, {entry['spans']} spans")
        if r.conversion.dropped_spans:
            lines.append(f"dropped spans: {dict(r.conversion.dropped_spans)}")
        lines.append(f"disagreements: {len(self.disagreements)}")
        return "\n".join(lines)


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def agreement(tasks: Iterable[dict], options: DataConfig | None = None) -> Agreement:
    """Span F1, token kappa, annotator counts and disagreements of Label Studio tasks."""
    read = read_annotations(tasks, options)
    return Agreement(
        read,
        span_agreement(read.tasks),
        token_agreement(read.tasks),
        annotator_counts(read.tasks),
        disagreements(read.tasks),
    )
