"""``python -m training audit CONFIG``: where the gold annotation is probably wrong.

Every annotated document is predicted by a model that never saw it: the documents (all
splits) are dealt into k folds by a seeded shuffle, and for each fold a fresh model is trained
on the other folds (10% of them, seeded, select the checkpoint) with ``training.train``'s own
``build_trainer``, then predicts the held-out fold as ``Tagger`` does (same windows, same
decoding). Where prediction and annotation differ, the difference becomes a candidate error
(``training.evaluation.error_analysis`` classifies it):

- ``missing``: the model marks a span where the annotation has none;
- ``extra``: the annotation marks a span where the model marks nothing;
- ``wrong_type``: same boundaries, another label;
- ``wrong_boundary``: overlapping spans with other boundaries.

Candidates are ranked by how little the model believes the annotation, on the words where
the two readings differ: ``score`` is ``1 - annotation_probability``, the mean over those
words of ``1 - P(annotation's tag)`` (the "self-confidence" ranking of confident learning;
words both readings tag alike say nothing about the error, and averaging them in would let a
one-word boundary slip score a third of a whole-span type swap). ``confidence``, the mean
probability of the model's own tags over the same words, is kept beside it. A model that
gives the annotation a fair chance (its own mistakes, mostly) ranks below one that all but
rules it out (the annotation's mistakes, mostly). ``benchmarks/audit.py`` measured this
against the margin ``confidence - annotation_probability`` and ``confidence`` alone: with 60
injected errors, 42 and 47 of them in the top 200 on two seeds, against 37 and 41 by the
margin. Augmentation is off during the audit (copies of a held-out document must not be
trained on).
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import DatasetDict, concatenate_datasets

from training.config import AugmentConfig, Config
from training.errors import ConfigError, DataError
from training.evaluation.error_analysis import classify_document_errors, error_record
from training.evaluation.report import audit_html, write_page
from training.inference.tagger import Entity, Tagger, tagged_entities
from training.labelstudio.client import LabelStudioConnection, TaskPush, get_project, push_tasks
from training.labelstudio.predictions import labeling_names, prediction_result
from training.modeling.encoder import load_tokenizer, resolve_model
from training.schema import BIO_TAGS
from training.text import Span, line_starts
from training.train import build_trainer, prepare_data, training_arguments

# error_analysis's kinds (gold = annotation, predicted = model) as the audit names them.
AUDIT_KINDS = {
    "spurious": "missing",
    "missed": "extra",
    "wrong_type": "wrong_type",
    "wrong_boundary": "wrong_boundary",
}
# Share of the training folds that selects each fold model's checkpoint.
SELECTION_SHARE = 0.1
FINDINGS_FILE = "findings.jsonl"


@dataclass
class AuditResult:
    """The ranked candidates and what produced them."""

    findings: list[dict]
    documents: int
    folds: int
    model: str
    # Per document: its text, annotated spans and the fold model's entities (for --push-top).
    texts: dict[str, str] = field(default_factory=dict)
    gold: dict[str, list[Span]] = field(default_factory=dict)
    predicted: dict[str, list[Entity]] = field(default_factory=dict)
    report: Path | None = None

    def summary_dict(self) -> dict:
        kinds = Counter(f["kind"] for f in self.findings)
        return {
            "documents": self.documents,
            "folds": self.folds,
            "model": self.model,
            "candidates": len(self.findings),
            "kinds": {kind: kinds[kind] for kind in AUDIT_KINDS.values()},
        }

    def summary(self) -> str:
        """Lines for the terminal: counts and the top candidates."""
        s = self.summary_dict()
        lines = [
            f"{s['documents']} documents, {s['folds']} folds: {s['candidates']} candidate errors ("
            + ", ".join(f"{k} {v}" for k, v in s["kinds"].items())
            + ")"
        ]
        for f in self.findings[:10]:
            shown = f["suggested"] or f["gold"]
            lines.append(
                f"  {f['rank']:>4}  {f['score']:.3f}  {f['kind']:<14} {f['doc_id']}: {shown['text']!r}"
                f" annotated {f['gold']['label'] if f['gold'] else '-'},"
                f" model {f['suggested']['label'] if f['suggested'] else '-'}"
            )
        if self.report is not None:
            lines.append(f"report: {self.report} ({FINDINGS_FILE} beside it)")
        return "\n".join(lines)


def assign_folds(doc_ids: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each document's fold: a seeded shuffle dealt round-robin (fold sizes differ by at most one)."""
    order = sorted(doc_ids)
    random.Random(seed).shuffle(order)
    return {doc_id: n % folds for n, doc_id in enumerate(order)}


