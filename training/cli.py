"""``python -m training <verb>``: thin verbs over the pipeline's functions.

dataset CONFIG            build the DatasetDict from the configured export
train CONFIG              fine-tune, evaluate and save the model
evaluate MODEL_DIR...     score models on a split or an export
predict MODEL_DIR INPUT   tag text files, JSONL or an export
validate-data EXPORT      check an export (spans, duplicates, consistency)
corpus check|build        the bundled corpus' article files and export
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from training.errors import DataError, TrainingError


def _config(args: argparse.Namespace):
    from training.config import load_config

    return load_config(args.config, args.set or [])


def cmd_dataset(args: argparse.Namespace) -> int:
    from training.dataset import build_from_config, label_counts

    config = _config(args)
    dataset, report = build_from_config(config)
    print(report.summary())
    for split, counts in label_counts(dataset).items():
        print(f"{split}: {len(dataset[split])} documents, {sum(counts.values())} entities")
    print(f"saved to {config.data.dataset_dir}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    result = train(_config(args), resume=args.resume)
    print(f"model saved to {result.output_dir}")
    return 0


def _rows_for_evaluation(args: argparse.Namespace, model_dir: Path) -> list[dict]:
    from training.config import Config, load_config
    from training.dataset import build_from_config, document_record, load_documents

    if args.config:
        config = load_config(args.config, args.set or [])
    elif (model_dir / "training_config.yaml").is_file():
        config = load_config(model_dir / "training_config.yaml", args.set or [])
    else:
        config = load_config(None, args.set or [])
    if args.data:
        data = config.data.model_copy(update={"source": Path(args.data)})
        documents, _ = load_documents(data)
        return [document_record(doc)[0] for doc in documents]
    dataset, _ = build_from_config(
        Config.model_validate({**config.model_dump(), "data": config.data}), save=False
    )
    return list(dataset[args.split])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_tagger, format_comparison, format_scores, write_json
    from training.inference import Tagger

    results: list[tuple[str, dict]] = []
    for model_dir in args.model_dirs:
        rows = _rows_for_evaluation(args, Path(model_dir))
        scores = evaluate_tagger(Tagger.load(model_dir), rows)
        results.append((model_dir, scores))
        print(format_scores(scores, title=f"{model_dir} ({args.data or args.split})"))
        print()
    if len(results) > 1:
        print(format_comparison(results))
    if args.json:
        payload = results[0][1] if len(results) == 1 else {"models": dict(results)}
        write_json(args.json, payload)
    return 0


def read_inputs(paths: list[str], text_field: str = "text") -> list[tuple[str, str]]:
    """``(id, text)`` pairs from text files, JSONL files (``text`` field) or exports (``.json``)."""
    from training.labelstudio import read_export

    documents = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{path}: input file not found")
        if path.suffix == ".jsonl":
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {n}: not JSON: {exc.msg}") from None
                if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                    raise DataError(f"{path}: line {n}: no string {text_field!r} field")
                documents.append((str(record.get("id", f"{path.stem}:{n}")), record[text_field]))
        elif path.suffix == ".json":
            for task in read_export(path):
                data = task.get("data") or {}
                if not isinstance(data.get(text_field), str):
                    raise DataError(f"{path}: task {task.get('id')}: no string data.{text_field}")
                documents.append((str(data.get("doc_id", task.get("id"))), data[text_field]))
        else:
            documents.append((path.stem, path.read_text(encoding="utf-8")))
    return documents


def cmd_predict(args: argparse.Namespace) -> int:
    from training.inference import Tagger

    tagger = Tagger.load(args.model_dir)
    documents = read_inputs(args.inputs)
    entities = tagger([text for _, text in documents])
    lines = [
        json.dumps({"id": doc_id, "entities": [e.to_dict() for e in found]}, ensure_ascii=False)
        for (doc_id, _), found in zip(documents, entities)
    ]
    output = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(output, encoding="utf-8")
        print(f"{len(lines)} documents tagged -> {args.out}")
    else:
        sys.stdout.write(output)
    return 0


def cmd_validate_data(args: argparse.Namespace) -> int:
    import yaml

    from training.config import DataConfig
    from training.labelstudio import convert_tasks, read_export
    from training.validation import validate_documents

    explained = {}
    if args.explained:
        explained = yaml.safe_load(Path(args.explained).read_text(encoding="utf-8")) or {}
    failed = False
    for export in args.exports:
        documents, report = convert_tasks(read_export(export), DataConfig(source=Path(export)))
        summary = validate_documents(documents, explained)
        print(f"{export}: {len(documents)} documents ({report.tasks} tasks)")
        splits = sorted(summary.label_counts)
        labels = sorted({label for c in summary.label_counts.values() for label in c})
        print(f"  {'label':<12}" + "".join(f"{s:>12}" for s in splits))
        for label in labels:
            print(f"  {label:<12}" + "".join(f"{summary.label_counts[s][label]:>12}" for s in splits))
        print(f"  {'documents':<12}" + "".join(f"{summary.documents[s]:>12}" for s in splits))
        for line in summary.problems:
            print(f"  PROBLEM {line}")
        for line in summary.inconsistencies:
            print(f"  INCONSISTENT {line}")
        print(
            f"  {len(summary.problems)} problems, {len(summary.inconsistencies)} unexplained inconsistencies"
        )
        failed |= not summary.ok
    return 1 if failed else 0


def cmd_corpus_check(args: argparse.Namespace) -> int:
    from training.corpus import check_articles, parse_article
    from training.validation import consistency_report

    paths = []
    for arg in args.paths:
        path = Path(arg)
        paths += sorted(path.glob("*.md")) if path.is_dir() else [path]
    articles, findings = [], []
    for path in paths:
        try:
            articles.append(parse_article(path))
        except TrainingError as exc:
            findings.append(str(exc))
    findings += check_articles(articles)
    counts = Counter(span.label for a in articles for span in a.spans)
    print(f"{len(articles)} articles, {sum(counts.values())} entities")
    for label, n in sorted(counts.items()):
        print(f"  {label:10s} {n}")
    for line in findings:
        print("ERROR", line)
    for line in consistency_report((a.doc_id, a.text, a.spans) for a in articles).findings():
        print("CONSISTENCY", line)
    return 1 if findings else 0


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from training.corpus import assign_corpus_splits, load_articles, render_article, write_export

    articles = load_articles(Path(args.articles))
    if args.assign_splits:
        for article in assign_corpus_splits(articles):
            path = Path(args.articles) / f"{article.doc_id}.md"
            path.write_text(render_article(article), encoding="utf-8")
            print(f"{article.doc_id}: split {article.meta['split']}")
    missing = [a.doc_id for a in articles if "split" not in a.meta]
    if missing:
        raise DataError(f"articles without a split: {', '.join(missing[:10])}")
    write_export(articles, Path(args.out))
    print(f"{len(articles)} articles -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", required=True)

    def with_config(p: argparse.ArgumentParser, required: bool = True) -> None:
        if required:
            p.add_argument("config", help="YAML config (see configs/)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. training.epochs=3")

    p = verbs.add_parser("dataset", help="build the dataset from the configured export")
    with_config(p)
    p.set_defaults(func=cmd_dataset)

    p = verbs.add_parser("train", help="fine-tune a model from a config")
    with_config(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("evaluate", help="score model directories")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="EXPORT.json", help="a Label Studio export to score on")
    source.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--config", help="config naming the data (default: the model's own)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--json", metavar="OUT.json", help="write the scores as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = verbs.add_parser("predict", help="tag documents")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".txt, .jsonl (text field) or .json export")
    p.add_argument("--out", metavar="FILE.jsonl")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("validate-data", help="check exports: spans, duplicates, consistency")
    p.add_argument("exports", nargs="+", metavar="EXPORT.json")
    p.add_argument(
        "--explained", metavar="FILE.yaml", help="surface strings whose inconsistency is explained"
    )
    p.set_defaults(func=cmd_validate_data)

    corpus = verbs.add_parser("corpus", help="the bundled corpus: check articles, build the export")
    corpus_verbs = corpus.add_subparsers(dest="corpus_verb", required=True)
    p = corpus_verbs.add_parser("check", help="check article source files")
    p.add_argument("paths", nargs="+", help="article files or directories")
    p.set_defaults(func=cmd_corpus_check)
    p = corpus_verbs.add_parser("build", help="write the Label Studio export of the articles")
    p.add_argument("--articles", default="data/corpus/articles")
    p.add_argument("--out", default="data/corpus.json")
    p.add_argument("--assign-splits", action="store_true", help="give a split to articles without one")
    p.set_defaults(func=cmd_corpus_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
