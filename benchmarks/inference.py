"""Inference speed: ``Tagger`` (PyTorch fp32/bf16, ONNX Runtime fp32/int8) against the pipeline.

    .venv/bin/python benchmarks/inference.py                  # models/default, 3 rounds, 2 threads
    .venv/bin/python benchmarks/inference.py --model models/x --rounds 5 --json out.json

Baseline: ``transformers.pipeline("token-classification", model=DIR,
aggregation_strategy="first", stride=<the model's stride>)`` called once per document, as users
do. Candidates: ``Tagger`` on the whole list of documents. Two document sets: the model's
test split (whole articles) and a long-article set (test articles joined three at a time, all
over 512 tokens). Every method runs once per round, interleaved with the others, and the
median round is reported (these machines are shared and noisy).

Accuracy: each Tagger variant's strict seqeval micro F1 on the test split must be within 0.5
points of the PyTorch fp32 model's; exact character-span F1 is reported for every method,
the pipeline included. Efficiency: model FLOPs actually run (windows, not padding) per second,
as a fraction of plain fp32 and bf16 matrix-multiply peaks measured in the same run.
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
from training.evaluation.scores import evaluate_tagger, span_scores  # noqa: E402
from training.inference.tagger import Tagger  # noqa: E402
from training.modeling.hardware import bf16_supported  # noqa: E402
from training.text import Span, tokenize_words  # noqa: E402

F1_TOLERANCE = 0.005  # 0.5 F1 points
TARGETS = {"tagger-torch": 2.0, "onnx-int8": 3.0}  # x the pipeline's documents/s on the test split


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a plain ``size``-cubed matrix multiply (median of ``repeats``)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def forward_flops(config, lengths: list[int]) -> float:
    """FLOPs of encoder forwards over windows of ``lengths`` tokens (matmuls, no padding)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    ff = getattr(config, "intermediate_size", 4 * h)
    per_layer_token = 2 * (4 * h * h + 2 * h * ff)
    total = 0.0
    for n in lengths:
        # projections and feed-forward, plus attention scores and their weighted sum
        total += layers * n * (per_layer_token + 4 * n * h) + 2 * n * h * config.num_labels
    return total


def pipeline_windows(tokenizer, text: str, stride: int) -> list[int]:
    """Window lengths the token-classification pipeline runs for ``text``."""
    encoding = tokenizer(
        text,
        truncation=True,
        max_length=tokenizer.model_max_length,
        stride=stride,
        return_overflowing_tokens=True,
    )
    return [len(ids) for ids in encoding["input_ids"]]