def _mean_probability(probabilities: np.ndarray, tag_ids: Sequence[int], words: Sequence[int]) -> float:
    return float(np.mean([probabilities[w, tag_ids[w]] for w in words])) if words else 0.0


def document_findings(
    row: dict, probabilities: np.ndarray, tagger: Tagger, fold: int
) -> tuple[list[dict], list[Entity]]:
    """The candidate errors of one held-out document (unranked), and the model's entities."""
    text, word_spans = row["text"], row["token_spans"]
    tagged = tagger.decode_words(probabilities, row["tokens"], line_starts(text, word_spans))
    entities = tagged_entities(text, word_spans, tagged)
    # The annotation's and the model's tag for each word, as columns of the model's probabilities.
    column = {tag: n for n, tag in enumerate(tagger.labels)}
    gold_tags = [column[BIO_TAGS[t]] for t in row["ner_tags"]]
    model_tags = [column[tag] for tag, _ in tagged]
    gold = [Span(e["start"], e["end"], e["label"]) for e in row["entities"]]
    scores = {(e.start, e.end, e.label): e.score for e in entities}

    def words_of(*spans: Span | None) -> list[int]:
        return [
            w
            for w, (start, end) in enumerate(word_spans)
            if any(s is not None and start >= s.start and end <= s.end for s in spans)
        ]

    findings = []
    predicted = [Span(e.start, e.end, e.label) for e in entities]
    for error in classify_document_errors(0, gold, predicted):
        record = error_record(error, row["id"], text)
        if error.predicted is not None:
            key = (error.predicted.start, error.predicted.end, error.predicted.label)
            record["predicted"]["score"] = scores[key]
        words = [w for w in words_of(error.gold, error.predicted) if model_tags[w] != gold_tags[w]]
        confidence = _mean_probability(probabilities, model_tags, words)
        annotation_probability = _mean_probability(probabilities, gold_tags, words)
        findings.append(
            {
                "kind": AUDIT_KINDS[error.kind],
                "score": round(1 - annotation_probability, 4),
                "confidence": round(confidence, 4),
                "annotation_probability": round(annotation_probability, 4),
                "doc_id": row["id"],
                "fold": fold,
                "gold": record["gold"],
                "suggested": record["predicted"],
                "context": record["context"],
            }
        )
    return findings, entities


def rank(findings: list[dict], by: str = "score") -> list[dict]:
    """Highest ``by`` first (ties: document, position); ``rank`` counts from 1."""
    ordered = sorted(
        findings, key=lambda f: (-f[by], f["doc_id"], (f["suggested"] or f["gold"])["start"], f["kind"])
    )
    return [{"rank": n, **f} for n, f in enumerate(ordered, start=1)]


