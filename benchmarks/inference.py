"""Inference speed by article length and host: ``Tagger`` variants against the pipeline.

    .venv/bin/python benchmarks/inference.py                         # models/default, 3 rounds, 2 threads
    .venv/bin/python benchmarks/inference.py --model /tmp/m14 --rounds 3 --json out.json
    .venv/bin/python benchmarks/inference.py --methods pipeline,tagger-fp32,onnx-int8 --docs 8

Where: the CPU model, its flags that matter (AVX2, AVX-512 VNNI/BF16, AMX) and fp32/bf16
matrix-multiply peaks measured in the same run are printed first, so every figure says where
it was measured.

Documents: labelled articles the model was not trained on (validation, test and realnews
splits), in four length buckets of the model's tokens: <= 300 (each article cut after the
paragraphs that fit, entities inside kept), 300-600 and 600-1,200 (whole articles, two joined
where too few are that long) and > 2,000 (articles joined until over 2,000 tokens). ``--docs``
caps the documents per bucket.

Baselines: ``transformers.pipeline("token-classification", aggregation_strategy="first",
stride=<the model's>)`` called per document, as users do, with fp32 weights (``pipeline``) and
with the weights cast to bf16 (``pipeline-bf16w``, what an informed user would try).
Candidates: ``Tagger`` on the bucket's list of documents, one variant per method (see
``METHODS``): PyTorch fp32 / bf16 autocast / bf16 weights, windows sized to the document
(``-sized``: one window up to 512 tokens), batch sizes (``-bN``), ONNX Runtime fp32 / int8,
OpenVINO (fp32 forced, its own default precision, NNCF int8), and ``auto``
(``Tagger.load``'s default: what ``backend="auto"`` picks on this host).
Every method runs once per round, interleaved, and the median round is reported (these
machines are shared and noisy).

Accuracy: exact character-span F1 of each method against the gold spans and against the
PyTorch fp32 Tagger's own spans (agreement), per bucket; a candidate must stay within 0.5
points of the fp32 Tagger's gold F1 in every bucket.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark_results import finish  # noqa: E402  (this folder)

from training.config import Config, load_config  # noqa: E402
from training.data.dataset import build_from_config  # noqa: E402
from training.evaluation.scores import span_scores  # noqa: E402
from training.inference.tagger import Tagger  # noqa: E402
from training.modeling.hardware import (  # noqa: E402
    RELEVANT_CPU_FLAGS,
    choose_inference,
    cpu_flags,
    cpu_has_fast_bf16,
    cpu_model,
)
from training.text import Span  # noqa: E402

F1_TOLERANCE = 0.005  # 0.5 F1 points
BUCKETS = {"<=300": (0, 300), "300-600": (301, 600), "600-1200": (601, 1200), ">2000": (2001, 10**9)}
SIZED_WINDOW = 512
# Tagger variants: name -> Tagger.load keyword arguments (threads added at run time).
METHODS = {
    "tagger-fp32": {"precision": "fp32"},
    "tagger-fp32-sized": {"precision": "fp32", "single_window": SIZED_WINDOW},
    "tagger-fp32-b4": {"precision": "fp32", "batch_size": 4},
    "tagger-fp32-b64": {"precision": "fp32", "batch_size": 64},
    "tagger-bf16": {"precision": "bf16"},
    "tagger-bf16w": {"precision": "bf16-weights"},
    "tagger-bf16w-sized": {"precision": "bf16-weights", "single_window": SIZED_WINDOW},
    "onnx-fp32": {"backend": "onnx"},
    "onnx-int8": {"backend": "onnx", "quantize": "int8"},
    "onnx-int8-sized": {"backend": "onnx", "quantize": "int8", "single_window": SIZED_WINDOW},
    "onnx-int8-b1": {"backend": "onnx", "quantize": "int8", "batch_size": 1},
    "onnx-int8-b8": {"backend": "onnx", "quantize": "int8", "batch_size": 8},
    "openvino-fp32": {"backend": "openvino", "precision": "fp32"},
    "openvino": {"backend": "openvino"},  # OpenVINO's own precision: bf16 where the CPU has it
    "openvino-sized": {"backend": "openvino", "single_window": SIZED_WINDOW},
    "openvino-int8": {"backend": "openvino", "quantize": "int8"},
    "openvino-int8-sized": {"backend": "openvino", "quantize": "int8", "single_window": SIZED_WINDOW},
    "openvino-int8-b2": {"backend": "openvino", "quantize": "int8", "batch_size": 2},
    "openvino-int8-b16": {"backend": "openvino", "quantize": "int8", "batch_size": 16},
    "auto": {},  # Tagger.load's default: backend="auto", what it picks on this host
}
DEFAULT_METHODS = (
    "pipeline,pipeline-bf16w,tagger-fp32,tagger-fp32-sized,tagger-bf16,tagger-bf16w,"
    "onnx-fp32,onnx-int8,onnx-int8-sized,openvino,openvino-int8,openvino-int8-sized,auto"
)


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of a plain ``size``-cubed matrix multiply (median of ``repeats``)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def load_method(model_dir: Path, options: dict, threads: int) -> Tagger:
    """The Tagger of one method."""
    return Tagger.load(model_dir, threads=threads, **options)


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, verbose=False)["input_ids"])


def cut_to_fit(row: dict, tokenizer, limit: int) -> dict | None:
    """The article's leading paragraphs that fit in ``limit`` tokens, with the entities inside."""
    text = row["text"]
    best = None
    end = text.find("\n\n")
    while end != -1:
        if token_count(tokenizer, text[:end]) > limit:
            break
        best = end
        end = text.find("\n\n", end + 2)
    if best is None:
        return None
    return {
        "text": text[:best],
        "entities": [e for e in row["entities"] if e["end"] <= best],
    }


