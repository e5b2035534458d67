"""Load on the ML backend: K concurrent clients sending /predict for a fixed time, batching vs none.

    .venv/bin/python benchmarks/serving.py                            # models/default, 8 clients, 60 s
    .venv/bin/python benchmarks/serving.py --model /tmp/m --clients 4 --duration 20 --json out.json

For each mode (``--modes``: ``--batch-wait-ms`` values; 0 is no batching) the script starts
``python -m training serve MODEL`` in its own process on a free port of 127.0.0.1, warms it up,
then runs K client threads for ``--duration`` seconds. Each client loops: a body of 1-8 tasks
(uniformly drawn, seeded) of news articles from the bundled corpus (``data/corpus.json``,
median 2,200 characters), ``POST /predict``, wait for the answer, repeat. Reported per mode:
requests and tasks per second and p50/p95/p99 latency of the answers that came within the
window, errors (any non-200 answer or transport failure, also after the window), and the
server's resident memory sampled every second after the warm-up (start, end, peak, and the
slope over the second half of the run: flat memory is a slope near 0). ``--threads`` sets the
server's torch threads (on a host shared with other work, 1 thread can beat 2).

Then (``--baseline-seconds``) the Tagger alone, in this process with the same threads, tags
the same kind of bodies one after another: the rate the server could reach at most.

Targets (the issue's): zero errors at 8 clients for 60 s; memory flat (the peak of the second
half of the run within 10% of the peak of the first half: RSS moves with the batch sizes, it
must not keep growing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark_results import finish  # noqa: E402  (this folder)

MEMORY_GROWTH_LIMIT = 0.10


def cpu_name() -> str:
    """``lscpu``'s model name (or the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bodies(texts: list[str], count: int, max_tasks: int, seed: int) -> list[dict]:
    """``count`` request bodies of 1-``max_tasks`` articles each (seeded)."""
    rng = random.Random(seed)
    result = []
    for n in range(count):
        chosen = rng.sample(texts, rng.randint(1, max_tasks))
        result.append({"tasks": [{"id": n * 100 + i, "data": {"text": t}} for i, t in enumerate(chosen)]})
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mx) ** 2 for x in xs) or 1.0
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / denominator