def span_f1(gold_rows: list[dict], predicted: list[list[Span]]) -> float:
    gold = [[Span(e["start"], e["end"], e["label"]) for e in row["entities"]] for row in gold_rows]
    return span_scores(gold, predicted)["micro"]["f1"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"), help="trained model directory")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every method")
    parser.add_argument(
        "--batch-size", type=int, help="Tagger windows per batch (default: each backend's DEFAULT_BATCH_SIZE)"
    )
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    model_dir = Path(args.model)
    config = load_config(model_dir / "training_config.yaml", ignore_unknown=True)
    dataset, _ = build_from_config(Config.model_validate(config.model_dump()).data, save=False)
    rows = list(dataset["test"])
    test_texts = [row["text"] for row in rows]
    long_texts = ["\n\n".join(test_texts[i : i + 3]) for i in range(0, len(test_texts) - 2, 3)]
    stride = config.model.stride

    taggers: dict[str, Tagger] = {"tagger-torch-fp32": Tagger.load(model_dir, precision="fp32")}
    if bf16_supported():
        taggers["tagger-torch-bf16"] = Tagger.load(model_dir, precision="bf16")
    else:
        print("no fast bf16 on this CPU (AVX-512 BF16/AMX): bf16 skipped, Tagger runs fp32")
    for quantize in (None, "int8"):
        start = time.perf_counter()
        tagger = Tagger.load(model_dir, backend="onnx", quantize=quantize, threads=args.threads)
        print(
            f"onnx {quantize or 'fp32'}: ready in {time.perf_counter() - start:.1f} s ({tagger.model.path})"
        )
        taggers[f"onnx-{quantize or 'fp32'}"] = tagger
    for tagger in taggers.values():
        tagger.batch_size = args.batch_size or tagger.batch_size
    print("windows per batch: " + ", ".join(f"{name} {t.batch_size}" for name, t in taggers.items()))
    ner = pipeline(
        "token-classification", model=str(model_dir), aggregation_strategy="first", stride=stride, device=-1
    )
    tokenizer = taggers["tagger-torch-fp32"].tokenizer
    model_config = taggers["tagger-torch-fp32"].model.config

    def run_pipeline(texts: list[str]) -> list[list[Span]]:
        return [[Span(e["start"], e["end"], e["entity_group"]) for e in ner(text)] for text in texts]

    def tagger_runner(tagger: Tagger):
        def run(texts: list[str]) -> list[list[Span]]:
            return [[Span(e.start, e.end, e.label) for e in found] for found in tagger(texts)]

        return run

    methods = {"pipeline": run_pipeline} | {name: tagger_runner(t) for name, t in taggers.items()}
    sets = {"test": test_texts, "long": long_texts}
    tokens = {name: sum(len(tokenizer(t)["input_ids"]) for t in texts) for name, texts in sets.items()}
    flops = {}
    for set_name, texts in sets.items():
        tagger_windows = taggers["tagger-torch-fp32"].encode([tokenize_words(t)[0] for t in texts]).lengths()
        flops[(set_name, "tagger")] = forward_flops(model_config, tagger_windows)
        flops[(set_name, "pipeline")] = forward_flops(
            model_config, [n for t in texts for n in pipeline_windows(tokenizer, t, stride)]
        )
    print(
        f"model {model_dir} ({model_config.model_type}, {model_config.num_hidden_layers} layers, "
        f"{model_config.hidden_size} hidden), window {config.model.max_length}/{stride}; "
        f"{args.threads} threads, torch {torch.__version__}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"test split: {len(test_texts)} documents, {tokens['test']} tokens; "
        f"long set: {len(long_texts)} documents, {tokens['long']} tokens "
        f"(shortest {min(len(tokenizer(t)['input_ids']) for t in long_texts)})"
    )

    # Warm-up: first calls allocate kernels and caches.
    for run in methods.values():
        run(test_texts[:2])
    peaks = {"fp32": [], "bf16": []}
    times: dict[tuple[str, str], list[float]] = {}
    outputs: dict[str, list[list[Span]]] = {}
    for round_number in range(args.rounds):
        peaks["fp32"].append(matmul_peak(torch.float32))
        peaks["bf16"].append(matmul_peak(torch.bfloat16))
        for set_name, texts in sets.items():
            for name, run in methods.items():
                start = time.perf_counter()
                result = run(texts)
                times.setdefault((set_name, name), []).append(time.perf_counter() - start)
                if set_name == "test":
                    outputs[name] = result
        print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    peak = {dtype: statistics.median(values) for dtype, values in peaks.items()}
    print(
        f"matmul peak (2048^3, {args.threads} threads): "
        f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f}"
    )

    # Accuracy on the test split
    strict = {
        name: evaluate_tagger(tagger, rows, bootstrap=0)["strict"]["micro"]["f1"]
        for name, tagger in taggers.items()
    }
    spans = {name: span_f1(rows, outputs[name]) for name in methods}
    reference = strict["tagger-torch-fp32"]

    results = {
        "peak_gflops": peak,
        "threads": args.threads,
        "batch_sizes": {name: tagger.batch_size for name, tagger in taggers.items()},
        "sets": {},
        "accuracy": {},
    }
    failures = []
    for set_name, texts in sets.items():
        base = statistics.median(times[(set_name, "pipeline")])
        print(
            f"\n{set_name}: {len(texts)} documents, {tokens[set_name]} tokens "
            f"(median of {args.rounds} rounds)"
        )
        header = (
            f"{'method':<20}{'s':>8}{'docs/s':>9}{'tokens/s':>10}{'x pipeline':>11}"
            f"{'GFLOP/s':>9}{'%fp32':>7}{'%bf16':>7}"
        )
        print(header)
        print("-" * len(header))
        results["sets"][set_name] = {}
        for name in methods:
            seconds = statistics.median(times[(set_name, name)])
            gflops = flops[(set_name, "pipeline" if name == "pipeline" else "tagger")] / seconds / 1e9
            figures = {
                "seconds": seconds,
                "docs_per_s": len(texts) / seconds,
                "tokens_per_s": tokens[set_name] / seconds,
                "speedup": base / seconds,
                "gflops": gflops,
                "fraction_fp32_peak": gflops / peak["fp32"],
                "fraction_bf16_peak": gflops / peak["bf16"],
                "all_seconds": times[(set_name, name)],
            }
            results["sets"][set_name][name] = figures
            print(
                f"{name:<20}{seconds:>8.2f}{figures['docs_per_s']:>9.2f}{figures['tokens_per_s']:>10.0f}"
                f"{figures['speedup']:>10.2f}x{gflops:>9.0f}{100 * gflops / peak['fp32']:>6.0f}%"
                f"{100 * gflops / peak['bf16']:>6.0f}%"
            )
    print(f"\naccuracy on the test split ({len(rows)} documents)")
    print(f"{'method':<20}{'strict F1':>10}{'vs fp32':>9}{'span F1':>9}")
    for name in methods:
        value = strict.get(name)
        delta = None if value is None else value - reference
        results["accuracy"][name] = {"strict_f1": value, "delta_vs_fp32": delta, "span_f1": spans[name]}
        strict_text = "" if value is None else f"{value:>10.4f}{100 * delta:>+8.2f}p"
        print(f"{name:<20}{strict_text:>19}{spans[name]:>9.4f}")
        if delta is not None and abs(delta) > F1_TOLERANCE:
            failures.append(f"{name}: strict F1 {100 * delta:+.2f} points from PyTorch fp32")
    speed = results["sets"]["test"]
    torch_best = max((n for n in speed if n.startswith("tagger-torch")), key=lambda n: speed[n]["speedup"])
    checks = {"tagger-torch": speed[torch_best]["speedup"], "onnx-int8": speed["onnx-int8"]["speedup"]}
    print()
    for key, target in TARGETS.items():
        verdict = "met" if checks[key] >= target else "MISSED"
        label = f"{key} ({torch_best})" if key == "tagger-torch" else key
        print(f"target {label}: {checks[key]:.2f}x the pipeline's documents/s (>= {target}x): {verdict}")
        if checks[key] < target:
            failures.append(f"{label}: {checks[key]:.2f}x < {target}x")
    return finish(results, failures, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