def join(rows: list[dict]) -> dict:
    """Articles joined by a blank line, entity offsets shifted."""
    text, entities = "", []
    for row in rows:
        if text:
            text += "\n\n"
        entities += [
            {**e, "start": e["start"] + len(text), "end": e["end"] + len(text)} for e in row["entities"]
        ]
        text += row["text"]
    return {"text": text, "entities": entities}


def build_buckets(rows: list[dict], tokenizer, per_bucket: int, max_tokens: int) -> dict[str, list[dict]]:
    """Up to ``per_bucket`` labelled documents (and about ``max_tokens``, at least one document)
    per length bucket, built from ``rows``."""
    lengths = [token_count(tokenizer, row["text"]) for row in rows]
    buckets: dict[str, list[dict]] = {name: [] for name in BUCKETS}
    for row in rows:
        short = cut_to_fit(row, tokenizer, BUCKETS["<=300"][1])
        if short is not None and token_count(tokenizer, short["text"]) > 120:
            buckets["<=300"].append(short)
    for name in ("300-600", "600-1200"):
        low, high = BUCKETS[name]
        buckets[name] = [row for row, n in zip(rows, lengths) if low <= n <= high]
        pairs = [join(rows[i : i + 2]) for i in range(0, len(rows) - 1, 2)]
        buckets[name] += [p for p in pairs if low <= token_count(tokenizer, p["text"]) <= high]
    joined, current = [], []
    for row in rows:
        current.append(row)
        if token_count(tokenizer, join(current)["text"]) > BUCKETS[">2000"][0]:
            joined.append(join(current))
            current = []
    buckets[">2000"] = joined
    capped = {}
    for name, docs in buckets.items():
        capped[name], total = [], 0
        for doc in docs[:per_bucket]:
            if capped[name] and total + token_count(tokenizer, doc["text"]) > max_tokens:
                break
            capped[name].append(doc)
            total += token_count(tokenizer, doc["text"])
    return capped


