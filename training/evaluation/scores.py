"""Score a model on whole documents, with confidence intervals, and compare models.

Every word of every document is predicted (windows merged back) and scored against the full
gold sequence, never against a truncated copy. The scores (the ``--json`` format):

- ``strict`` / ``default``: seqeval entity-level P/R/F1 in strict IOB2 mode and in default
  mode, micro, macro and per label;
- ``spans``: exact character spans (same start, end and label);
- ``muc``: MUC-style matching as nervaluate defines it (``strict``, ``exact`` boundaries,
  ``partial`` overlap, ``type`` match), correct/incorrect/partial/missed/spurious counts with
  P/R/F1, overall and per label;
- ``invalid_i_starts``: predicted I- tags that continue no entity (IOB2 violations);
- ``confusion`` and ``errors``: type confusions and error kinds (``error_analysis``).

Every F1 has a 95% bootstrap interval over documents beside it (``ci_low``/``ci_high``): match
counts are computed once per document and resampled with numpy (``bootstrap``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Entities

from training.evaluation.bootstrap import (
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    Resampling,
    interval,
    paired_difference,
    resample_documents,
    settings,
)
from training.evaluation.error_analysis import (
    SpanError,
    classify_errors,
    confusion_matrix,
    error_counts,
    error_record,
)
from training.evaluation.label_map import check_labels, entity_labels, rename, rename_tags
from training.files import write_atomically
from training.schema import BIO_TAGS, LABEL_NAMES, OUTSIDE
from training.text import Span, line_starts, tags_to_spans

PRF_SCHEMES = ("strict", "default", "spans")
MUC_MODES = ("strict", "exact", "partial", "type")
MUC_FIELDS = ("correct", "incorrect", "partial", "missed", "spurious")


def _leaf(row: dict) -> dict:
    return {
        "precision": float(row["precision"]),
        "recall": float(row["recall"]),
        "f1": float(row["f1-score"]),
        "support": int(row["support"]),
    }


def seqeval_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], strict: bool) -> dict:
    """Entity-level micro, macro and per-label scores from seqeval (no intervals; the Trainer's metric)."""
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


# --- per-document match counts -------------------------------------------------------------


def seqeval_entities(tags: Sequence[str], strict: bool) -> set[tuple[str, int, int]]:
    """The entities of one tag sequence as seqeval reads them: ``(label, start, end)``."""
    if strict:
        return {(e.tag, e.start, e.end) for e in Entities([list(tags)], IOB2).entities[0]}
    return set(get_entities(list(tags)))


def invalid_i_starts(tags: Sequence[str]) -> int:
    """I- tags that do not continue an entity of their label (invalid in IOB2)."""
    count, previous = 0, OUTSIDE
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            count += 1
        previous = tag
    return count


@dataclass(frozen=True)
class MatchCounts:
    """Per-document match counts of one model's predictions: every score is computed from these.

    ``prf[scheme]``: (documents, labels, 3) tp/fp/fn; ``muc[mode]``: (documents, 5) and
    ``muc_per_label[mode]``: (documents, labels, 5) in ``MUC_FIELDS`` order.
    """

    labels: tuple[str, ...]
    prf: dict[str, np.ndarray]
    muc: dict[str, np.ndarray]
    muc_per_label: dict[str, np.ndarray]
    invalid_i_starts: int
    documents: int


def _prf_counts(
    gold: Sequence[set[tuple]], predicted: Sequence[set[tuple]], index: dict[str, int]
) -> np.ndarray:
    counts = np.zeros((len(gold), len(index), 3), dtype=np.int64)
    for d, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        for column, items in enumerate((g & p, p - g, g - p)):
            for item in items:
                counts[d, index[item[0]], column] += 1
    return counts


def _muc_counts(
    gold_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]], index: dict[str, int]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """nervaluate's strategies run per document, overall and per label exactly as its Evaluator does."""
    from nervaluate.loaders import ListLoader
    from nervaluate.strategies import (
        EntityTypeEvaluation,
        ExactEvaluation,
        PartialEvaluation,
        StrictEvaluation,
    )

    strategies = {
        "strict": StrictEvaluation(),
        "exact": ExactEvaluation(),
        "partial": PartialEvaluation(),
        "type": EntityTypeEvaluation(),
    }
    loader = ListLoader()
    gold = loader.load([list(t) for t in gold_tags]) if gold_tags else []
    predicted = loader.load([list(t) for t in predicted_tags]) if predicted_tags else []
    labels = list(index)
    overall = {mode: np.zeros((len(gold), len(MUC_FIELDS)), dtype=np.int64) for mode in MUC_MODES}
    per_label = {
        mode: np.zeros((len(gold), len(labels), len(MUC_FIELDS)), dtype=np.int64) for mode in MUC_MODES
    }
    for d, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        present = sorted({e.label for e in g} | {e.label for e in p})
        for mode, strategy in strategies.items():
            result, _ = strategy.evaluate(g, p, labels, d)
            overall[mode][d] = [getattr(result, name) for name in MUC_FIELDS]
            for label in present:
                result, _ = strategy.evaluate(
                    [e for e in g if e.label == label], [e for e in p if e.label == label], [label], d
                )
                per_label[mode][d, index[label]] = [getattr(result, name) for name in MUC_FIELDS]
    return overall, per_label


