"""Active learning, measured: does annotating the least confident articles first pay?

    .venv/bin/python benchmarks/active_learning.py --json al.json   # the full loop, 3 seeds
    # what produced the README's figures: one process per seed (a partial JSON after every
    # model, so a stopped run keeps its rounds), then merged and plotted
    for s in 0 1 2; do .venv/bin/python benchmarks/active_learning.py --seeds $s --threads 1 \\
        --json al-seed$s.json & done; wait
    .venv/bin/python benchmarks/active_learning.py --merge al-seed*.json \\
        --plot docs/images/active-learning.png

Simulates a team's loop on the bundled corpus: the training split is the pool of articles
to annotate (their gold annotation plays the annotator); a model is trained from scratch
(``training.train.build_trainer``, configs/default.yaml: the packaged MiniLM) on ``--start``
articles, scored on the test split (strict seqeval micro F1, as ``Tagger`` reads it), and
``--step`` more articles are chosen for the next round by each strategy:

- ``random``: articles drawn at random;
- ``uncertainty``: the project's order, what ``push predictions`` sets in Label Studio: the
  lowest whole-article confidence first (``Tagger.tag_with_confidence``: the geometric mean
  over words of the chosen tag's probability);
- ``entity``: the articles whose least confident predicted entity is least confident (an
  article with no predicted entity counts with its whole-article confidence).

Every strategy starts from the same ``--start`` articles of a seed (one shared first model),
and ``--seeds`` repeat the whole loop. ``--pool-sample N`` scores only N random unlabelled
articles each round (the usual subsampled pool: cheaper, and the choice among them is the
strategy's). Each model trains for ``--epochs``, but at least ``--min-steps`` optimizer steps
at ``--learning-rate`` (3e-4, higher than the recipe's 1e-4), so the first, smallest rounds
are not starved (with the recipe's rate and 30 steps, 10-article models scored test F1
0.00-0.03; with these defaults 0.65-0.71); the model after the last step is used (no
per-epoch evaluation or checkpoint: a team this small has no validation set).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark_results import finish  # noqa: E402  (this folder)

from training.schema import BIO_TAGS  # noqa: E402
from training.text import tags_to_spans  # noqa: E402

STRATEGIES = ("random", "uncertainty", "entity")


def choose(
    strategy: str, candidates: list[int], scored: dict[int, tuple], n: int, rng: random.Random
) -> list[int]:
    """``n`` of ``candidates`` (pool indices); ``scored``: index -> (entities, confidence)."""
    if strategy == "random":
        return rng.sample(candidates, min(n, len(candidates)))
    if strategy == "uncertainty":
        key = {i: scored[i][1] for i in candidates}
    else:
        key = {i: min((e.score for e in scored[i][0]), default=scored[i][1]) for i in candidates}
    return sorted(candidates, key=lambda i: (key[i], i))[:n]


def cut(row: dict, words: int) -> dict:
    """A dataset row cut after its first ``words`` words (entities past the cut dropped)."""
    if len(row["tokens"]) <= words:
        return row
    end = row["token_spans"][words - 1][1]
    tags = list(row["ner_tags"][:words])
    if words < len(row["ner_tags"]) and BIO_TAGS[row["ner_tags"][words]].startswith("I-"):
        # An entity that runs past the cut is dropped, not shortened into a wrong span.
        i = words - 1
        while i >= 0 and BIO_TAGS[tags[i]] != "O":
            tag, tags[i] = BIO_TAGS[tags[i]], 0
            i -= 1
            if tag.startswith("B-"):
                break
    spans = row["token_spans"][:words]
    entities = [
        {"start": s.start, "end": s.end, "label": s.label}
        for s in tags_to_spans(spans, [BIO_TAGS[t] for t in tags])
    ]
    return {
        **row,
        "text": row["text"][:end],
        "tokens": row["tokens"][:words],
        "token_spans": spans,
        "ner_tags": tags,
        "entities": entities,
    }


class Loop:
    """Trains and scores one model per call, on the pool articles given."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from training.config import load_config
        from training.data.dataset import build_from_config
        from training.modeling.encoder import load_tokenizer, resolve_model

        overrides = [
            f"data.dataset_dir={work / 'dataset'}",
            f"training.output_dir={work / 'model'}",
            f"model.max_length={args.max_length}",
            f"model.stride={min(64, args.max_length // 4)}",
            "training.progress=false",
            f"training.learning_rate={args.learning_rate}",
            *args.set,
        ]
        self.config = load_config(args.config, overrides)
        self.args, self.work = args, work
        dataset, _ = build_from_config(self.config.data, save=False)
        if args.max_words:
            dataset = dataset.map(lambda row: cut(row, args.max_words))
        self.pool, self.test = dataset["train"], list(dataset["test"])
        self.model_path = resolve_model(self.config.model.name)
        self.tokenizer = load_tokenizer(self.model_path, self.config.model.case_markers)
        self.trainings = 0

    def train(self, labelled: list[int]):
        """A Tagger trained from scratch on the pool articles ``labelled``, and its test F1."""
        from datasets import DatasetDict
        from transformers.trainer_utils import IntervalStrategy, SaveStrategy

        from training.evaluation.scores import evaluate_tagger
        from training.inference.tagger import Tagger
        from training.train import build_trainer, split_windows, training_arguments

        config = self.config
        dataset = DatasetDict({"train": self.pool.select(sorted(labelled))})
        windows = len(split_windows(dataset["train"], self.tokenizer, config.model, owned_only=False))
        steps_per_epoch = math.ceil(windows / config.training.batch_size)
        epochs = max(self.args.epochs, self.args.min_steps / steps_per_epoch)
        training = config.training.model_copy(update={"epochs": epochs, "seed": self.args.current_seed})
        run_dir = self.work / f"run-{self.trainings}"
        arguments = training_arguments(training, run_dir)
        # No per-epoch evaluation or checkpoint: the model after the last step is the round's
        # model (a team this small has no validation set, and the saves cost as much as steps).
        arguments.eval_strategy = IntervalStrategy.NO
        arguments.save_strategy = SaveStrategy.NO
        arguments.load_best_model_at_end = False
        trainer, _ = build_trainer(config.model, self.model_path, self.tokenizer, dataset, arguments, None)
        trainer.train()
        shutil.rmtree(run_dir, ignore_errors=True)
        self.trainings += 1
        tagger = Tagger(
            trainer.model,
            self.tokenizer,
            max_length=config.model.max_length,
            stride=config.model.stride,
            batch_size=config.training.eval_batch_size,
            decoding=config.model.decoding,
        )
        f1 = evaluate_tagger(tagger, self.test, bootstrap=0)["strict"]["micro"]["f1"]
        return tagger, f1

    def words(self, labelled: list[int]) -> int:
        """Words in the pool articles ``labelled``."""
        return sum(len(self.pool[i]["tokens"]) for i in labelled)

    def score(self, tagger, candidates: list[int]) -> dict[int, tuple]:
        texts = [self.pool[i]["text"] for i in candidates]
        return dict(zip(candidates, tagger.tag_with_confidence(texts)))


