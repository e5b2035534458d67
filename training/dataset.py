"""Documents -> a ``datasets.DatasetDict`` of words and BIO tags, split by document.

Words come from a deterministic tokenizer that splits punctuation, hyphens and possessives,
so entity boundaries fall between words. An entity boundary inside a word is reported (like
spaCy's W030), never silently widened.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    List,
    Value,
    concatenate_datasets,
    load_from_disk,
)
from datasets import Sequence as HFSequence

from training.config import Config, DataConfig
from training.errors import DataError
from training.files import write_atomically
from training.labelstudio import ConversionReport, Document, convert_tasks, iter_export
from training.schema import BIO_TAGS, LABEL2ID, OUTSIDE
from training.validation import Span

SPLITS = ("train", "validation", "test")
# Documents turned into Arrow at a time when building a split (bounds the Python-object peak).
BUILD_CHUNK = 1000
# Numbers with separators stay whole (1,200 / 3.5); possessive 's is its own word;
# other runs of letters/digits are words; every other non-space character stands alone.
WORD_PATTERN = re.compile(r"\d+(?:[.,]\d+)+|['’][sS](?!\w)|[^\W_]+|\S")

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


def tokenize_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of ``text`` and their character spans."""
    words, spans = [], []
    for match in WORD_PATTERN.finditer(text):
        words.append(match.group())
        spans.append(match.span())
    return words, spans


def spans_to_tags(
    word_spans: Sequence[tuple[int, int]], spans: Sequence[Span]
) -> tuple[list[str], list[Span]]:
    """BIO tags for words; also the spans whose boundaries fall inside a word (not tagged)."""
    tags = [OUTSIDE] * len(word_spans)
    starts = {start: i for i, (start, _) in enumerate(word_spans)}
    ends = {end: i for i, (_, end) in enumerate(word_spans)}
    misaligned = []
    for span in spans:
        first, last = starts.get(span.start), ends.get(span.end)
        if first is None or last is None or last < first:
            misaligned.append(span)
            continue
        tags[first] = f"B-{span.label}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{span.label}"
    return tags, misaligned


def tags_to_word_ranges(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(first_word, last_word, label)`` of each entity in a BIO sequence.

    Lenient like seqeval's default mode: an I- tag that does not continue an entity of the
    same label starts a new one.
    """
    entities: list[tuple[int, int, str]] = []
    current: list | None = None
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and current is not None and current[2] == label and current[1] == i - 1:
            current[1] = i
            continue
        if current is not None:
            entities.append(tuple(current))
            current = None
        if prefix in ("B", "I"):
            current = [i, i, label]
    if current is not None:
        entities.append(tuple(current))
    return entities


def tags_to_spans(word_spans: Sequence[Sequence[int]], tags: Sequence[str]) -> list[Span]:
    """Character spans of the entities in a BIO sequence over words with ``word_spans``."""
    return [
        Span(word_spans[first][0], word_spans[last][1], label)
        for first, last, label in tags_to_word_ranges(tags)
    ]


def assign_splits(documents: Sequence[Document], options: DataConfig) -> dict[str, list[Document]]:
    """Named splits win; the rest are shuffled with the config's seed and cut by its ratios."""
    named = {name: [d for d in documents if d.split == name] for name in SPLITS}
    rest = sorted((d for d in documents if d.split is None), key=lambda d: d.id)
    random.Random(options.split.seed).shuffle(rest)
    ratios = options.split
    n_train = round(len(rest) * ratios.train)
    n_validation = round(len(rest) * ratios.validation)
    named["train"] += rest[:n_train]
    named["validation"] += rest[n_train : n_train + n_validation]
    named["test"] += rest[n_train + n_validation :]
    return named


def document_record(document: Document) -> tuple[dict, list[Span]]:
    """The dataset row of one document, and its spans that do not fall on word boundaries."""
    words, word_spans = tokenize_words(document.text)
    tags, misaligned = spans_to_tags(word_spans, document.spans)
    row = {
        "id": document.id,
        "text": document.text,
        "entities": [{"start": s.start, "end": s.end, "label": s.label} for s in document.spans],
        "tokens": words,
        "token_spans": [list(span) for span in word_spans],
        "ner_tags": [LABEL2ID[tag] for tag in tags],
    }
    return row, misaligned


def build_dataset(
    documents: Sequence[Document], options: DataConfig, report: ConversionReport
) -> DatasetDict:
    """The DatasetDict of ``documents``; misaligned entities follow ``options.invalid_spans``."""
    splits = assign_splits(documents, options)
    return DatasetDict({split: _split_dataset(docs, options, report) for split, docs in splits.items()})


def _split_dataset(docs: Sequence[Document], options: DataConfig, report: ConversionReport) -> Dataset:
    # Rows become Arrow a chunk at a time: the words, spans and tags of a large export never
    # exist as Python lists all at once (they are several times the size of their Arrow form).
    parts = []
    for first in range(0, len(docs), BUILD_CHUNK):
        rows: dict[str, list] = {name: [] for name in FEATURES}
        for document in docs[first : first + BUILD_CHUNK]:
            row, misaligned = document_record(document)
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


def resolve_source(config: Config) -> Config:
    """``config`` with a file source: a ``data.label_studio`` project is pulled into a snapshot first.

    The returned config names the snapshot's export (and no server), so the config saved with
    a model rebuilds exactly the data it was trained on.
    """
    if config.data.label_studio is None:
        return config
    from training.labelstudio_client import pull_source, summary

    snapshot = pull_source(config.data.label_studio)
    print(f"pulled {summary(snapshot)}")
    data = config.data.model_copy(update={"source": snapshot.export_path, "label_studio": None})
    return config.model_copy(update={"data": data})


def build_from_config(config: Config, save: bool = True) -> tuple[DatasetDict, ConversionReport]:
    """``python -m training dataset``: export -> DatasetDict (saved under ``data.dataset_dir``).

    A Label Studio source (``data.label_studio``) is pulled first (``resolve_source``).
    """
    config = resolve_source(config)
    documents, report = load_documents(config.data)
    if not documents:
        raise DataError(f"{config.data.source}: no task has a usable annotation")
    dataset = build_dataset(documents, config.data, report)
    if save:
        save_dataset(dataset, report, config.data.dataset_dir)
    return dataset, report


def load_dataset_dir(directory: Path) -> DatasetDict:
    """A DatasetDict saved by ``save_dataset``."""
    if not Path(directory).is_dir():
        raise DataError(f"{directory}: no saved dataset (run python -m training dataset CONFIG)")
    return load_from_disk(str(directory))


def label_counts(dataset: DatasetDict) -> dict[str, Counter]:
    """Entities per label in each split."""
    return {
        name: Counter(e["label"] for row in split["entities"] for e in row) for name, split in dataset.items()
    }