def count_matches(
    gold_tags: Sequence[Sequence[str]],
    predicted_tags: Sequence[Sequence[str]],
    gold_spans: Sequence[Sequence[Span]] | None = None,
    predicted_spans: Sequence[Sequence[Span]] | None = None,
) -> MatchCounts:
    """Match counts per document for every score (``spans`` only when spans are given)."""
    for n, (g, p) in enumerate(zip(gold_tags, predicted_tags, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"document {n}: {len(g)} gold tags but {len(p)} predicted")
    labels = entity_labels(t for doc in [*gold_tags, *predicted_tags] for t in doc)
    with_spans = gold_spans is not None and predicted_spans is not None
    if with_spans:
        labels |= {s.label for doc in [*gold_spans, *predicted_spans] for s in doc}
    index = {label: i for i, label in enumerate(sorted(labels))}
    prf = {}
    for scheme, strict in (("strict", True), ("default", False)):
        prf[scheme] = _prf_counts(
            [seqeval_entities(t, strict) for t in gold_tags],
            [seqeval_entities(t, strict) for t in predicted_tags],
            index,
        )
    if with_spans:
        prf["spans"] = _prf_counts(
            [{(s.label, s.start, s.end) for s in doc} for doc in gold_spans],
            [{(s.label, s.start, s.end) for s in doc} for doc in predicted_spans],
            index,
        )
    muc, muc_per_label = _muc_counts(gold_tags, predicted_tags, index)
    return MatchCounts(
        labels=tuple(index),
        prf=prf,
        muc=muc,
        muc_per_label=muc_per_label,
        invalid_i_starts=sum(invalid_i_starts(t) for t in predicted_tags),
        documents=len(gold_tags),
    )


# --- scores from counts --------------------------------------------------------------------


def _ratios(hits, predicted, gold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1, 0 for an empty denominator (seqeval's zero_division=0).

    F1 is NaN where there is nothing to score at all (no gold and no predicted entity): such a
    bootstrap sample says nothing about that score and is left out of its interval.
    """
    hits, predicted, gold = (np.asarray(x, dtype=float) for x in (hits, predicted, gold))
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, gold, out=np.zeros_like(hits), where=gold > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return precision, recall, np.where(predicted + gold > 0, f1, np.nan)


def prf_ratios(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 of tp/fp/fn totals (last axis)."""
    tp, fp, fn = np.moveaxis(np.asarray(totals), -1, 0)
    return _ratios(tp, tp + fp, tp + fn)


def muc_ratios(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nervaluate's precision, recall, F1 of MUC totals (last axis): a partial match counts half."""
    correct, incorrect, partial, missed, spurious = np.moveaxis(np.asarray(totals), -1, 0)
    matched = correct + incorrect + partial
    return _ratios(correct + 0.5 * partial, matched + spurious, matched + missed)


def _optional(value) -> float | None:
    return None if np.isnan(value) else float(value)


def _f1_fields(f1, low, high) -> dict:
    return {"f1": 0.0 if np.isnan(f1) else float(f1), "ci_low": _optional(low), "ci_high": _optional(high)}


def _row_nanmean(values: np.ndarray) -> np.ndarray:
    defined = ~np.isnan(values)
    sums = np.where(defined, values, 0.0).sum(axis=-1)
    n = defined.sum(axis=-1)
    return np.divide(sums, n, out=np.full(sums.shape, np.nan), where=n > 0)


def micro_f1(counts: np.ndarray, resampling: Resampling) -> tuple[float, np.ndarray]:
    """Micro F1 of per-document tp/fp/fn ``counts`` (documents, labels, 3) and its bootstrap samples."""
    point = prf_ratios(counts.sum(axis=(0, 1)))[2]
    samples = prf_ratios(resampling.totals(counts).sum(axis=1))[2]
    return float(np.nan_to_num(point)), samples


def prf_section(counts: np.ndarray, labels: Sequence[str], resampling: Resampling) -> dict:
    """``micro``, ``macro`` (over labels in gold or predictions, as seqeval) and ``per_label`` leaves."""
    totals = counts.sum(axis=0)
    present = totals.sum(axis=-1) > 0
    precision, recall, f1 = prf_ratios(totals)
    support = totals[:, 0] + totals[:, 2]
    label_samples = prf_ratios(resampling.totals(counts))[2]
    label_low, label_high = interval(label_samples)

    micro_p, micro_r, _ = prf_ratios(totals.sum(axis=0))
    micro_point, micro_samples = micro_f1(counts, resampling)
    micro = {
        "precision": float(micro_p),
        "recall": float(micro_r),
        **_f1_fields(micro_point, *interval(micro_samples)),
        "support": int(support.sum()),
    }
    macro_point = float(f1[present].mean()) if present.any() else 0.0
    macro = {
        "precision": float(precision[present].mean()) if present.any() else 0.0,
        "recall": float(recall[present].mean()) if present.any() else 0.0,
        **_f1_fields(macro_point, *interval(_row_nanmean(label_samples))),
        "support": int(support.sum()),
    }
    per_label = {
        labels[i]: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            **_f1_fields(f1[i], label_low[i], label_high[i]),
            "support": int(support[i]),
        }
        for i in np.flatnonzero(present)
    }
    return {"micro": micro, "macro": macro, "per_label": per_label}


def _muc_leaf(totals: np.ndarray, low, high) -> dict:
    leaf = {name: int(n) for name, n in zip(MUC_FIELDS, totals)}
    leaf["possible"] = leaf["correct"] + leaf["incorrect"] + leaf["partial"] + leaf["missed"]
    leaf["actual"] = leaf["correct"] + leaf["incorrect"] + leaf["partial"] + leaf["spurious"]
    precision, recall, f1 = muc_ratios(totals)
    return {**leaf, "precision": float(precision), "recall": float(recall), **_f1_fields(f1, low, high)}


def muc_section(counts: MatchCounts, resampling: Resampling) -> dict:
    """Per MUC mode: ``overall`` and ``per_label`` counts with P/R/F1 and F1 intervals."""
    section = {}
    for mode in MUC_MODES:
        overall, per_label = counts.muc[mode], counts.muc_per_label[mode]
        overall_low, overall_high = interval(muc_ratios(resampling.totals(overall))[2])
        label_low, label_high = interval(muc_ratios(resampling.totals(per_label))[2])
        label_totals = per_label.sum(axis=0)
        section[mode] = {
            "overall": _muc_leaf(overall.sum(axis=0), overall_low, overall_high),
            "per_label": {
                counts.labels[i]: _muc_leaf(label_totals[i], label_low[i], label_high[i])
                for i in np.flatnonzero(label_totals.sum(axis=-1) > 0)
            },
        }
    return section


def scores_from_counts(counts: MatchCounts, resampling: Resampling) -> dict:
    """The score sections of the evaluation JSON from per-document counts."""
    result = {scheme: prf_section(counts.prf[scheme], counts.labels, resampling) for scheme in counts.prf}
    result["muc"] = muc_section(counts, resampling)
    result["invalid_i_starts"] = counts.invalid_i_starts
    result["bootstrap"] = resampling.describe()
    result["documents"] = counts.documents
    return result


def _with_error_analysis(
    result: dict, gold_spans: Sequence[Sequence[Span]], predicted_spans: Sequence[Sequence[Span]]
) -> dict:
    result["confusion"] = confusion_matrix(gold_spans, predicted_spans)
    result["errors"] = error_counts(classify_errors(gold_spans, predicted_spans))
    result["documents"] = result.pop("documents")  # keep it last
    return result


def score(
    gold_tags: Sequence[Sequence[str]],
    predicted_tags: Sequence[Sequence[str]],
    gold_spans: Sequence[Sequence[Span]] | None = None,
    predicted_spans: Sequence[Sequence[Span]] | None = None,
    *,
    bootstrap: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict:
    """The evaluation JSON: ``strict``, ``default``, ``spans``, ``confusion`` and ``errors`` (when
    spans are given), ``muc``, ``invalid_i_starts``, ``bootstrap``, ``documents``."""
    counts = count_matches(gold_tags, predicted_tags, gold_spans, predicted_spans)
    result = scores_from_counts(counts, resample_documents(counts.documents, bootstrap, seed))
    if gold_spans is not None and predicted_spans is not None:
        result = _with_error_analysis(result, gold_spans, predicted_spans)
    return result


def span_scores(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> dict:
    """Exact character-span matching (same start, end and label), without intervals."""
    labels = sorted({s.label for doc in [*gold, *predicted] for s in doc})
    index = {label: i for i, label in enumerate(labels)}
    counts = _prf_counts(
        [{(s.label, s.start, s.end) for s in doc} for doc in gold],
        [{(s.label, s.start, s.end) for s in doc} for doc in predicted],
        index,
    )
    return prf_section(counts, labels, resample_documents(len(gold), 0))


# --- a model on documents ------------------------------------------------------------------


@dataclass
class Evaluation:
    """One model's predictions on documents beside the gold standard: scores, errors, report."""

    document_ids: list[str]
    texts: list[str]
    gold_tags: list[list[str]]
    predicted_tags: list[list[str]]
    gold_spans: list[list[Span]]
    predicted_spans: list[list[Span]]

    @cached_property
    def counts(self) -> MatchCounts:
        return count_matches(self.gold_tags, self.predicted_tags, self.gold_spans, self.predicted_spans)

    def scores(self, bootstrap: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED) -> dict:
        """The evaluation JSON (see ``score``)."""
        result = scores_from_counts(self.counts, resample_documents(self.counts.documents, bootstrap, seed))
        return _with_error_analysis(result, self.gold_spans, self.predicted_spans)

    @cached_property
    def errors(self) -> list[SpanError]:
        return classify_errors(self.gold_spans, self.predicted_spans)

    def error_records(self) -> list[dict]:
        """Every classified error with its document id and surrounding text (the JSONL lines)."""
        return [
            error_record(error, self.document_ids[error.document], self.texts[error.document])
            for error in self.errors
        ]


def run_evaluation(
    tagger,
    rows: Sequence[dict],
    *,
    label_map: dict[str, str] | None = None,
    data_labels: Sequence[str] = LABEL_NAMES,
    model_name: str = "the model",
) -> Evaluation:
    """Predict dataset rows (``id``, ``text``, ``tokens``, ``token_spans``, ``ner_tags``, ``entities``).

    The model's labels must match ``data_labels`` after ``label_map`` (``label_map``).
    """
    label_map = label_map or {}
    check_labels(entity_labels(tagger.labels), data_labels, label_map, model_name)
    predictions = tagger.predict_words(
        [row["tokens"] for row in rows], [line_starts(row["text"], row["token_spans"]) for row in rows]
    )
    predicted_tags = [rename_tags([tag for tag, _ in doc], label_map) for doc in predictions]
    gold_spans = []
    for row in rows:
        spans = [Span(e["start"], e["end"], rename(e["label"], label_map)) for e in row["entities"]]
        gold_spans.append([s for s in spans if s.label != OUTSIDE])
    return Evaluation(
        document_ids=[str(row.get("id", n)) for n, row in enumerate(rows)],
        texts=[row["text"] for row in rows],
        gold_tags=[rename_tags([BIO_TAGS[i] for i in row["ner_tags"]], label_map) for row in rows],
        predicted_tags=predicted_tags,
        gold_spans=gold_spans,
        predicted_spans=[tags_to_spans(row["token_spans"], tags) for row, tags in zip(rows, predicted_tags)],
    )


def evaluate_tagger(
    tagger,
    rows: Sequence[dict],
    *,
    label_map: dict[str, str] | None = None,
    bootstrap: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Score ``tagger`` on dataset rows: the evaluation JSON."""
    return run_evaluation(tagger, rows, label_map=label_map).scores(bootstrap, seed)


def pipeline_spans(model_dir: str | Path, texts: Sequence[str], stride: int = 64) -> list[list[Span]]:
    """The entities plain ``transformers`` finds (``pipeline("token-classification",
    aggregation_strategy="first", stride=...)``, one call per text), for parity checks
    against ``Tagger``."""
    from transformers import pipeline

    ner = pipeline("token-classification", model=str(model_dir), aggregation_strategy="first", stride=stride)
    return [[Span(int(e["start"]), int(e["end"]), e["entity_group"]) for e in ner(text)] for text in texts]


def compare(
    named: Sequence[tuple[str, Evaluation]], bootstrap: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED
) -> dict:
    """The ``comparison`` section: micro F1 with intervals per model, and a paired bootstrap test of
    the F1 difference for every two models scored on the same documents."""
    table = []
    for name, evaluation in named:
        resampling = resample_documents(evaluation.counts.documents, bootstrap, seed)
        row: dict = {"model": name, "documents": evaluation.counts.documents}
        for scheme in PRF_SCHEMES:
            point, samples = micro_f1(evaluation.counts.prf[scheme], resampling)
            row[scheme] = _f1_fields(point, *interval(samples))
        table.append(row)
    paired, unpaired = [], []
    for (name_a, a), (name_b, b) in itertools.combinations(named, 2):
        if a.document_ids != b.document_ids:
            unpaired.append({"a": name_a, "b": name_b, "reason": "scored on different documents"})
            continue
        resampling = resample_documents(len(a.document_ids), bootstrap, seed)
        entry: dict = {"a": name_a, "b": name_b}
        for scheme in PRF_SCHEMES:
            f1_a, samples_a = micro_f1(a.counts.prf[scheme], resampling)
            f1_b, samples_b = micro_f1(b.counts.prf[scheme], resampling)
            entry[scheme] = paired_difference(f1_a, f1_b, samples_a, samples_b)
        paired.append(entry)
    return {
        "metric": "micro F1",
        "table": table,
        "paired": paired,
        "unpaired": unpaired,
        "bootstrap": settings(bootstrap, seed),
    }


# --- text output ---------------------------------------------------------------------------


def format_interval(leaf: dict, digits: int = 3, dash: str = "-") -> str | None:
    """``low-high`` of a score's 95% bootstrap interval; None when it has none.

    The one interval formatter: text reports, the HTML report (``dash="&ndash;"``) and the model
    card (two digits) all use it.
    """
    if leaf.get("ci_low") is None or leaf.get("ci_high") is None:
        return None
    return f"{leaf['ci_low']:.{digits}f}{dash}{leaf['ci_high']:.{digits}f}"


def _interval_text(leaf: dict) -> str:
    return format_interval(leaf) or "-"


def format_scores(scores: dict, title: str = "") -> str:
    """A plain-text report: per-label and micro/macro P/R/F1 with the F1 interval (strict), default
    F1, exact spans, MUC scores, invalid I- starts and error kinds."""
    strict, default = scores["strict"], scores["default"]
    labels = sorted(set(strict["per_label"]) | set(default["per_label"]))
    header = f"{'label':<12}{'P':>7}{'R':>7}{'F1':>7}{'95% CI':>13}{'F1 def':>8}{'support':>9}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]

    def row(name: str, s: dict, d: dict) -> str:
        return (
            f"{name:<12}{s['precision']:>7.3f}{s['recall']:>7.3f}{s['f1']:>7.3f}"
            f"{_interval_text(s):>13}{d['f1']:>8.3f}{s['support']:>9d}"
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
            f"exact character spans: P {spans['precision']:.3f} R {spans['recall']:.3f}"
            f" F1 {spans['f1']:.3f} ({_interval_text(spans)})"
        )
    for mode, section in scores.get("muc", {}).items():
        o = section["overall"]
        lines.append(
            f"MUC {mode:<8} correct {o['correct']} incorrect {o['incorrect']} partial {o['partial']}"
            f" missed {o['missed']} spurious {o['spurious']}: F1 {o['f1']:.3f} ({_interval_text(o)})"
        )
    if "errors" in scores:
        lines.append("errors: " + ", ".join(f"{kind} {n}" for kind, n in scores["errors"].items()))
    if "invalid_i_starts" in scores:
        lines.append(f"invalid I- starts in the predictions: {scores['invalid_i_starts']}")
    note = "P/R/F1: seqeval strict IOB2; F1 def: default mode"
    if "bootstrap" in scores:
        b = scores["bootstrap"]
        note += f"; 95% CI: bootstrap over documents, {b['samples']} samples, seed {b['seed']}"
    lines.append(f"documents: {scores['documents']} ({note})")
    if "bootstrap" in scores and scores["documents"] < MIN_DOCUMENTS_FOR_INTERVALS:
        lines.append(unreliable_intervals_note(scores["documents"]))
    return "\n".join(lines)


# Bootstrap intervals over fewer documents than this say little (few distinct resamples).
MIN_DOCUMENTS_FOR_INTERVALS = 10


def unreliable_intervals_note(documents: int) -> str:
    return (
        f"warning: intervals from {documents} documents are unreliable (fewer than"
        f" {MIN_DOCUMENTS_FOR_INTERVALS}); annotate more test documents"
    )


def format_comparison(named_scores: Sequence[tuple[str, dict]], comparison: dict | None = None) -> str:
    """One table comparing several models' micro F1 (with intervals), then the paired tests."""
    header = f"{'model':<32}{'strict F1':>10}{'95% CI':>13}{'default F1':>11}{'span F1':>9}{'docs':>6}"
    lines = [header, "-" * len(header)]
    for name, s in named_scores:
        span_f1 = s["spans"]["micro"]["f1"] if "spans" in s else float("nan")
        lines.append(
            f"{name[-32:]:<32}{s['strict']['micro']['f1']:>10.3f}{_interval_text(s['strict']['micro']):>13}"
            f"{s['default']['micro']['f1']:>11.3f}{span_f1:>9.3f}{s['documents']:>6d}"
        )
    for entry in (comparison or {}).get("paired", []):
        test = entry["strict"]
        if test["p_value"] is None:
            continue
        lines.append(
            f"{entry['a']} - {entry['b']}: strict micro F1 difference {test['difference']:+.3f}"
            f" (95% CI {test['ci_low']:+.3f} to {test['ci_high']:+.3f}),"
            f" paired bootstrap p = {test['p_value']:.3f}"
        )
    for entry in (comparison or {}).get("unpaired", []):
        lines.append(f"{entry['a']} vs {entry['b']}: no paired test ({entry['reason']})")
    return "\n".join(lines)


def worst_labels(scores: dict, n: int = 3) -> list[tuple[str, float]]:
    """The ``n`` labels with the lowest strict F1 among those the documents contain (a label
    with no gold support has an F1 of 0 that says nothing about the model)."""
    per_label = scores["strict"]["per_label"]
    supported = ((k, v["f1"]) for k, v in per_label.items() if v.get("support", 0) > 0)
    return sorted(supported, key=lambda kv: kv[1])[:n]


def write_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    text = json.dumps(payload, indent=1) + "\n"
    write_atomically(Path(path), lambda target: target.write_text(text, encoding="utf-8"))
