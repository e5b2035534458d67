"""Data scale: build the dataset from Label Studio exports of 1k, 5k and 10k articles.

    .venv/bin/python benchmarks/dataset.py                       # 1000 5000 10000
    .venv/bin/python benchmarks/dataset.py --sizes 1000 2000 --json out.json

The exports are made by varying the bundled corpus (``data/corpus.json``): copy ``k`` of an
article replaces every entity with another entity of the same label drawn from the corpus
(seeded), so texts, offsets and entity strings differ from copy to copy. Each size is built
in a fresh process, exactly as ``python -m training dataset`` does (read the export, convert,
split, build the DatasetDict, save it), and reports wall time and the process' peak resident
memory (``ru_maxrss``) beside its memory before the build (imports). Targets: 10k articles in
under 60 s and under 2 GB peak, cost growing linearly with the number of articles (judged on
CPU seconds per article, which other processes on a shared machine disturb less than wall
time).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmark_results import finish  # noqa: E402  (this folder)

TARGET_SECONDS = 60.0
TARGET_PEAK_MB = 2048.0


def varied_task(task: dict, copy: int, pool: dict[str, list[str]], task_id: int) -> dict:
    """Copy ``copy`` of a corpus task with its entities swapped for others of the same label."""
    rng = random.Random(f"{task['id']}:{copy}")
    text = task["data"]["text"]
    annotation = task["annotations"][0]
    spans = sorted(
        (r for r in annotation["result"] if r.get("type") == "labels"), key=lambda r: r["value"]["start"]
    )
    pieces, results, cursor, shift = [], [], 0, 0
    for n, result in enumerate(spans):
        start, end, label = result["value"]["start"], result["value"]["end"], result["value"]["labels"][0]
        surface = rng.choice(pool[label]) if copy else text[start:end]
        pieces.append(text[cursor:start])
        pieces.append(surface)
        new_start = start + shift
        shift += len(surface) - (end - start)
        cursor = end
        value = {"start": new_start, "end": new_start + len(surface), "text": surface, "labels": [label]}
        results.append({**result, "id": f"{task_id}-{n}", "value": value})
    pieces.append(text[cursor:])
    data = {
        **task["data"],
        "text": "".join(pieces),
        "doc_id": f"{task['data'].get('doc_id', task['id'])}-v{copy}",
    }
    return {
        **task,
        "id": task_id,
        "data": data,
        "annotations": [{**annotation, "result": results}],
    }


def write_export(corpus: list[dict], size: int, path: Path) -> None:
    """An export of ``size`` tasks varied from ``corpus``, written task by task."""
    pool: dict[str, list[str]] = defaultdict(list)
    for task in corpus:
        for result in task["annotations"][0]["result"]:
            if result.get("type") == "labels":
                value = result["value"]
                pool[value["labels"][0]].append(task["data"]["text"][value["start"] : value["end"]])
    # Astral characters would need UTF-16 offsets; the corpus has none, so Python offsets serve.
    assert not any(ord(ch) > 0xFFFF for task in corpus for ch in task["data"]["text"])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[\n")
        for n in range(size):
            task = varied_task(corpus[n % len(corpus)], n // len(corpus), pool, n + 1)
            handle.write(("," if n else "") + json.dumps(task, ensure_ascii=False) + "\n")
        handle.write("]\n")


def measure(export: Path, output: Path) -> dict:
    """Build the dataset of ``export`` into ``output`` (this process): seconds and memory."""
    from training.config import Config
    from training.data.dataset import build_from_config

    before = resource.getrusage(resource.RUSAGE_SELF)
    config = Config.model_validate({"data": {"source": str(export), "dataset_dir": str(output)}})
    start = time.perf_counter()
    dataset, report = build_from_config(config.data)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "peak_mb": after.ru_maxrss / 1024,
        "before_mb": before.ru_maxrss / 1024,
        "documents": report.kept,
        "entities": sum(report.entities.values()),
        "splits": {name: len(split) for name, split in dataset.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--corpus", default=str(ROOT / "data" / "corpus.json"))
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--measure", nargs=2, metavar=("EXPORT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]))))
        return 0

    corpus = json.loads(Path(args.corpus).read_text(encoding="utf-8"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="dataset-bench-") as tmp:
        for size in args.sizes:
            export = Path(tmp) / f"export-{size}.json"
            write_export(corpus, size, export)
            megabytes = export.stat().st_size / 2**20
            completed = subprocess.run(
                [sys.executable, __file__, "--measure", str(export), str(Path(tmp) / f"dataset-{size}")],
                capture_output=True,
                text=True,
                check=False,
            )
            if completed.returncode != 0:
                print(completed.stdout + completed.stderr)
                return 1
            figures = json.loads(completed.stdout.strip().splitlines()[-1])
            figures.update(size=size, export_mb=megabytes)
            rows.append(figures)
            print(
                f"{size:>6} articles ({megabytes:6.1f} MB export): {figures['seconds']:6.1f} s "
                f"({figures['cpu_seconds']:.1f} s CPU), "
                f"peak {figures['peak_mb']:6.0f} MB (imports {figures['before_mb']:.0f} MB), "
                f"{figures['documents']} documents, {figures['entities']} entities",
                flush=True,
            )
            export.unlink()
    base = rows[0]
    print(
        f"\n{'articles':>8}{'seconds':>9}{'CPU s':>7}{'CPU ms/article':>15}{'peak MB':>9}"
        f"{'growth MB':>10}{'x CPU':>7}"
    )
    for row in rows:
        print(
            f"{row['size']:>8}{row['seconds']:>9.1f}{row['cpu_seconds']:>7.1f}"
            f"{1000 * row['cpu_seconds'] / row['size']:>15.2f}{row['peak_mb']:>9.0f}"
            f"{row['peak_mb'] - row['before_mb']:>10.0f}"
            f"{row['cpu_seconds'] / base['cpu_seconds']:>6.1f}x (size {row['size'] / base['size']:.0f}x)"
        )
    failures = []
    largest = rows[-1]
    if largest["seconds"] >= TARGET_SECONDS:
        failures.append(
            f"{largest['size']} articles took {largest['seconds']:.1f} s (target < {TARGET_SECONDS})"
        )
    if largest["peak_mb"] >= TARGET_PEAK_MB:
        failures.append(
            f"{largest['size']} articles peaked at {largest['peak_mb']:.0f} MB (< {TARGET_PEAK_MB})"
        )
    per_article = [row["cpu_seconds"] / row["size"] for row in rows]
    if max(per_article) > 1.5 * min(per_article):
        failures.append("CPU time per article varies by more than 1.5x across sizes (not linear)")
    print(
        f"target: {largest['size']} articles < {TARGET_SECONDS:.0f} s and < {TARGET_PEAK_MB:.0f} MB, linear: "
        + ("met" if not failures else "MISSED")
    )
    return finish({"rows": rows}, failures, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
