"""Archive tagging throughput: ``python -m training predict`` over N generated articles.

    .venv/bin/python benchmarks/predict.py --model models/default --n 100000        # the full figure
    .venv/bin/python benchmarks/predict.py --model /tmp/m14 --n 2000 --workers 1,2 --backend auto

Articles are generated from the corpus' paragraphs (3-8 random paragraphs each, seeded), so
their lengths vary like the corpus'. For each ``--workers`` value the verb runs in a
subprocess over the same input into a fresh output; reported: documents/s, tokens/s, the
peak resident memory of the verb's whole process tree (sampled every 0.2 s), and a check
that the output has every id exactly once, in input order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
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


def generate(path: Path, n: int, seed: int = 0) -> int:
    """``n`` JSONL articles of 3-8 corpus paragraphs; returns their characters."""
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
            text = "\n\n".join(rng.sample(paragraphs, rng.randint(3, 8)))
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


def run_predict(command: list[str]) -> tuple[float, int, str]:
    """Run ``command``; its seconds, the peak RSS of its process tree, its stdout."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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
    out, _ = child.communicate()
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"predict failed ({child.returncode}): {' '.join(command)}")
    return time.perf_counter() - start, peak[0], out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"), help="trained model directory")
    parser.add_argument("--n", type=int, default=100_000, help="generated articles")
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers values to run")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    results: dict = {"cpu": cpu_model(), "n": args.n, "backend": args.backend, "runs": {}}
    failures = []
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        source = Path(tmp) / "articles.jsonl"
        start = time.perf_counter()
        characters = generate(source, args.n)
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
            seconds, peak, said = run_predict(command)
            written = [json.loads(line)["id"] for line in out.open(encoding="utf-8")]
            complete = written == ids
            figures = {
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
