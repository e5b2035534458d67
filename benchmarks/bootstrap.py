"""Bootstrap intervals: per-document counts resampled with numpy against re-scoring every resample.

    .venv/bin/python benchmarks/bootstrap.py                       # 24 documents, 1000 samples
    .venv/bin/python benchmarks/bootstrap.py --documents 100 --samples 500

Baseline: what a bootstrap without per-document counts does: for each sample, gather the
drawn documents and call ``seqeval.metrics.f1_score`` (strict IOB2) on them, for one number
(strict micro F1). Candidates, on the same sample weights: ``training.evaluation.scores`` counting once
and resampling with numpy, for that one number, and ``score()`` for the whole evaluation JSON
(seqeval both modes, MUC, every interval). Both give identical strict micro F1 samples; the
benchmark checks that before it prints the times (best of ``--rounds``) and their ratio.

Documents are synthetic: articles of ~500 words with entities of 13 labels, predictions that
change 10% of tags, so the counts are realistic for the bundled test split (24 documents).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seqeval.metrics import f1_score  # noqa: E402
from seqeval.scheme import IOB2  # noqa: E402

from training.evaluation.bootstrap import resample_documents  # noqa: E402
from training.evaluation.scores import count_matches, micro_f1, score  # noqa: E402
from training.schema import LABEL_NAMES  # noqa: E402


def synthetic_documents(documents: int, words: int, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    rng = random.Random(seed)
    gold, predicted = [], []
    for _ in range(documents):
        tags: list[str] = []
        while len(tags) < words:
            if rng.random() < 0.15:
                label = rng.choice(LABEL_NAMES)
                tags += [f"B-{label}"] + [f"I-{label}"] * rng.randint(0, 3)
            else:
                tags += ["O"] * rng.randint(1, 6)
        tags = tags[:words]
        noisy = [
            rng.choice(["O", f"B-{rng.choice(LABEL_NAMES)}", t]) if rng.random() < 0.1 else t for t in tags
        ]
        gold.append(tags)
        predicted.append(noisy)
    return gold, predicted


def best_of(rounds: int, function) -> tuple[float, object]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=24)
    parser.add_argument("--words", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gold, predicted = synthetic_documents(args.documents, args.words, args.seed)
    resampling = resample_documents(len(gold), args.samples, args.seed)

    def baseline() -> np.ndarray:
        values = []
        for weights in resampling.weights:
            drawn = [d for d, w in enumerate(weights) for _ in range(w)]
            values.append(
                f1_score(
                    [gold[d] for d in drawn],
                    [predicted[d] for d in drawn],
                    mode="strict",
                    scheme=IOB2,
                    zero_division=0,
                )
            )
        return np.array(values)

    def counted() -> np.ndarray:
        return micro_f1(count_matches(gold, predicted).prf["strict"], resampling)[1]

    def everything() -> dict:
        return score(gold, predicted, bootstrap=args.samples, seed=args.seed)

    baseline_time, baseline_samples = best_of(1, baseline)  # one round: it is the slow one
    counted_time, counted_samples = best_of(args.rounds, counted)
    everything_time, _ = best_of(args.rounds, everything)
    if not np.allclose(baseline_samples, counted_samples):
        raise SystemExit("the resampled counts disagree with re-scoring the resamples")
    print(f"{args.documents} documents x {args.words} words, {args.samples} bootstrap samples")
    print(f"{'method':<52}{'seconds':>9}{'speed-up':>10}")
    rows = [
        ("baseline: seqeval f1_score on every resample", baseline_time),
        ("counts once + numpy resampling (strict micro F1)", counted_time),
        ("score(): every score and interval incl. MUC", everything_time),
    ]
    for name, seconds in rows:
        print(f"{name:<52}{seconds:>9.3f}{baseline_time / seconds:>10.1f}")
    print("strict micro F1 samples identical to the baseline's: yes")


if __name__ == "__main__":
    main()
