"""Label Studio tasks -> documents: choose an annotation, rebuild and check its spans.

Input is Label Studio's JSON export (a list of tasks, each with ``data``, ``annotations``,
one per annotator, ``predictions``, ...; https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks).
Offsets in an export are the browser's string indices: code points in Label Studio 1.23, UTF-16
code units in older versions and other tools; they are converted to Python indices here
(``training.text.python_index``). Reading files only: pulling a project from a server is
``training.labelstudio.client``'s job.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import DataConfig
from training.errors import DataError
from training.schema import ALL_SPLITS, LABEL_NAMES
from training.text import Span, python_index


@dataclass
class Document:
    """One annotated article: Python-offset spans over ``text``."""

    id: str
    text: str
    spans: list[Span]
    split: str | None = None
    task_id: Any = None


@dataclass
class ConversionReport:
    """What the conversion kept, excluded, ignored and adjusted, task by task."""

    tasks: int = 0
    kept: int = 0
    excluded: list[dict] = field(default_factory=list)
    ignored_results: Counter = field(default_factory=Counter)
    dropped_spans: Counter = field(default_factory=Counter)
    adjustments: list[dict] = field(default_factory=list)
    entities: Counter = field(default_factory=Counter)
    # Tasks whose (non-cancelled) annotators produced different spans; one was chosen.
    disagreements: list = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)

    def adjust(self, task_id: Any, message: str) -> None:
        self.adjustments.append({"task": task_id, "message": message})

    def to_dict(self) -> dict:
        return {
            "tasks": self.tasks,
            "documents_kept": self.kept,
            "documents_excluded": len(self.excluded),
            "excluded": self.excluded,
            "entities_per_label": dict(sorted(self.entities.items())),
            "ignored_results": dict(self.ignored_results),
            "dropped_spans": dict(self.dropped_spans),
            "adjustments": self.adjustments,
            "annotator_disagreements": self.disagreements,
            "duplicate_texts": self.duplicates,
            "labels_never_used": self.unused_labels(),
        }

    def unused_labels(self) -> list[str]:
        """Schema labels with no entity in the kept documents."""
        return [label for label in LABEL_NAMES if not self.entities.get(label)] if self.kept else []

    def summary(self) -> str:
        lines = [
            f"tasks: {self.tasks}, documents kept: {self.kept}, excluded: {len(self.excluded)}",
            "entities: " + ", ".join(f"{k} {v}" for k, v in sorted(self.entities.items())),
        ]
        if self.excluded:
            reasons = Counter(item["reason"] for item in self.excluded)
            lines.append("excluded: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
        if self.ignored_results:
            lines.append(
                "ignored results: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ignored_results.items()))
            )
        if self.dropped_spans:
            lines.append(
                "dropped spans: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped_spans.items()))
            )
        if self.adjustments:
            lines.append(f"adjustments: {len(self.adjustments)} (see the saved report)")
        if self.disagreements:
            lines.append(
                f"tasks whose annotators disagree (one annotation chosen): {len(self.disagreements)}"
            )
        if self.duplicates:
            lines.append(f"duplicate texts skipped: {len(self.duplicates)}")
        if self.unused_labels():
            lines.append("warning: labels never used in this data: " + ", ".join(self.unused_labels()))
        return "\n".join(lines)


def read_export(path: str | Path) -> list[dict]:
    """Read a Label Studio JSON export; a clear error for anything that is not a task list."""
    return list(iter_export(path))


def iter_export(path: str | Path) -> Iterator[dict]:
    """The tasks of a Label Studio JSON export, one at a time.

    A task list is streamed (``ijson``): a large export is converted task by task instead of
    being held whole as text and again as Python objects. Anything else (one task object,
    JSONL, a bare value) is small and read whole, to explain what is wrong with it.
    """
    import ijson

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: export file not found")
    with open(path, "rb") as handle:
        start = 3 if handle.read(3) == b"\xef\xbb\xbf" else 0
        handle.seek(start)
        first = b""
        while not first and (chunk := handle.read(1 << 16)):
            first = chunk.lstrip()[:1]
        if first != b"[":
            yield from _read_whole(path)
            return
        handle.seek(start)
        count = 0
        try:
            for task in ijson.items(handle, "item", use_float=True):
                if not isinstance(task, dict):
                    raise DataError(f"{path}: item {count} is a {type(task).__name__}, not a task object")
                count += 1
                yield task
        except ijson.JSONError as exc:
            detail = " ".join(str(exc).split())  # the parser's message spans lines
            raise DataError(f"{path}: not valid JSON (after {count} tasks): {detail}") from None


def _read_whole(path: Path) -> list[dict]:
    raw = path.read_text(encoding="utf-8-sig")
    if not raw.strip():
        raise DataError(f"{path}: the export file is empty")
    try:
        tasks = json.loads(raw)
    except json.JSONDecodeError as exc:
        first_line = raw.lstrip().split("\n", 1)[0]
        hint = ""
        if first_line.startswith("{") and raw.strip().count("\n") > 0:
            hint = " (it looks like JSONL: export as JSON from Label Studio, a list of tasks)"
        raise DataError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}{hint}") from None
    if isinstance(tasks, dict):
        tasks = [tasks] if "data" in tasks else tasks
    if not isinstance(tasks, list):
        raise DataError(f"{path}: expected a JSON list of tasks, got {type(tasks).__name__}")
    for n, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise DataError(f"{path}: item {n} is a {type(task).__name__}, not a task object")
    return tasks


# Characters outside the Basic Multilingual Plane (two UTF-16 code units in the browser).
ASTRAL = re.compile("[\U00010000-\U0010ffff]")


@functools.lru_cache(maxsize=8)
def _has_astral(text: str) -> bool:
    # Asked for every span of a task: scan each text once (a C regex, not a Python loop).
    return ASTRAL.search(text) is not None


def _crlf_to_raw(text: str, index: int) -> int:
    """Raw index of ``index`` counted in ``text`` with its CRLF line ends read as LF."""
    raw = 0
    for _ in range(index):
        raw += 2 if text.startswith("\r\n", raw) else 1
    return raw


def resolve_offsets(
    text: str, start: int, end: int, expected: str | None
) -> tuple[tuple[int, int], str] | None:
    """Python offsets of a span given as the browser or a script counted them.

    Label Studio 1.23's frontend writes code points (Python indices); older versions and other
    tools count UTF-16 code units (characters outside the Basic Multilingual Plane count
    twice), and browsers may read CRLF line ends as one character. When ``value.text`` is
    known, the first reading that reproduces it wins (Python first); without it, offsets are
    taken as Python indices.
    """
    candidates: list[tuple[str, int | None, int | None]] = [("python", start, end)]
    astral, crlf = _has_astral(text), "\r\n" in text
    if astral:
        candidates.append(("UTF-16", python_index(text, start), python_index(text, end)))
    if crlf:
        normalised = text.replace("\r\n", "\n")
        for how, s_, e_ in (
            ("CRLF", start, end),
            ("UTF-16 CRLF", python_index(normalised, start), python_index(normalised, end)),
        ):
            if s_ is not None and e_ is not None and e_ <= len(normalised):
                candidates.append((how, _crlf_to_raw(text, s_), _crlf_to_raw(text, e_)))
    valid = [
        (h, s_, e_)
        for h, s_, e_ in candidates
        if s_ is not None and e_ is not None and 0 <= s_ < e_ <= len(text)
    ]
    if expected is not None:
        valid = [(h, s_, e_) for h, s_, e_ in valid if text[s_:e_] == expected] or [
            (h, s_, e_) for h, s_, e_ in valid if h == "python"
        ]
    if not valid:
        return None
    how, s_, e_ = valid[0]
    return (s_, e_), how


def task_label(task: dict) -> str:
    """How messages name a task: its id and, where present, its document id."""
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    doc = data.get("doc_id")
    return f"task {task.get('id')}" + (f" (doc {doc})" if doc else "")


def task_text(task: dict, field: str, *, allow_blank: bool = False, hint: str = "") -> str:
    """The text a task holds in ``data.<field>``; a ``DataError`` naming the task otherwise.

    ``allow_blank``: an empty or whitespace-only text is returned (predicting it is harmless;
    an annotation of it is not). ``hint`` ends the message about a missing field.
    """
    name = task_label(task)
    data = task.get("data")
    if not isinstance(data, dict):
        raise DataError(f"{name}: has no 'data' object")
    if field not in data:
        raise DataError(f"{name}: data has no {field!r} field (fields: {sorted(data)}){hint}")
    text = data[field]
    if not isinstance(text, str) or not (allow_blank or text.strip()):
        raise DataError(f"{name}: data.{field} is empty or not a string")
    return text


def submitted_annotations(task: dict) -> list[dict]:
    """The task's annotations that count: not cancelled (skipped); empty ones included.

    Drafts are not annotations: Label Studio keeps them apart, in ``task["drafts"]``.
    """
    return [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]


def annotator_name(annotation: dict) -> str:
    """Who made an annotation: ``completed_by`` (a user id, or an object with ``email``/``id``
    in some exports), else ``annotation <id>``."""
    user = annotation.get("completed_by")
    if isinstance(user, dict):
        user = user.get("email") or user.get("id")
    return str(user) if user not in (None, "") else f"annotation {annotation.get('id')}"


def choose_annotation(task: dict, options: DataConfig) -> dict | None:
    """The annotation that becomes gold: never a cancelled one; ground truth, then latest."""
    usable = submitted_annotations(task)
    wanted = options.annotation.annotator
    if wanted is not None:
        usable = [
            a
            for a in usable
            if a.get("completed_by") == wanted
            or (isinstance(a.get("completed_by"), dict) and wanted in a["completed_by"].values())
        ]
    if not usable:
        return None

    def recency(a: dict) -> str:
        return str(a.get("updated_at") or a.get("created_at") or "")

    if options.annotation.prefer == "ground_truth":
        truths = [a for a in usable if a.get("ground_truth")]
        if truths:
            return max(truths, key=recency)
    return max(usable, key=recency)


def _exclusion_reason(task: dict, options: DataConfig) -> str:
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    if annotations and all(a.get("was_cancelled") for a in annotations):
        return "only cancelled annotations"
    if annotations and options.annotation.annotator is not None:
        return f"no annotation by annotator {options.annotation.annotator!r}"
    if task.get("drafts"):
        return "only drafts"
    if task.get("predictions"):
        return "only predictions"
    return "no annotation"


def _span_set(annotation: dict) -> frozenset:
    return frozenset(
        (r["value"].get("start"), r["value"].get("end"), tuple(r["value"].get("labels") or ()))
        for r in annotation.get("result") or []
        if isinstance(r, dict) and r.get("type") == "labels" and isinstance(r.get("value"), dict)
    )


def _annotators_disagree(task: dict) -> bool:
    return len({_span_set(a) for a in submitted_annotations(task)}) > 1


def _span_from_result(
    result: dict, text: str, where: str, report: ConversionReport, task_id: Any
) -> Span | str:
    """A Span from one labels result, or a string saying why it is invalid."""
    value = result.get("value")
    if not isinstance(value, dict):
        return "result has no value"
    start, end = value.get("start"), value.get("end")
    labels = value.get("labels")
    if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool):
        return f"start/end missing or not integers (start={start!r}, end={end!r})"
    if not isinstance(labels, list) or not labels:
        return "no label"
    if len(labels) > 1:
        return f"several labels on one span: {labels}"
    label = labels[0]
    if label not in LABEL_NAMES:
        return f"label {label!r} is not in the schema"
    if start < 0 or end <= start:
        return f"bad offsets start={start} end={end}"
    expected = value.get("text")
    resolved = resolve_offsets(text, start, end, expected)
    if resolved is None:
        if end > len(text):
            return f"offsets {start}:{end} past the end of the text ({len(text)} characters)"
        return f"offsets {start}:{end} do not fit the text (as Python, UTF-16 or CRLF offsets)"
    (start, end), how = resolved
    if (start, end) != (value["start"], value["end"]):  # a reading that changes nothing is no adjustment
        report.adjust(task_id, f"{where}: {how} offsets {value['start']}:{value['end']} -> {start}:{end}")
    surface = text[start:end]
    if expected is not None and surface != expected:
        return f"value.text {expected!r} differs from data.text[{start}:{end}] = {surface!r}"
    stripped = surface.strip()
    if not stripped:
        return "span covers only whitespace"
    if stripped != surface:
        lead = len(surface) - len(surface.lstrip())
        new_start, new_end = start + lead, start + lead + len(stripped)
        report.adjust(task_id, f"{where}: trimmed whitespace {start}:{end} -> {new_start}:{new_end}")
        start, end = new_start, new_end
    return Span(start, end, label)


def annotation_spans(
    task: dict, annotation: dict, text: str, options: DataConfig, report: ConversionReport
) -> list[Span]:
    """The checked spans of one annotation of ``task``: Python offsets, trimmed, no overlaps.

    Results other than ``labels`` (or from another ``from_name``) are counted and skipped; a bad
    span follows ``options.invalid_spans`` (an error naming task and result, or dropped and
    counted in ``report``).
    """
    name, task_id = task_label(task), task.get("id")
    spans: list[Span] = []
    for n, result in enumerate(annotation.get("result") or []):
        if not isinstance(result, dict):
            raise DataError(f"{name}: result {n} is not an object")
        kind = result.get("type")
        if kind != "labels":
            report.ignored_results[str(kind)] += 1
            continue
        if options.from_name is not None and result.get("from_name") != options.from_name:
            report.ignored_results[f"labels from {result.get('from_name')!r}"] += 1
            continue
        where = f"result {n} (id {result.get('id')})"
        span = _span_from_result(result, text, where, report, task_id)
        if isinstance(span, str):
            _invalid(options, report, name, task_id, where, span)
            continue
        spans.append(span)
    return _remove_overlaps(spans, text, options, report, name, task_id)


def task_to_document(task: dict, options: DataConfig, report: ConversionReport) -> Document | None:
    """Convert one task, or exclude it (counted in ``report``); bad spans follow the policy."""
    name = task_label(task)
    text = task_text(task, options.text_field, hint="; set data.text_field in the config")
    data = task["data"]
    task_id = task.get("id")
    annotation = choose_annotation(task, options)
    if annotation is None:
        report.excluded.append({"task": task_id, "reason": _exclusion_reason(task, options)})
        return None
    if _annotators_disagree(task):
        report.disagreements.append(task_id)
    spans = annotation_spans(task, annotation, text, options, report)
    doc_id = str(data.get("doc_id", task_id))
    split = data.get(options.split.field)
    if split is not None and split not in ALL_SPLITS:
        allowed = "/".join(ALL_SPLITS)
        raise DataError(f"{name}: data.{options.split.field} = {split!r} is not one of {allowed}")
    return Document(id=doc_id, text=text, spans=spans, split=split, task_id=task_id)


def _invalid(
    options: DataConfig, report: ConversionReport, name: str, task_id: Any, where: str, why: str
) -> None:
    if options.invalid_spans == "error":
        raise DataError(f"{name}: {where}: {why} (set data.invalid_spans: drop to skip such spans)")
    report.dropped_spans[why.split(" (")[0].split(":")[0]] += 1
    report.adjust(task_id, f"{where}: dropped: {why}")


def _remove_overlaps(
    spans: list[Span], text: str, options: DataConfig, report: ConversionReport, name: str, task_id: Any
) -> list[Span]:
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if kept and span.start < kept[-1].end:
            other = kept[-1]
            what = "duplicate span" if (other.start, other.end) == (span.start, span.end) else "overlaps"
            _invalid(
                options,
                report,
                name,
                task_id,
                f"span [{span.start}:{span.end}] {span.label} {text[span.start : span.end]!r}",
                f"{what} [{other.start}:{other.end}] {other.label}",
            )
            continue
        kept.append(span)
    return kept


def convert_tasks(tasks: Iterable[dict], options: DataConfig) -> tuple[list[Document], ConversionReport]:
    """Documents from tasks, plus the report of everything kept, excluded and adjusted."""
    report = ConversionReport()
    documents: list[Document] = []
    seen: dict[str, Any] = {}
    texts: dict[str, Any] = {}
    for task in tasks:
        report.tasks += 1
        document = task_to_document(task, options, report)
        if document is None:
            continue
        if document.text in texts:
            first = texts[document.text]
            if options.duplicate_texts == "error":
                raise DataError(
                    f"{task_label(task)}: same text as task {first} (a task imported twice?);"
                    " remove one, or set data.duplicate_texts: keep_first"
                )
            report.duplicates.append({"task": document.task_id, "same_as": first})
            continue
        texts[document.text] = document.task_id
        if document.id in seen:
            raise DataError(
                f"{task_label(task)}: duplicate document id {document.id!r} (also task {seen[document.id]})"
            )
        seen[document.id] = document.task_id
        documents.append(document)
        report.entities.update(span.label for span in document.spans)
    report.kept = len(documents)
    return documents, report