def run(args: argparse.Namespace, save=None) -> dict:
    """F1 per round, per strategy and seed; ``save(results)`` is called after every model.

    The strategies advance together, round by round, so a run stopped early still holds
    every strategy to the same number of rounds (``merge`` keeps the rounds all runs have).
    """
    curves: dict[str, dict[int, list[float]]] = {s: {} for s in args.strategies}
    # Words annotated so far: what a round costs the team, beside the article count.
    words: dict[str, dict[int, list[int]]] = {s: {} for s in args.strategies}

    def results() -> dict:
        done = min((len(c) for per_seed in curves.values() for c in per_seed.values()), default=0)
        sizes = [args.start + args.step * r for r in range(args.rounds + 1)]
        return {
            "articles": sizes[: max(done, 1)],
            "curves": {s: {str(k): v[:done] for k, v in c.items()} for s, c in curves.items()},
            "words": {s: {str(k): v[:done] for k, v in c.items()} for s, c in words.items()},
            "complete": done == args.rounds + 1 and len(next(iter(curves.values()))) == len(args.seeds),
        }

    with tempfile.TemporaryDirectory(prefix="al-bench-") as tmp:
        loop = Loop(args, Path(tmp))
        pool_size = len(loop.pool)
        for seed in args.seeds:
            args.current_seed = seed
            rng = random.Random(seed)
            start = rng.sample(range(pool_size), args.start)
            first, f1 = loop.train(start)
            print(f"seed {seed}: {args.start} articles, test F1 {f1:.3f} (shared first model)", flush=True)
            state = {s: (list(start), first) for s in args.strategies}
            rngs = {s: random.Random(f"{seed}-{s}") for s in args.strategies}
            for strategy in args.strategies:
                curves[strategy][seed] = [f1]
                words[strategy][seed] = [loop.words(start)]
            for _ in range(args.rounds):
                for strategy in args.strategies:
                    labelled, tagger = state[strategy]
                    unlabelled = [i for i in range(pool_size) if i not in set(labelled)]
                    candidates = unlabelled
                    if args.pool_sample and len(unlabelled) > args.pool_sample:
                        candidates = rngs[strategy].sample(unlabelled, args.pool_sample)
                    scored = {} if strategy == "random" else loop.score(tagger, candidates)
                    labelled = labelled + choose(strategy, candidates, scored, args.step, rngs[strategy])
                    tagger, round_f1 = loop.train(labelled)
                    state[strategy] = (labelled, tagger)
                    curves[strategy][seed].append(round_f1)
                    words[strategy][seed].append(loop.words(labelled))
                    print(
                        f"seed {seed} {strategy:<11} {len(labelled):>3} articles: test F1 {round_f1:.3f}",
                        flush=True,
                    )
                    if save:
                        save(results())
            del state, first  # the next seed starts from scratch
    return results()


