"""Archive tagging throughput: ``python -m training predict`` over N generated articles.

    .venv/bin/python benchmarks/predict.py --model models/default --n 100000        # the full figure
    .venv/bin/python benchmarks/predict.py --model /tmp/m14 --n 2000 --workers 1,2 --backend auto
    .venv/bin/python benchmarks/predict.py --model models/accurate --n 100000 --paragraphs 1,2 \
        --workers 2 --kill-after 300          # news briefs; killed after 5 minutes, then resumed

Articles are generated from the corpus' paragraphs (``--paragraphs`` random paragraphs each,
3-8 by default, seeded), so their lengths vary like the corpus'. For each ``--workers`` value
the verb runs in a subprocess over the same input into a fresh output; reported: documents/s,
tokens/s, the peak resident memory of the verb's whole process tree (sampled every 0.2 s),
and a check that the output has every id exactly once, in input order. ``--kill-after S``
SIGKILLs the verb's whole process group after S seconds and runs the same command again,
which must skip what was written and finish the rest (the figures then cover both runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark_results import finish  # noqa: E402  (this folder)

from training.data.export import iter_export, task_text  # noqa: E402
from training.modeling.hardware import cpu_model  # noqa: E402

MEMORY_LIMIT_BYTES = 2 * 1024**3  # the bound for one predict run


def generate(path: Path, n: int, seed: int = 0, paragraphs_per_article: tuple[int, int] = (3, 8)) -> int:
    """``n`` JSONL articles of a few corpus paragraphs (between the two bounds); their characters."""
    paragraphs = [
        p.strip()
        for task in iter_export(ROOT / "data" / "corpus.json")
        for p in task_text(task, "text").split("\n\n")
        if len(p.strip()) > 40
    ]
    rng = random.Random(seed)
    characters = 0
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            text = "\n\n".join(rng.sample(paragraphs, rng.randint(*paragraphs_per_article)))
            characters += len(text)
            handle.write(json.dumps({"id": f"gen-{i}", "text": text}, ensure_ascii=False) + "\n")
    return characters


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker that just exited
            total += p.memory_info().rss
    return total


def run_predict(command: list[str], kill_after: float | None = None) -> tuple[float, int, str, bool]:
    """Run ``command``; its seconds, the peak RSS of its process tree, its stdout, and whether
    it was SIGKILLed (with its workers) after ``kill_after`` seconds."""
    start = time.perf_counter()
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the workers too
    )
    process = psutil.Process(child.pid)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tree_rss(process))
            except psutil.Error:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    killed = False
    try:
        out, _ = child.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        killed = True
    done.set()
    sampler.join()
    if child.returncode != 0 and not killed:
        raise SystemExit(f"predict failed ({child.returncode}): {' '.join(command)}")
    return time.perf_counter() - start, peak[0], out, killed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"), help="trained model directory")
    parser.add_argument("--n", type=int, default=100_000, help="generated articles")
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers values to run")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--paragraphs", default="3,8", help="MIN,MAX corpus paragraphs per article")
    parser.add_argument("--kill-after", type=float, help="SIGKILL the first run after S seconds, then resume")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    low, high = (int(x) for x in args.paragraphs.split(","))

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    results: dict = {
        "cpu": cpu_model(),
        "n": args.n,
        "backend": args.backend,
        "paragraphs": [low, high],
        "kill_after": args.kill_after,
        "runs": {},
    }
    failures = []
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        source = Path(tmp) / "articles.jsonl"
        start = time.perf_counter()
        characters = generate(source, args.n, paragraphs_per_article=(low, high))
        ids = [json.loads(line)["id"] for line in source.open(encoding="utf-8")]
        sample = [json.loads(line)["text"] for _, line in zip(range(500), source.open(encoding="utf-8"))]
        tokens_per_doc = sum(len(tokenizer(t, verbose=False)["input_ids"]) for t in sample) / len(sample)
        print(
            f"CPU: {cpu_model()}; {args.n} articles generated in {time.perf_counter() - start:.1f} s "
            f"({source.stat().st_size / 1e6:.1f} MB, {characters / args.n:.0f} characters and about "
            f"{tokens_per_doc:.0f} tokens each)"
        )
        for workers in [int(w) for w in args.workers.split(",")]:
            out = Path(tmp) / f"tags-{workers}.jsonl"
            command = [
                sys.executable, "-m", "training", "predict", args.model, str(source), "--out", str(out),
                "--backend", args.backend, "--workers", str(workers), "--no-progress",
            ]  # fmt: skip
            seconds, peak, said, killed = run_predict(command, args.kill_after)
            before_kill = None
            if killed:
                # A SIGKILL can leave half a line; the resumed run must mend it and skip the rest.
                before_kill = sum(1 for _ in out.open(encoding="utf-8"))
                print(f"--workers {workers}: killed after {seconds:.0f} s, {before_kill} lines; resuming")
                more_seconds, more_peak, said, _ = run_predict(command)
                seconds, peak = seconds + more_seconds, max(peak, more_peak)
            written = [json.loads(line)["id"] for line in out.open(encoding="utf-8")]
            complete = written == ids
            figures = {
                "killed_with_lines_written": before_kill,
                "seconds": seconds,
                "docs_per_s": args.n / seconds,
                "tokens_per_s": args.n * tokens_per_doc / seconds,
                "peak_rss_mb": peak / 1e6,
                "complete_in_order": complete,
                "hours_for_100k": 100_000 / (args.n / seconds) / 3600,
            }
            results["runs"][str(workers)] = figures
            print(
                f"--workers {workers}: {seconds:.0f} s (start-up included), "
                f"{figures['docs_per_s']:.1f} docs/s, "
                f"{figures['tokens_per_s']:.0f} tokens/s, peak RSS {figures['peak_rss_mb']:.0f} MB, "
                f"every id once in order: {complete}; 100,000 articles: {figures['hours_for_100k']:.1f} h "
                f"at this rate [{said.strip()}]"
            )
            if not complete:
                failures.append(f"--workers {workers}: output ids differ from the input's")
            if peak > MEMORY_LIMIT_BYTES:
                failures.append(f"--workers {workers}: peak RSS {peak / 1e9:.2f} GB > 2 GB")
    return finish(results, failures, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
