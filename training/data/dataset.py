"""Documents -> a ``datasets.DatasetDict`` of words and BIO tags, split by document.

Words come from a deterministic tokenizer that splits punctuation, hyphens and possessives,
so entity boundaries fall between words. An entity boundary inside a word is reported (like
spaCy's W030), never silently widened.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    List,
    Value,
    concatenate_datasets,
)
from datasets import Sequence as HFSequence

from training.config import AugmentConfig, DataConfig
from training.data.augment import Augmenter
from training.data.export import ConversionReport, Document, convert_tasks, iter_export
from training.errors import ConfigError, DataError
from training.files import write_atomically
from training.schema import BIO_TAGS, HELD_OUT_SPLITS, LABEL2ID, SPLITS
from training.text import Span, spans_to_tags, tokenize_words, widen_to_abbreviations

# Documents turned into Arrow at a time when building a split (bounds the Python-object peak).
BUILD_CHUNK = 1000

FEATURES = Features(
    {
        "id": Value("string"),
        "text": Value("string"),
        "entities": List({"start": Value("int32"), "end": Value("int32"), "label": Value("string")}),
        "tokens": List(Value("string")),
        "token_spans": List(List(Value("int32"))),
        "ner_tags": HFSequence(ClassLabel(names=list(BIO_TAGS))),
    }
)


def assign_splits(documents: Sequence[Document], options: DataConfig) -> dict[str, list[Document]]:
    """Named splits win; the rest are shuffled with the config's seed and cut by its ratios.

    Small projects still get a validation and a test document when there are three or more
    unnamed documents (taken from the training share). Held-out splits (``realnews``) come
    only from documents that name them. ``split.refit`` moves the validation documents into
    training.
    """
    named = {name: [d for d in documents if d.split == name] for name in SPLITS}
    for name in HELD_OUT_SPLITS:
        held_out = [d for d in documents if d.split == name]
        if held_out:
            named[name] = held_out
    rest = sorted((d for d in documents if d.split is None), key=lambda d: d.id)
    random.Random(options.split.seed).shuffle(rest)
    ratios = options.split
    n_validation = round(len(rest) * ratios.validation)
    n_test = len(rest) - round(len(rest) * ratios.train) - n_validation
    if len(rest) >= 3:
        n_validation = max(n_validation, 1 if ratios.validation > 0 and not named["validation"] else 0)
        n_test = max(n_test, 1 if ratios.test > 0 and not named["test"] else 0)
    n_train = len(rest) - n_validation - n_test
    named["train"] += rest[:n_train]
    named["validation"] += rest[n_train : n_train + n_validation]
    named["test"] += rest[n_train + n_validation :]
    if options.split.refit:
        named["train"] += named["validation"]
        named["validation"] = []
    return named


def augment_documents(documents: Sequence[Document], options: AugmentConfig) -> list[Document]:
    """Training documents with their augmented copies (ids ``<id>#aug<n>``), seeded."""
    augmenter = Augmenter(options)
    out = []
    for document in documents:
        if options.keep_original:
            out.append(document)
        for n in range(1, options.copies + 1):
            text, spans = augmenter(document.text, document.spans)
            out.append(replace(document, id=f"{document.id}#aug{n}", text=text, spans=spans))
    return out


def document_record(document: Document) -> tuple[dict, list[Span], list[tuple[Span, Span]]]:
    """The dataset row of one document, its spans that do not fall on word boundaries, and the
    spans widened to a whole abbreviation (``(old, new)``: "U.S" -> "U.S.")."""
    words, word_spans = tokenize_words(document.text)
    spans, widened = widen_to_abbreviations(document.text, document.spans, word_spans)
    tags, misaligned = spans_to_tags(word_spans, spans)
    row = {
        "id": document.id,
        "text": document.text,
        "entities": [{"start": s.start, "end": s.end, "label": s.label} for s in spans],
        "tokens": words,
        "token_spans": [list(span) for span in word_spans],
        "ner_tags": [LABEL2ID[tag] for tag in tags],
    }
    return row, misaligned, widened


def build_dataset(
    documents: Sequence[Document], options: DataConfig, report: ConversionReport
) -> DatasetDict:
    """The DatasetDict of ``documents``; misaligned entities follow ``options.invalid_spans``."""
    splits = assign_splits(documents, options)
    if not splits["train"]:
        raise DataError(
            f"{options.source}: no document is in the train split ({len(documents)} documents, all named"
            f" {sorted({d.split for d in documents})}); name some train, or leave splits to the seed"
        )
    if options.augment.copies:
        splits["train"] = augment_documents(splits["train"], options.augment)
    # An empty split cannot be saved and loaded again: it is left out (train says what it used).
    return DatasetDict(
        {split: _split_dataset(docs, options, report) for split, docs in splits.items() if docs}
    )


def _split_dataset(docs: Sequence[Document], options: DataConfig, report: ConversionReport) -> Dataset:
    # Rows become Arrow a chunk at a time: the words, spans and tags of a large export never
    # exist as Python lists all at once (they are several times the size of their Arrow form).
    parts = []
    for first in range(0, len(docs), BUILD_CHUNK):
        rows: dict[str, list] = {name: [] for name in FEATURES}
        for document in docs[first : first + BUILD_CHUNK]:
            row, misaligned, widened = document_record(document)
            for old, new in widened:
                report.adjust(
                    document.task_id,
                    f"doc {document.id}: entity [{old.start}:{old.end}] {old.label}"
                    f" {document.text[old.start : old.end]!r} widened to the whole abbreviation"
                    f" {document.text[new.start : new.end]!r}",
                )
            for span in misaligned:
                message = (
                    f"doc {document.id} (task {document.task_id}): entity [{span.start}:{span.end}]"
                    f" {span.label} {document.text[span.start : span.end]!r} does not start and end"
                    " on word boundaries"
                )
                if options.invalid_spans == "error":
                    raise DataError(message + " (set data.invalid_spans: drop to skip it)")
                report.dropped_spans["boundary inside a word"] += 1
                report.adjust(document.task_id, message + ": not tagged")
            for name, value in row.items():
                rows[name].append(value)
        parts.append(Dataset.from_dict(rows, features=FEATURES))
    if not parts:
        return Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def save_dataset(dataset: DatasetDict, report: ConversionReport, directory: Path) -> None:
    """Save the DatasetDict with its conversion report beside it, atomically."""

    def write(target: Path) -> None:
        dataset.save_to_disk(str(target))
        summary = report.to_dict()
        summary["splits"] = {name: len(split) for name, split in dataset.items()}
        (target / "conversion_report.json").write_text(json.dumps(summary, indent=1) + "\n")

    write_atomically(Path(directory), write)


def load_documents(options: DataConfig) -> tuple[list[Document], ConversionReport]:
    """Read the configured export and convert its tasks."""
    return convert_tasks(iter_export(options.source), options)


def build_from_config(data: DataConfig, save: bool = True) -> tuple[DatasetDict, ConversionReport]:
    """``python -m training dataset``: export -> DatasetDict (saved under ``data.dataset_dir``).

    The source is a file: a Label Studio project (``data.label_studio``) is pulled into a
    snapshot first, by ``training.labelstudio.client.resolve_source``.
    """
    if data.label_studio is not None:
        raise ConfigError(
            "data.label_studio: pull the project first (training.labelstudio.client.resolve_source)"
            " and build from the snapshot it names"
        )
    documents, report = load_documents(data)
    if not documents:
        raise DataError(f"{data.source}: no task has a usable annotation")
    dataset = build_dataset(documents, data, report)
    if save:
        save_dataset(dataset, report, data.dataset_dir)
    return dataset, report


def label_counts(dataset: DatasetDict) -> dict[str, Counter]:
    """Entities per label in each split."""
    return {
        name: Counter(e["label"] for row in split["entities"] for e in row) for name, split in dataset.items()
    }
