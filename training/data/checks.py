"""Checks on annotated documents: span hygiene, overlaps, consistency and near-duplicates.

Pure Python on purpose: it runs on corpus source files, on Label Studio exports and inside
the dataset build, without loading torch.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from training.schema import LABEL_NAMES
from training.text import Span, tokenize_words

DETERMINERS = frozenset({"the", "a", "an", "its"})
# Proper names that begin with a determiner.
DETERMINER_NAMES = frozenset({"The Hague"})
EDGE_PUNCTUATION = frozenset(".,;:!?\"'“”‘’()[]{}«»-–—/")
POSSESSIVE_ENDINGS = ("'s", "’s", "s'", "s’")


@dataclass(frozen=True)
class Problem:
    """One finding about a document: ``where`` names the document and span."""

    doc_id: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.doc_id}: {self.where}: {self.message}"


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


def span_problems(
    text: str, spans: Sequence[Span], doc_id: str, labels: Sequence[str] = LABEL_NAMES
) -> list[Problem]:
    """Everything wrong with ``spans`` over ``text``: range, labels, trimming, boundaries, overlap."""
    problems: list[Problem] = []
    known = set(labels)

    def report(span: Span, message: str) -> None:
        snippet = text[span.start : span.end] if 0 <= span.start < span.end <= len(text) else ""
        problems.append(Problem(doc_id, f"span [{span.start}:{span.end}] {span.label} {snippet!r}", message))

    for span in spans:
        if span.label not in known:
            report(span, f"label {span.label!r} is not in the schema")
        if not (0 <= span.start < span.end <= len(text)):
            report(span, f"offsets out of range for a text of {len(text)} characters")
            continue
        surface = text[span.start : span.end]
        if surface != surface.strip():
            report(span, "span is not trimmed of whitespace")
            continue
        first_word = surface.split()[0]
        if surface[0] in EDGE_PUNCTUATION and surface[0] not in "(":
            report(span, "span starts with punctuation")
        if surface[-1] in EDGE_PUNCTUATION:
            # An abbreviation the word splitter keeps whole ("Jr.", "U.S.") may end a span.
            allowed_stop = surface[-1] == "." and tokenize_words(surface)[0][-1] != "."
            allowed_paren = surface[-1] == ")" and "(" in surface
            if not (allowed_stop or allowed_paren):
                report(span, "span ends with punctuation")
        if first_word.lower() in DETERMINERS and not any(
            surface.startswith(name) for name in DETERMINER_NAMES
        ):
            report(span, f"span starts with the determiner {first_word!r}")
        if surface.endswith(POSSESSIVE_ENDINGS) and len(surface) > 2:
            report(span, "span ends with a possessive")
        if span.start > 0 and _is_word_char(text[span.start - 1]) and _is_word_char(surface[0]):
            report(span, "span starts inside a word")
        if span.end < len(text) and _is_word_char(text[span.end]) and _is_word_char(surface[-1]):
            report(span, "span ends inside a word")

    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    for left, right in zip(ordered, ordered[1:]):
        if right.start < left.end:
            report(right, f"overlaps span [{left.start}:{left.end}] {left.label}")
    return problems


@dataclass
class ConsistencyReport:
    """Surface strings labelled differently, or labelled in one place and missed in another."""

    conflicting_labels: dict[str, Counter] = field(default_factory=dict)
    unlabelled: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def findings(self, explained: Mapping[str, str] | None = None) -> list[str]:
        """Human-readable findings, leaving out surface strings listed in ``explained``."""
        explained = explained or {}
        lines = []
        for surface, counts in sorted(self.conflicting_labels.items()):
            if surface not in explained:
                lines.append(f"{surface!r} is labelled {dict(counts)}")
        for surface, places in sorted(self.unlabelled.items()):
            if surface not in explained:
                where = ", ".join(f"{doc}@{pos}" for doc, pos in places[:5])
                lines.append(f"{surface!r} is labelled elsewhere but not at {len(places)} place(s): {where}")
        return lines


def consistency_report(documents: Iterable[tuple[str, str, Sequence[Span]]]) -> ConsistencyReport:
    """Compare every labelled surface string with its other occurrences across ``documents``.

    ``documents`` yields ``(doc_id, text, spans)``. An occurrence inside or overlapping another
    span is not a miss (a name inside a longer name belongs to that name).
    """
    docs = list(documents)
    labels_of: dict[str, Counter] = defaultdict(Counter)
    for _, text, spans in docs:
        for span in spans:
            labels_of[text[span.start : span.end]][span.label] += 1

    report = ConsistencyReport()
    for surface, counts in labels_of.items():
        if len(counts) > 1:
            report.conflicting_labels[surface] = counts
    for doc_id, text, spans in docs:
        covered = sorted((s.start, s.end) for s in spans)
        for surface in labels_of:
            for start in _occurrences(text, surface):
                end = start + len(surface)
                if not any(s < end and start < e for s, e in covered):
                    report.unlabelled.setdefault(surface, []).append((doc_id, start))
    return report


def _occurrences(text: str, surface: str):
    """Start offsets of ``surface`` in ``text`` as a whole word (str.find: fast in C)."""
    start = text.find(surface)
    while start >= 0:
        end = start + len(surface)
        if (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
            yield start
        start = text.find(surface, start + 1)


def shingles(text: str, size: int = 5) -> set[tuple[str, ...]]:
    """Word ``size``-grams of a lowercased text, for near-duplicate detection."""
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}


def jaccard(a: set, b: set) -> float:
    """Jaccard similarity of two sets (0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 0.0


@dataclass
class DataSummary:
    """What ``validate-data`` found in an export."""

    problems: list[str]
    inconsistencies: list[str]
    label_counts: dict[str, Counter]
    documents: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.inconsistencies


def validate_documents(
    documents: Sequence, explained: Mapping[str, str] | None = None, near_duplicate: float = 0.5
) -> DataSummary:
    """Span hygiene, duplicates, near-duplicates across splits and label consistency.

    ``documents`` are ``training.data.export.Document`` objects (id, text, spans, split).
    """
    problems: list[str] = []
    for doc in documents:
        problems += [str(p) for p in span_problems(doc.text, doc.spans, doc.id)]
    by_text: dict[str, str] = {}
    for doc in documents:
        if doc.text in by_text:
            problems.append(f"{doc.id}: same text as {by_text[doc.text]}")
        by_text.setdefault(doc.text, doc.id)
    shingled = [(doc, shingles(doc.text)) for doc in documents]
    for i, (a, sa) in enumerate(shingled):
        for b, sb in shingled[i + 1 :]:
            if a.split != b.split and a.text != b.text:
                similarity = jaccard(sa, sb)
                if similarity >= near_duplicate:
                    problems.append(
                        f"{a.id} ({a.split}) and {b.id} ({b.split}) are near-duplicates"
                        f" across splits (shingle Jaccard {similarity:.2f})"
                    )
    report = consistency_report((d.id, d.text, d.spans) for d in documents)
    counts: dict[str, Counter] = defaultdict(Counter)
    sizes: Counter = Counter()
    for doc in documents:
        split = doc.split or "unsplit"
        sizes[split] += 1
        counts[split].update(span.label for span in doc.spans)
    return DataSummary(problems, report.findings(explained), dict(counts), dict(sizes))
