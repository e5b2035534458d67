"""Label-error audit: does ``python -m training audit`` find errors injected into the corpus?

    .venv/bin/python benchmarks/audit.py                                # 3 folds x 2 epochs
    .venv/bin/python benchmarks/audit.py --folds 5 --epochs 6 --json audit.json

A copy of the bundled corpus (``data/corpus.json``) gets 60 seeded errors on distinct spans:
20 type swaps (another schema label), 20 dropped spans, 20 shifted boundaries (one word more
or, where that is not possible, one word less). ``training.audit.audit`` then runs on the
copy with ``configs/default.yaml`` (the packaged MiniLM) and the given folds, epochs and
window length. An injected error counts as found when a candidate in the same document
overlaps it (the corrupted span, or the dropped one); "right kind" also asks for the kind
that describes it (wrong_type, missing, wrong_boundary).

The list is ranked three ways: by the audit's score (``1 - annotation_probability``: the
model's disbelief in the annotation's tags, on the words the two readings tag differently),
by ``confidence`` alone (its probability for its own reading there) and by the margin
``confidence - annotation_probability`` (the audit's score before 2026-12-08), so the figures
compare them on the same candidates.

Baselines: the same candidate list in random order (expected found in the top N: found
anywhere in the list x N / list length), and N annotated spans picked at random for review
(expected: the 40 injected errors that are spans x N / all spans; dropped spans cannot be
picked). The corpus' own annotation errors, if any, compete with the injected ones.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark_results import finish  # noqa: E402  (this folder)

from training.schema import LABEL_NAMES  # noqa: E402
from training.text import is_symbol_word, line_starts, tokenize_words  # noqa: E402

KINDS = ("type_swap", "dropped", "shifted")
RIGHT_KIND = {"type_swap": "wrong_type", "dropped": "missing", "shifted": "wrong_boundary"}


def _shift(text: str, value: dict, taken: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The span one word longer (right, else left) or, failing both, one word shorter."""
    _, word_spans = tokenize_words(text)
    breaks = line_starts(text, word_spans)
    starts = {s: i for i, (s, _) in enumerate(word_spans)}
    ends = {e: i for i, (_, e) in enumerate(word_spans)}
    first, last = starts.get(value["start"]), ends.get(value["end"])
    if first is None or last is None:
        return None

    def free(i: int) -> bool:
        s, e = word_spans[i]
        word = text[s:e]
        return not is_symbol_word(word) and not any(a < e and s < b for a, b in taken)

    if last + 1 < len(word_spans) and not breaks[last + 1] and free(last + 1):
        return value["start"], word_spans[last + 1][1]
    if first > 0 and not breaks[first] and free(first - 1):
        return word_spans[first - 1][0], value["end"]
    if last > first:
        return value["start"], word_spans[last - 1][1]
    return None


def inject(tasks: list[dict], per_kind: int, seed: int) -> list[dict]:
    """Corrupt ``tasks`` in place: ``per_kind`` errors of each kind on distinct spans; the list."""
    rng = random.Random(seed)
    sites = [(t, r) for t in tasks for r in t["annotations"][0]["result"] if r.get("type") == "labels"]
    rng.shuffle(sites)
    injected, wanted = [], [kind for kind in KINDS for _ in range(per_kind)]
    for task, result in sites:
        if not wanted:
            break
        kind, value, text = wanted[0], result["value"], task["data"]["text"]
        record = {"kind": kind, "doc_id": task["data"]["doc_id"], "original": dict(value)}
        if kind == "type_swap":
            value["labels"] = [rng.choice([x for x in LABEL_NAMES if x != value["labels"][0]])]
        elif kind == "dropped":
            task["annotations"][0]["result"].remove(result)
        else:
            others = [
                (r["value"]["start"], r["value"]["end"])
                for r in task["annotations"][0]["result"]
                if r is not result
            ]
            shifted = _shift(text, value, others)
            if shifted is None:
                continue
            value["start"], value["end"] = shifted
            value.pop("text", None)
        record["corrupted"] = None if kind == "dropped" else {k: value[k] for k in ("start", "end", "labels")}
        injected.append(record)
        wanted.pop(0)
    return injected


def _overlaps(span: dict | None, start: int, end: int) -> bool:
    return span is not None and span["start"] < end and start < span["end"]