def start_server(model: str, port: int, wait_ms: float, threads: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "training", "serve", model, "--port", str(port),
        "--batch-wait-ms", str(wait_ms), "--max-batch-texts", "32",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("serve did not answer /health within 300 s")


def run_mode(args, texts: list[str], wait_ms: float) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    process = start_server(args.model, port, wait_ms, args.threads)
    try:
        # Warm-up: a few bodies one at a time, then one concurrent round of all clients (the
        # largest batches the run will see), so memory is measured after the allocator's growth.
        warm = bodies(texts, args.clients + 2, args.max_tasks, args.seed + 1)
        with httpx.Client(timeout=300) as client:
            for body in warm[:2]:
                client.post(url, json=body).raise_for_status()
        with ThreadPoolExecutor(args.clients) as pool:
            for answer in pool.map(lambda b: httpx.post(url, json=b, timeout=300), warm[2:]):
                answer.raise_for_status()
        memory: list[tuple[float, float]] = []
        latencies: list[float] = []
        tasks_done = [0]
        errors: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        start = time.monotonic()

        def client_loop(k: int) -> None:
            pool = bodies(texts, 200, args.max_tasks, args.seed * 1000 + k)
            with httpx.Client(timeout=120) as client:
                n = 0
                while not stop.is_set():
                    body = pool[n % len(pool)]
                    n += 1
                    sent = time.monotonic()
                    try:
                        answer = client.post(url, json=body)
                        ok = answer.status_code == 200 and len(answer.json()["results"]) == len(body["tasks"])
                        problem = None if ok else f"HTTP {answer.status_code}: {answer.text[:200]}"
                    except httpx.HTTPError as exc:
                        problem = f"{type(exc).__name__}: {exc}"
                    done = time.monotonic()
                    with lock:
                        if problem is not None:
                            errors.append(problem)
                        elif done - start <= args.duration:  # answers after the window are not counted
                            latencies.append(done - sent)
                            tasks_done[0] += len(body["tasks"])

        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(args.clients)]
        for thread in threads:
            thread.start()
        while time.monotonic() - start < args.duration:
            memory.append((time.monotonic() - start, rss_mb(process.pid)))
            time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join()
        wall = args.duration
        status = httpx.get(url.replace("/predict", "/status"), timeout=30).json()["batching"]
    finally:
        process.terminate()
        process.wait(timeout=60)
    second_half = [s for s in memory if s[0] >= args.duration / 2]
    result = {
        "batch_wait_ms": wait_ms,
        "clients": args.clients,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "tasks": tasks_done[0],
        "errors": len(errors),
        "error_examples": errors[:5],
        "requests_per_s": round(len(latencies) / wall, 2),
        "tasks_per_s": round(tasks_done[0] / wall, 2),
        "latency_ms": {
            "p50": round(1000 * percentile(latencies, 50)),
            "p95": round(1000 * percentile(latencies, 95)),
            "p99": round(1000 * percentile(latencies, 99)),
            "max": round(1000 * max(latencies, default=float("nan"))),
        },
        "model_calls": status["batches"],
        "requests_per_model_call": round(status["requests"] / max(status["batches"], 1), 2),
        "rss_mb": {
            "start": round(memory[0][1]) if memory else None,
            "end": round(memory[-1][1]) if memory else None,
            "peak": round(max(m for _, m in memory)) if memory else None,
            "peak_first_half": round(max((m for t, m in memory if t < args.duration / 2), default=0)),
            "peak_second_half": round(max((m for _, m in second_half), default=0)),
            "slope_second_half_mb_per_min": round(slope_mb_per_min(second_half), 1),
        },
        "rss_samples": [(round(t, 1), round(m)) for t, m in memory],
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=str(ROOT / "models" / "default"), help="model dir (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per mode")
    parser.add_argument("--modes", default="5,0", help="--batch-wait-ms values to compare (0: no batching)")
    parser.add_argument("--max-tasks", type=int, default=8, help="tasks per request: 1 to this")
    parser.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    parser.add_argument(
        "--max-chars",
        type=int,
        default=0,
        help="cut each article to this many characters (0: whole articles)",
    )
    parser.add_argument("--corpus", default=str(ROOT / "data" / "corpus.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-seconds", type=float, default=30.0, help="then time the Tagger alone this long (0: skip)"
    )
    parser.add_argument("--json", metavar="OUT.json")
    args = parser.parse_args()

    texts = [task["data"]["text"] for task in json.loads(Path(args.corpus).read_text(encoding="utf-8"))]
    if args.max_chars:
        texts = [text[: args.max_chars] for text in texts]
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} before the run")
    results = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": args.model, "modes": []}
    failures = []
    for wait_ms in [float(m) for m in args.modes.split(",")]:
        mode = run_mode(args, texts, wait_ms)
        mode["load_average_after"] = round(os.getloadavg()[0], 1)
        results["modes"].append(mode)
        name = "no batching" if wait_ms == 0 else f"batching (wait {wait_ms:g} ms)"
        lat, mem = mode["latency_ms"], mode["rss_mb"]
        print(
            f"{name}: {mode['requests']} requests, {mode['tasks']} tasks in {mode['seconds']} s:"
            f" {mode['requests_per_s']} req/s, {mode['tasks_per_s']} tasks/s; latency p50 {lat['p50']} ms,"
            f" p95 {lat['p95']} ms, p99 {lat['p99']} ms; errors {mode['errors']};"
            f" {mode['requests_per_model_call']} requests per model call;"
            f" RSS {mem['start']} -> {mem['end']} MB"
            f" (peak {mem['peak']}, second-half slope {mem['slope_second_half_mb_per_min']} MB/min);"
            f" load average {mode['load_average_after']}"
        )
        if mode["errors"]:
            failures.append(f"{name}: {mode['errors']} errors, e.g. {mode['error_examples'][:2]}")
        if mem["peak_second_half"] > mem["peak_first_half"] * (1 + MEMORY_GROWTH_LIMIT):
            failures.append(
                f"{name}: memory peak grew from {mem['peak_first_half']} (first half) to"
                f" {mem['peak_second_half']} MB (second half)"
            )
    if args.baseline_seconds > 0:
        results["tagger_alone"] = tagger_alone(args, texts)
        alone = results["tagger_alone"]
        print(
            f"Tagger alone (this process, {args.threads} threads, one body at a time):"
            f" {alone['tasks']} tasks in {alone['seconds']} s: {alone['tasks_per_s']} tasks/s"
        )
    return finish(results, failures, args.json)


def tagger_alone(args, texts: list[str]) -> dict:
    """The model's own rate on the same kind of bodies, no HTTP: what the server can reach at most."""
    import torch

    from training.inference.tagger import Tagger

    torch.set_num_threads(args.threads)
    tagger = Tagger.load(args.model)
    pool = bodies(texts, 200, args.max_tasks, args.seed + 7)
    tagger.tag_with_confidence([t["data"]["text"] for t in pool[0]["tasks"]])
    start, tasks, n = time.monotonic(), 0, 1
    while time.monotonic() - start < args.baseline_seconds:
        batch = [t["data"]["text"] for t in pool[n % len(pool)]["tasks"]]
        tagger.tag_with_confidence(batch)
        tasks, n = tasks + len(batch), n + 1
    seconds = time.monotonic() - start
    return {"tasks": tasks, "seconds": round(seconds, 1), "tasks_per_s": round(tasks / seconds, 2)}


if __name__ == "__main__":
    sys.exit(main())