def merge(runs: list[dict]) -> dict:
    """One result from runs of the same settings with different seeds (run one process per seed).

    Runs stopped early (``complete`` false) are cut to the rounds every run has.
    """
    first = runs[0]
    for other in runs[1:]:
        same = {k: v for k, v in other["settings"].items() if k != "seeds"}
        if same != {k: v for k, v in first["settings"].items() if k != "seeds"}:
            raise SystemExit("runs with different settings cannot be merged")
    rounds = min(len(run["articles"]) for run in runs)

    def joined(key: str) -> dict:
        return {s: {seed: c[:rounds] for run in runs for seed, c in run[key][s].items()} for s in first[key]}

    curves = joined("curves")
    return {
        "articles": first["articles"][:rounds],
        "curves": curves,
        # runs from before words were recorded have none
        **({"words": joined("words")} if all("words" in run for run in runs) else {}),
        "complete": all(run.get("complete", True) for run in runs)
        and rounds == first["settings"]["rounds"] + 1,
        "seconds": sum(run["seconds"] for run in runs),
        "cpu_seconds": sum(run["cpu_seconds"] for run in runs),
        "settings": {**first["settings"], "seeds": sorted(int(s) for s in next(iter(curves.values())))},
        "runs": len(runs),
    }


def articles_to_reach(sizes: list[int], mean_curve: list[float], target: float) -> float | None:
    """Where the mean curve first reaches ``target``, linearly interpolated between rounds
    (None: never)."""
    if mean_curve[0] >= target:
        return float(sizes[0])
    for (n0, f0), (n1, f1) in zip(zip(sizes, mean_curve), zip(sizes[1:], mean_curve[1:])):
        if f0 < target <= f1:
            return round(n0 + (target - f0) / (f1 - f0) * (n1 - n0), 1)
    return None


