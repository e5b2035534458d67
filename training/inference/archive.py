"""Tag archives: documents stream in, JSON lines stream out, resumable, over worker processes.

    tag_archive(documents, Path("tags.jsonl"), TaggerSpec("models/default", {"backend": "auto"}),
                workers=2)

``documents`` is any iterable of ``(id, text)``; it is read lazily, a chunk at a time, and at most
``2 x workers`` chunks are in flight, so memory stays bounded whatever the archive's size.
Each chunk's lines are appended to the output (flushed) in input order. A run that is
stopped (Ctrl-C, kill, a crash) leaves whole lines plus at most one cut-off last line; the
next run over the same output drops that fragment and skips every id already written, so a
resumed run ends with each document exactly once, in input order.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from training.errors import DataError, ModelError

DEFAULT_CHUNK_SIZE = 64


@dataclass(frozen=True)
class TaggerSpec:
    """How to load the Tagger (picklable, so worker processes load their own)."""

    model_dir: str
    options: dict = field(default_factory=dict)  # Tagger.load keyword arguments

    def load(self):
        from training.inference.tagger import Tagger

        return Tagger.load(self.model_dir, **self.options)


@dataclass
class ArchiveResult:
    """What one ``tag_archive`` run did."""

    tagged: int  # documents tagged and written by this run
    skipped: int  # documents whose id the output already had
    seconds: float


def tag_records(tagger, ids: Sequence[str], texts: Sequence[str]) -> list[dict]:
    """``{"id", "entities": [{"label", "start", "end", "text", "score"}]}`` per document."""
    return [
        {"id": doc_id, "entities": [entity.to_dict() for entity in found]}
        for doc_id, found in zip(ids, tagger.tag(list(texts)), strict=True)
    ]


def record_line(record: dict) -> str:
    """One output line (what ``predict`` and the Ray path both write)."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def written_ids(output: Path) -> set[str]:
    """Ids already in ``output``, after cutting off a last line that a stopped run left unfinished."""
    if not output.is_file():
        return set()
    ids: set[str] = set()
    keep = 0  # bytes up to the end of the last complete line
    with open(output, "rb") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break  # the fragment a killed run left: dropped below, its document is tagged again
            try:
                record = json.loads(line)
            except ValueError:
                raise DataError(
                    f"{output}: line {n} is not JSON; not an output of predict? Pass another --out"
                ) from None
            if not isinstance(record, dict) or "id" not in record:
                raise DataError(f"{output}: line {n} has no 'id'; not an output of predict?")
            ids.add(str(record["id"]))
            keep += len(line)
    if keep != output.stat().st_size:
        with open(output, "r+b") as handle:
            handle.truncate(keep)
    return ids


_worker_tagger = None


def _start_worker(spec: TaggerSpec) -> None:
    global _worker_tagger
    _worker_tagger = spec.load()


def _tag_in_worker(ids: list[str], texts: list[str]) -> list[str]:
    return [record_line(r) for r in tag_records(_worker_tagger, ids, texts)]


def _chunks(
    documents: Iterable[tuple[str, str]], done: set[str], size: int, counts: dict[str, int]
) -> Iterator[tuple[list[str], list[str]]]:
    """Chunks of ``size`` documents not in ``done``; a repeated id is an error (resuming keys on ids)."""
    seen: set[str] = set()
    ids: list[str] = []
    texts: list[str] = []
    for doc_id, text in documents:
        if doc_id in seen:
            raise DataError(
                f"document id {doc_id!r} appears twice in the input; ids must be unique to resume"
            )
        seen.add(doc_id)
        if doc_id in done:
            counts["skipped"] += 1
            continue
        ids.append(doc_id)
        texts.append(text)
        if len(ids) == size:
            yield ids, texts
            ids, texts = [], []
    if ids:
        yield ids, texts


def _tagged_chunks(
    chunks: Iterable[tuple[list[str], list[str]]], spec: TaggerSpec, workers: int
) -> Iterator[list[str]]:
    """The output lines of each chunk, in input order, tagged here or in ``workers`` processes."""
    if workers == 1:
        tagger = spec.load()
        for ids, texts in chunks:
            yield [record_line(r) for r in tag_records(tagger, ids, texts)]
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    spec = TaggerSpec(spec.model_dir, {"threads": threads, **spec.options})
    context = get_context("spawn")  # fork would copy a parent's torch threads and locks
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(spec,)
    ) as pool:
        pending: deque[Future] = deque()
        try:
            for ids, texts in chunks:
                pending.append(pool.submit(_tag_in_worker, ids, texts))
                if len(pending) >= 2 * workers:  # bounded: the input is read only as fast as it is tagged
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise ModelError(
                f"{spec.model_dir}: a tagging worker could not load the model or died;"
                " run with one worker to see why"
            ) from None


def tag_archive(
    documents: Iterable[tuple[str, str]],
    output: Path | None,
    spec: TaggerSpec,
    *,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    total: int | None = None,
    progress: bool = True,
) -> ArchiveResult:
    """Tag ``documents`` into ``output`` (JSON lines; ``None``: standard output, not resumable).

    ``workers`` > 1 tags in that many processes, each loading its own Tagger with
    ``cpu_count // workers`` threads (unless ``spec.options`` sets ``threads``). ``total``: the
    number of input documents, for the progress bar's ETA (documents/s is shown either way).
    """
    import time

    from tqdm import tqdm

    if workers < 1:
        raise DataError(f"workers={workers}: give 1 or more")
    if chunk_size < 1:
        raise DataError(f"chunk_size={chunk_size}: give 1 or more")
    output = Path(output) if output is not None else None
    done = written_ids(output) if output is not None else set()
    counts = {"skipped": 0, "tagged": 0}
    start = time.perf_counter()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(
                total=None if total is None else max(total - len(done), 0),
                unit="doc",
                desc="tagging",
                disable=not progress,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        )
        sink = stack.enter_context(open(output, "a", encoding="utf-8")) if output is not None else sys.stdout
        for lines in _tagged_chunks(_chunks(documents, done, chunk_size, counts), spec, workers):
            sink.write("".join(lines))
            sink.flush()  # in the OS's hands: a killed process loses none of it
            counts["tagged"] += len(lines)
            bar.update(len(lines))
    return ArchiveResult(counts["tagged"], counts["skipped"], time.perf_counter() - start)