def audit(
    config: Config, folds: int = 5, out: Path | None = None, say: Callable[[str], None] = print
) -> AuditResult:
    """Cross-validated predictions over every annotated document, ranked into likely errors.

    ``out``: write ``findings.jsonl``, ``summary.json`` and ``index.html`` there (the work
    files of the fold models go in ``out/.work`` and are removed at the end).
    """
    if folds < 2:
        raise ConfigError(f"--folds {folds}: cross-validation needs at least 2 folds")
    out = Path(out) if out is not None else Path(config.training.output_dir).with_name("audit")
    work = out / ".work"
    model_path = resolve_model(config.model.name)
    tokenizer = load_tokenizer(model_path, config.model.case_markers)
    data = config.data.model_copy(update={"augment": AugmentConfig(), "dataset_dir": work / "dataset"})
    _, dataset = prepare_data(data, is_main=True)
    everything = concatenate_datasets([dataset[name] for name in dataset])
    ids = list(everything["id"])
    if len(ids) < folds:
        raise DataError(f"{config.data.source}: {len(ids)} documents cannot be dealt into {folds} folds")
    fold_of = assign_folds(ids, folds, config.training.seed)
    result = AuditResult([], len(ids), folds, str(config.model.name))
    findings: list[dict] = []
    for fold in range(folds):
        held_out = [n for n, doc_id in enumerate(ids) if fold_of[doc_id] == fold]
        rest = [n for n, doc_id in enumerate(ids) if fold_of[doc_id] != fold]
        random.Random(config.training.seed + fold).shuffle(rest)
        n_selection = max(1, round(len(rest) * SELECTION_SHARE))
        fold_data = {"train": everything.select(sorted(rest[n_selection:])),
                     "validation": everything.select(sorted(rest[:n_selection]))}  # fmt: skip
        say(
            f"fold {fold + 1}/{folds}: training on {len(fold_data['train'])} documents"
            f" ({n_selection} select the checkpoint), predicting {len(held_out)}"
        )
        args = training_arguments(config.training, work / f"fold-{fold}")
        trainer, _ = build_trainer(
            config.model,
            model_path,
            tokenizer,
            DatasetDict(fold_data),
            args,
            config.training.early_stopping_patience,
        )
        trainer.train()
        tagger = Tagger(
            trainer.model,
            tokenizer,
            max_length=config.model.max_length,
            stride=config.model.stride,
            batch_size=config.training.eval_batch_size,
            decoding=config.model.decoding,
        )
        rows = [everything[n] for n in held_out]
        for row, probabilities in zip(rows, tagger.word_probabilities([r["tokens"] for r in rows])):
            found, entities = document_findings(row, probabilities, tagger, fold)
            findings += found
            result.texts[row["id"]] = row["text"]
            result.gold[row["id"]] = [Span(e["start"], e["end"], e["label"]) for e in row["entities"]]
            result.predicted[row["id"]] = entities
        shutil.rmtree(work / f"fold-{fold}", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    result.findings = rank(findings)
    summary = result.summary_dict()
    result.report = write_page(
        out, f"Annotation audit: {config.data.source}", audit_html(summary, result.findings),
        FINDINGS_FILE, result.findings, summary,
    )  # fmt: skip
    return result


def review_tasks(result: AuditResult, top: int, names=None) -> list[dict]:
    """Label Studio tasks (export shape) for the documents of the ``top`` candidates.

    One task per document, in rank order: the annotation as it is, the fold model's entities
    as a prediction (its score: the best candidate's), and ``data.audit`` listing the
    candidates. ``data.doc_id`` is ``audit:<doc id>``, so it never collides with the original
    task and pushing twice imports nothing twice.
    """
    names = names or labeling_names(None)
    by_document: dict[str, list[dict]] = {}
    for finding in result.findings[:top]:
        by_document.setdefault(finding["doc_id"], []).append(finding)
    tasks = []
    for doc_id, found in by_document.items():
        text = result.texts[doc_id]
        gold = [Entity(s.label, s.start, s.end, text[s.start : s.end], 1.0) for s in result.gold[doc_id]]
        annotation = [
            {k: v for k, v in r.items() if k != "score"} for r in prediction_result(text, gold, names)
        ]
        notes = "; ".join(
            f"#{f['rank']} {f['kind']} {(f['suggested'] or f['gold'])['text']!r}"
            f" (annotated {f['gold']['label'] if f['gold'] else '-'},"
            f" model {f['suggested']['label'] if f['suggested'] else '-'}, {f['score']:.2f})"
            for f in found
        )
        tasks.append(
            {
                "data": {
                    names.text_field: text,
                    "doc_id": f"audit:{doc_id}",
                    "audit": notes,
                    "audit_rank": found[0]["rank"],
                },
                "annotations": [{"result": annotation, "was_cancelled": False, "ground_truth": False}],
                "predictions": [
                    {
                        "model_version": f"audit-fold-{found[0]['fold']}",
                        "score": max(0.0, found[0]["score"]),
                        "result": prediction_result(text, result.predicted[doc_id], names),
                    }
                ],
            }
        )
    return tasks


def push_findings(connection: LabelStudioConnection, project: int, result: AuditResult, top: int) -> TaskPush:
    """Create review tasks in ``project`` for the documents of the ``top`` candidates."""
    names = labeling_names(get_project(connection, project).label_config)
    return push_tasks(connection, project, review_tasks(result, top, names))