def spans_of(entities: list[dict]) -> list[Span]:
    return [Span(e["start"], e["end"], e["label"]) for e in entities]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"), help="trained model directory")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every method")
    parser.add_argument("--docs", type=int, default=16, help="documents per bucket at most")
    parser.add_argument("--max-tokens", type=int, default=8000, help="tokens per bucket at most")
    parser.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated, of {', '.join(METHODS)}"
    )
    parser.add_argument("--buckets", default=",".join(BUCKETS), help="comma-separated buckets to run")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    flags = cpu_flags()
    print(f"CPU: {cpu_model()}; {args.threads} threads; torch {torch.__version__}")
    print("flags: " + ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in RELEVANT_CPU_FLAGS))
    # Emulated bf16 runs below 1 GFLOP/s: a 2048^3 product would take minutes.
    bf16_size = 2048 if cpu_has_fast_bf16(flags) else 512
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16, bf16_size)}
    print(
        f"matmul peak: fp32 {peak['fp32']:.1f} GFLOP/s (2048^3), "
        f"bf16 {peak['bf16']:.1f} GFLOP/s ({bf16_size}^3)"
    )
    choice = choose_inference(flags)
    print(f"backend='auto' here: {choice.reason}")

    model_dir = Path(args.model)
    config = load_config(model_dir / "training_config.yaml", ignore_unknown=True)
    dataset, _ = build_from_config(Config.model_validate(config.model_dump()).data, save=False)
    rows = [row for split in ("test", "realnews", "validation") if split in dataset for row in dataset[split]]
    stride = config.model.stride

    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [n for n in names if n not in METHODS and n not in ("pipeline", "pipeline-bf16w")]
    if unknown:
        parser.error(f"unknown methods {unknown}; use {', '.join(['pipeline', 'pipeline-bf16w', *METHODS])}")
    taggers: dict[str, Tagger] = {}
    skipped: dict[str, str] = {}
    for name in ["tagger-fp32"] + [n for n in names if n in METHODS and n != "tagger-fp32"]:
        start = time.perf_counter()
        try:
            taggers[name] = load_method(model_dir, METHODS[name], args.threads)
        except Exception as exc:  # e.g. openvino not installed or unable to read the graph
            skipped[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            print(f"{name}: skipped ({skipped[name]})")
            continue
        print(
            f"{name}: ready in {time.perf_counter() - start:.1f} s, {taggers[name].batch_size} windows/batch"
        )
    pipelines = {}
    for name in ("pipeline", "pipeline-bf16w"):
        if name in names:
            pipelines[name] = pipeline(
                "token-classification",
                model=str(model_dir),
                aggregation_strategy="first",
                stride=stride,
                device=-1,
                dtype=torch.bfloat16 if name == "pipeline-bf16w" else torch.float32,
            )

    def pipeline_runner(ner):
        def run(texts: list[str]) -> list[list[Span]]:
            return [[Span(e["start"], e["end"], e["entity_group"]) for e in ner(text)] for text in texts]

        return run

    def tagger_runner(tagger: Tagger):
        def run(texts: list[str]) -> list[list[Span]]:
            return [[Span(e.start, e.end, e.label) for e in found] for found in tagger(texts)]

        return run

    methods = {name: pipeline_runner(ner) for name, ner in pipelines.items()}
    methods |= {name: tagger_runner(t) for name, t in taggers.items() if name in names}
    tokenizer = taggers["tagger-fp32"].tokenizer
    wanted = [b.strip() for b in args.buckets.split(",")]
    buckets = {
        k: v for k, v in build_buckets(rows, tokenizer, args.docs, args.max_tokens).items() if k in wanted
    }
    tokens = {name: sum(token_count(tokenizer, d["text"]) for d in docs) for name, docs in buckets.items()}
    for name, docs in buckets.items():
        print(f"bucket {name}: {len(docs)} documents, {tokens[name]} tokens")

    for run in methods.values():  # warm-up: first calls allocate kernels and caches
        run([buckets[next(iter(buckets))][0]["text"]])
    times: dict[tuple[str, str], list[float]] = {}
    outputs: dict[tuple[str, str], list[list[Span]]] = {}
    for round_number in range(args.rounds):
        for bucket, docs in buckets.items():
            texts = [d["text"] for d in docs]
            for name, run in methods.items():
                start = time.perf_counter()
                outputs[(bucket, name)] = run(texts)
                times.setdefault((bucket, name), []).append(time.perf_counter() - start)
        print(f"round {round_number + 1}/{args.rounds} done", flush=True)

    results: dict = {
        "cpu": cpu_model(),
        "flags": sorted(f for f in RELEVANT_CPU_FLAGS if f in flags),
        "peak_gflops": peak,
        "threads": args.threads,
        "auto": choice.reason,
        "skipped": skipped,
        "buckets": {},
    }
    failures = []
    base_name = "pipeline" if "pipeline" in methods else next(iter(methods))
    for bucket, docs in buckets.items():
        gold = [spans_of(d["entities"]) for d in docs]
        reference = outputs[(bucket, "tagger-fp32")] if "tagger-fp32" in methods else None
        base = statistics.median(times[(bucket, base_name)])
        print(f"\n{bucket}: {len(docs)} documents, {tokens[bucket]} tokens (median of {args.rounds} rounds)")
        header = (
            f"{'method':<20}{'s':>8}{'docs/s':>9}{'tokens/s':>10}{'x ' + base_name:>16}"
            f"{'span F1':>9}{'vs fp32':>9}{'agree':>7}"
        )
        print(header)
        print("-" * len(header))
        results["buckets"][bucket] = {"documents": len(docs), "tokens": tokens[bucket], "methods": {}}
        fp32_f1 = span_scores(gold, reference)["micro"]["f1"] if reference is not None else None
        for name in methods:
            seconds = statistics.median(times[(bucket, name)])
            f1 = span_scores(gold, outputs[(bucket, name)])["micro"]["f1"]
            agree = span_scores(reference, outputs[(bucket, name)])["micro"]["f1"] if reference else None
            delta = None if fp32_f1 is None else f1 - fp32_f1
            figures = {
                "seconds": seconds,
                "docs_per_s": len(docs) / seconds,
                "tokens_per_s": tokens[bucket] / seconds,
                "speedup": base / seconds,
                "span_f1": f1,
                "delta_vs_fp32": delta,
                "agreement_with_fp32": agree,
                "all_seconds": times[(bucket, name)],
            }
            results["buckets"][bucket]["methods"][name] = figures
            print(
                f"{name:<20}{seconds:>8.2f}{figures['docs_per_s']:>9.2f}{figures['tokens_per_s']:>10.0f}"
                f"{figures['speedup']:>15.2f}x{f1:>9.4f}{100 * (delta or 0):>+8.2f}p"
                f"{'' if agree is None else f'{agree:>7.3f}'}"
            )
            if delta is not None and not name.startswith("pipeline") and abs(delta) > F1_TOLERANCE:
                failures.append(f"{bucket}: {name} span F1 {100 * delta:+.2f} points from the fp32 Tagger")
    if skipped:
        print("\nskipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    return finish(results, failures, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
