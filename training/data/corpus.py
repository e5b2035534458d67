"""The bundled corpus: article source files with inline markup, and their Label Studio export.

An article file is front matter followed by the text, with entities marked inline::

    ---
    id: sea-001
    topic: arms-sale
    region: Southeast Asia
    split: train
    ---
    KUALA LUMPUR: [South Korea](GPE) remains committed to ...

``[surface](LABEL)`` marks one entity; square brackets are reserved for markup. The export
(``data/corpus.json``) is generated from these files by ``python -m training corpus build`` and
a test proves the two agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.data.checks import span_problems
from training.errors import DataError
from training.schema import ALL_SPLITS, FROM_NAME, LABEL_NAMES, TEXT_FIELD, TO_NAME
from training.text import Span

MARKUP = re.compile(r"\[([^\[\]\n]+)\]\(([A-Z_]+)\)")
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
REQUIRED_KEYS = ("id", "topic", "region")
# Articles written from real published reports carry their register and their source.
SOURCE_KEYS = ("register", "source_outlet", "source_title", "source_date", "source_url")
# Character bounds per register: briefs are short, features long, the rest news length.
REGISTER_LENGTHS = {
    "brief": (150, 600),
    "feature": (6000, 14000),
}
NEWS_LENGTH = (1200, 5000)
REGISTERS = (
    "wire",
    "press-release",
    "joint-statement",
    "transcript",
    "analysis",
    "brief",
    "feature",
)
# The fixed timestamp keeps the generated export byte-stable.
EXPORT_TIMESTAMP = "2026-11-28T00:00:00.000000Z"


@dataclass
class Article:
    """One annotated article: metadata, plain text and its entity spans (Python offsets)."""

    meta: dict[str, str]
    text: str
    spans: list[Span] = field(default_factory=list)

    @property
    def doc_id(self) -> str:
        return self.meta["id"]


def parse_markup(marked: str, source: str = "<text>") -> tuple[str, list[Span]]:
    """Strip ``[surface](LABEL)`` markup, returning the plain text and the spans it marked."""
    pieces: list[str] = []
    spans: list[Span] = []
    cursor = 0
    length = 0
    for match in MARKUP.finditer(marked):
        before = marked[cursor : match.start()]
        pieces.append(before)
        length += len(before)
        surface, label = match.group(1), match.group(2)
        if label not in LABEL_NAMES:
            line = marked.count("\n", 0, match.start()) + 1
            raise DataError(f"{source}: line {line}: unknown label {label!r} in {match.group(0)!r}")
        spans.append(Span(length, length + len(surface), label))
        pieces.append(surface)
        length += len(surface)
        cursor = match.end()
    pieces.append(marked[cursor:])
    text = "".join(pieces)
    for bracket in ("[", "]"):
        position = text.find(bracket)
        if position >= 0:
            raise DataError(
                f"{source}: stray {bracket!r} near {text[max(0, position - 30) : position + 30]!r}:"
                " square brackets are reserved for [surface](LABEL) markup"
            )
    return text, spans


def parse_article(path: Path) -> Article:
    """Read one article source file."""
    raw = path.read_text(encoding="utf-8")
    match = FRONT_MATTER.match(raw)
    if not match:
        raise DataError(f"{path}: missing front matter (--- id/topic/region/split ---)")
    meta: dict[str, str] = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise DataError(f"{path}: front matter line {line!r} is not 'key: value'")
        meta[key.strip()] = value.strip()
    missing = [key for key in REQUIRED_KEYS if not meta.get(key)]
    if missing:
        raise DataError(f"{path}: front matter lacks {', '.join(missing)}")
    if "split" in meta and meta["split"] not in ALL_SPLITS:
        raise DataError(f"{path}: split {meta['split']!r} is not one of {ALL_SPLITS}")
    if "register" in meta:
        missing = [key for key in SOURCE_KEYS if not meta.get(key)]
        if missing:
            raise DataError(f"{path}: an article from a real report needs {', '.join(missing)}")
        if meta["register"] not in REGISTERS:
            raise DataError(f"{path}: register {meta['register']!r} is not one of {REGISTERS}")
    text, spans = parse_markup(raw[match.end() :].strip("\n"), source=str(path))
    return Article(meta=meta, text=text, spans=spans)


def render_article(article: Article) -> str:
    """The source-file form of ``article`` (inverse of ``parse_article``)."""
    pieces, cursor = [], 0
    for span in sorted(article.spans, key=lambda s: s.start):
        pieces.append(article.text[cursor : span.start])
        pieces.append(f"[{article.text[span.start : span.end]}]({span.label})")
        cursor = span.end
    pieces.append(article.text[cursor:])
    header = "".join(f"{key}: {value}\n" for key, value in article.meta.items())
    return f"---\n{header}---\n{''.join(pieces)}\n"


def load_articles(directory: Path) -> list[Article]:
    """All ``*.md`` article files under ``directory``, sorted by file name."""
    paths = sorted(Path(directory).glob("*.md"))
    if not paths:
        raise DataError(f"{directory}: no article files (*.md)")
    return [parse_article(path) for path in paths]


def assign_corpus_splits(articles: Sequence[Article]) -> list[Article]:
    """Give a split to articles that have none, about 70/15/15, balanced across regions.

    Articles are interleaved region by region (each region in id order) and every 20
    consecutive ones give 3 to validation and 3 to test. Existing splits never change.
    """
    by_region: dict[str, list[Article]] = {}
    for article in sorted(articles, key=lambda a: a.doc_id):
        by_region.setdefault(article.meta["region"], []).append(article)
    queues = [by_region[region] for region in sorted(by_region)]
    interleaved = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
    changed = []
    for position, article in enumerate(interleaved):
        if "split" in article.meta:
            continue
        slot = position % 20
        article.meta["split"] = (
            "test" if slot in (2, 9, 16) else "validation" if slot in (5, 12, 19) else "train"
        )
        changed.append(article)
    return changed


def article_to_task(article: Article, task_id: int) -> dict:
    """A Label Studio task (export shape) holding ``article`` and one ground-truth annotation."""
    result = [
        {
            "id": f"{article.doc_id}-{n}",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "labels",
            "origin": "manual",
            "value": {
                "start": span.start,
                "end": span.end,
                "text": article.text[span.start : span.end],
                "labels": [span.label],
            },
        }
        for n, span in enumerate(sorted(article.spans, key=lambda s: s.start))
    ]
    data = {TEXT_FIELD: article.text, "doc_id": article.doc_id}
    data.update({k: v for k, v in article.meta.items() if k != "id"})
    return {
        "id": task_id,
        "data": data,
        "annotations": [
            {
                "id": task_id,
                "completed_by": 1,
                "result": result,
                "was_cancelled": False,
                "ground_truth": True,
                "created_at": EXPORT_TIMESTAMP,
                "updated_at": EXPORT_TIMESTAMP,
                "lead_time": 0.0,
            }
        ],
        "predictions": [],
        "drafts": [],
        "meta": {},
        "total_annotations": 1,
        "cancelled_annotations": 0,
    }


def build_export(articles: Sequence[Article]) -> list[dict]:
    """The Label Studio JSON export of ``articles`` (task ids 1..N in the given order)."""
    return [article_to_task(article, n) for n, article in enumerate(articles, start=1)]


def write_export(articles: Sequence[Article], path: Path) -> None:
    """Write the export of ``articles`` to ``path`` (deterministic bytes, one task a line:
    a JSON list that stays small and diffs article by article)."""
    lines = (json.dumps(task, ensure_ascii=False) for task in build_export(articles))
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")


def render_sources(articles: Sequence[Article]) -> str:
    """``data/corpus/SOURCES.md``: the real report behind each article written from one."""
    rows = [
        "| {id} | {split} | {register} | {outlet} | {title} | {date} | <{url}> |".format(
            id=a.doc_id,
            split=a.meta.get("split", ""),
            register=a.meta["register"],
            outlet=a.meta["source_outlet"].replace("|", "/"),
            title=a.meta["source_title"].replace("|", "/"),
            date=a.meta["source_date"],
            url=a.meta["source_url"],
        )
        for a in articles
        if "register" in a.meta
    ]
    return (
        "# Sources of the articles written from real reports\n\n"
        "Generated by `python -m training corpus build` from the articles' front matter; do not edit.\n"
        "Facts (names, events, figures, dates) come from these published reports; every sentence\n"
        "of the articles is our own.\n\n"
        "| article | split | register | outlet | title | date | URL |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def check_articles(articles: Iterable[Article]) -> list[str]:
    """Span problems of every article plus length bounds; an empty list means clean."""
    findings = []
    for article in articles:
        findings += [str(p) for p in span_problems(article.text, article.spans, article.doc_id)]
        low, high = REGISTER_LENGTHS.get(article.meta.get("register", ""), NEWS_LENGTH)
        if not low <= len(article.text) <= high:
            findings.append(f"{article.doc_id}: text has {len(article.text)} characters ({low}-{high})")
    return findings