def markdown_table(results: dict) -> str:
    """Test F1 per round: the mean of the seeds, each seed's in brackets; then each
    strategy's mean gain over random (paired by seed) after the first round."""
    strategies = list(results["curves"])
    lines = [
        "| articles | " + " | ".join(strategies) + " |",
        "|---" * (len(strategies) + 1) + "|",
    ]
    for r, n in enumerate(results["articles"]):
        cells = []
        for strategy in strategies:
            values = [c[r] for c in results["curves"][strategy].values()]
            cells.append(f"{statistics.mean(values):.3f} ({' / '.join(f'{v:.3f}' for v in values)})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if "random" in results["curves"] and len(results["articles"]) > 1:
        random_curves = results["curves"]["random"]
        lines.append("")
        for strategy in strategies:
            if strategy == "random":
                continue
            gains = [
                c[r] - random_curves[seed][r]
                for seed, c in results["curves"][strategy].items()
                for r in range(1, len(results["articles"]))
            ]
            lines.append(
                f"{strategy} - random, paired by seed and round after the first: mean "
                f"{statistics.mean(gains):+.3f}, {sum(g > 0 for g in gains)} of {len(gains)} ahead"
            )
    if "words" in results:
        lines.append("")
        for strategy in strategies:
            last = [c[-1] for c in results["words"][strategy].values()]
            lines.append(
                f"{strategy}: {statistics.mean(last):,.0f} words annotated at "
                f"{results['articles'][-1]} articles (mean of seeds)"
            )
    return "\n".join(lines)


def plot(results: dict, path: Path, settings: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2), layout="constrained")
    axes = figure.subplots()
    sizes = results["articles"]
    for strategy, per_seed in results["curves"].items():
        curves = list(per_seed.values())
        mean = [statistics.mean(c[r] for c in curves) for r in range(len(sizes))]
        low = [min(c[r] for c in curves) for r in range(len(sizes))]
        high = [max(c[r] for c in curves) for r in range(len(sizes))]
        (line,) = axes.plot(sizes, mean, "o-", label=f"{strategy} (mean of {len(curves)} seeds)")
        axes.fill_between(sizes, low, high, color=line.get_color(), alpha=0.15)
    axes.set_xlabel("annotated articles")
    axes.set_ylabel("test strict micro F1")
    axes.set_xticks(sizes)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(settings, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    parser.add_argument("--start", type=int, default=10, help="articles annotated before the first round")
    parser.add_argument("--step", type=int, default=10, help="articles added per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--min-steps", type=int, default=100, help="optimizer steps at least, per model")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=3e-4,
        help="small-data rate (the recipe's 1e-4 left 10-article models at test F1 0.01)",
    )
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--pool-sample", type=int, default=40, help="score N random unlabelled articles (0: all)"
    )
    parser.add_argument("--max-words", type=int, default=0, help="cut every article after N words (0: whole)")
    parser.add_argument(
        "--merge", nargs="+", metavar="RUN.json", help="only merge runs (other seeds) and plot"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", metavar="OUT.json")
    parser.add_argument("--plot", metavar="OUT.png")
    args = parser.parse_args()
    if 0 < args.pool_sample < args.step:
        parser.error(f"--pool-sample {args.pool_sample} is smaller than --step {args.step}")

    if args.merge:
        results = merge([json.loads(Path(p).read_text()) for p in args.merge])
        args.seeds = results["settings"]["seeds"]
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        began, cpu_began = time.perf_counter(), time.process_time()
        skip = ("json", "plot", "current_seed", "merge")

        def stamped(results: dict) -> dict:
            results["seconds"] = round(time.perf_counter() - began, 1)
            results["cpu_seconds"] = round(time.process_time() - cpu_began, 1)
            results["settings"] = {k: v for k, v in vars(args).items() if k not in skip}
            return results

        def save(partial: dict) -> None:  # a run stopped early keeps its finished rounds
            Path(args.json).write_text(json.dumps(stamped(partial), indent=1) + "\n")

        results = stamped(run(args, save if args.json else None))
    sizes = results["articles"]
    means = {
        s: [statistics.mean(c[r] for c in per_seed.values()) for r in range(len(sizes))]
        for s, per_seed in results["curves"].items()
    }
    results["mean"] = means
    print(f"{'articles':<12}" + "".join(f"{n:>8}" for n in sizes))
    for strategy, mean in means.items():
        print(f"{strategy:<12}" + "".join(f"{f1:>8.3f}" for f1 in mean))
    if "random" in means:
        target = means["random"][-1]
        reach = {s: articles_to_reach(sizes, m, target) for s, m in means.items()}
        results["articles_to_reach_random_final_f1"] = {"target": target, **reach}
        print(f"articles to reach random's final mean F1 {target:.3f} (interpolated): {reach}")
    print(markdown_table(results))
    print(f"{results['seconds']:.0f} s wall, {results['cpu_seconds']:.0f} s CPU")
    if args.merge:  # the plot's title tells the settings of the runs
        for name in ("epochs", "min_steps", "learning_rate", "max_length", "pool_sample", "max_words", "set"):
            setattr(args, name, results["settings"].get(name))  # learning_rate: older runs used --set
    if args.plot:
        settings = (
            f"{len(args.seeds)} seeds; epochs >= {args.epochs:g} (>= {args.min_steps} steps); "
            + (f"\narticles cut to {args.max_words} words; " if args.max_words else "\nwhole articles; ")
            + f"max_length {args.max_length}; pool sample {args.pool_sample or 'all'}; band: min-max of seeds"
            + (f"; learning rate {args.learning_rate:g}" if args.learning_rate else "")
            + "".join(f"; {assignment}" for assignment in args.set)
        )
        plot(results, Path(args.plot), settings)
        print(f"plot: {args.plot}")
    return finish(results, [], args.json)


if __name__ == "__main__":
    sys.exit(main())