def found_at(findings: list[dict], error: dict) -> tuple[int | None, int | None]:
    """Rank of the first candidate overlapping the injected error, and of the first of the right kind."""
    where = error["corrupted"] or error["original"]
    start, end = where["start"], where["end"]
    any_rank = right_rank = None
    for f in findings:
        if f["doc_id"] != error["doc_id"]:
            continue
        if _overlaps(f["gold"], start, end) or _overlaps(f["suggested"], start, end):
            any_rank = any_rank or f["rank"]
            if f["kind"] == RIGHT_KIND[error["kind"]]:
                right_rank = right_rank or f["rank"]
    return any_rank, right_rank


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    parser.add_argument("--export", default=str(ROOT / "data/corpus.json"))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--per-kind", type=int, default=20, help="injected errors of each kind")
    parser.add_argument("--top", type=int, default=200, help="how many candidates a reviewer reads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", type=int, default=0, help="audit only the first N articles (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", metavar="OUT.json")
    parser.add_argument("--findings", metavar="OUT.jsonl", help="also write the ranked candidates")
    args = parser.parse_args()

    import torch

    from training.audit import audit, rank
    from training.config import load_config

    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = json.loads(Path(args.export).read_text(encoding="utf-8"))
    if args.docs:
        tasks = tasks[: args.docs]
    injected = inject(tasks, args.per_kind, args.seed)
    spans_total = sum(len(t["annotations"][0]["result"]) for t in tasks)
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        work = Path(tmp)
        export = work / "corrupted.json"
        export.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
        overrides = [
            f"data.source={export}",
            f"data.dataset_dir={work / 'dataset'}",
            f"training.output_dir={work / 'model'}",
            f"training.epochs={args.epochs}",
            f"model.max_length={args.max_length}",
            f"model.stride={min(64, args.max_length // 4)}",
            "training.progress=false",
            *args.set,
        ]
        config = load_config(args.config, overrides)
        began, cpu_began = time.perf_counter(), time.process_time()
        result = audit(config, folds=args.folds, out=work / "audit")
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    findings = result.findings
    if args.findings:
        Path(args.findings).write_text(
            "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in findings), encoding="utf-8"
        )
    # The same list ranked by the model's confidence in its own reading alone, and by its margin
    # for that reading over the annotation's (confidence - annotation_probability).
    unranked = [{k: v for k, v in f.items() if k != "rank"} for f in findings]
    by_confidence = rank(unranked, by="confidence")
    margins = [{**f, "margin": f["confidence"] - f["annotation_probability"]} for f in unranked]
    by_margin = rank(margins, by="margin")
    rows = []
    for error in injected:
        any_rank, right_rank = found_at(findings, error)
        confidence_rank, _ = found_at(by_confidence, error)
        margin_rank, _ = found_at(by_margin, error)
        rows.append(
            {
                **error,
                "rank": any_rank,
                "rank_right_kind": right_rank,
                "rank_by_confidence": confidence_rank,
                "rank_by_margin": margin_rank,
            }
        )
    top = min(args.top, len(findings))
    in_list = sum(r["rank"] is not None for r in rows)
    summary = {
        "settings": {
            "folds": args.folds,
            "epochs": args.epochs,
            "max_length": args.max_length,
            "per_kind": args.per_kind,
            "docs": args.docs or "all",
            "threads": args.threads or "default",
            "seed": args.seed,
            "top": args.top,
            "config": args.config,
            "overrides": args.set,
        },
        "documents": result.documents,
        "annotated_spans": spans_total,
        "candidates": len(findings),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "found_in_top": {},
        "found_in_list": {},
        "right_kind_in_top": {},
        "found_in_top_by_confidence": {},
        "found_in_top_by_margin": {},
        "random_order_expected_in_top": round(in_list * top / max(1, len(findings)), 1),
        "random_spans_expected": round(2 * args.per_kind * args.top / spans_total, 1),
        "injected": rows,
    }
    for kind in (*KINDS, "all"):
        mine = [r for r in rows if kind in ("all", r["kind"])]
        summary["found_in_top"][kind] = sum(r["rank"] is not None and r["rank"] <= top for r in mine)
        summary["found_in_list"][kind] = sum(r["rank"] is not None for r in mine)
        summary["right_kind_in_top"][kind] = sum(
            r["rank_right_kind"] is not None and r["rank_right_kind"] <= top for r in mine
        )
        for order in ("confidence", "margin"):
            summary[f"found_in_top_by_{order}"][kind] = sum(
                r[f"rank_by_{order}"] is not None and r[f"rank_by_{order}"] <= top for r in mine
            )
    print(f"{result.documents} documents, {len(findings)} candidates, {len(injected)} injected errors")
    header = ["top " + str(args.top), "right kind", "by conf.", "by margin", "anywhere"]
    print(f"{'kind':<10} " + " ".join(f"{h:>12}" for h in header))
    for kind in (*KINDS, "all"):
        counts = [
            summary[name][kind]
            for name in (
                "found_in_top",
                "right_kind_in_top",
                "found_in_top_by_confidence",
                "found_in_top_by_margin",
                "found_in_list",
            )
        ]
        print(f"{kind:<10} " + " ".join(f"{n:>12}" for n in counts))
    print(
        f"random order of the same list: {summary['random_order_expected_in_top']} expected in the top {top};"
        f" {args.top} random annotated spans: {summary['random_spans_expected']}"
    )
    print(f"audit time: {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU (this process)")
    return finish(summary, [], args.json)


if __name__ == "__main__":
    sys.exit(main())
