"""``python -m training <verb>``: thin verbs over the pipeline's functions.

dataset CONFIG            build the DatasetDict from the configured export (or Label Studio project)
train CONFIG              fine-tune, evaluate and save the model
evaluate MODEL_DIR...     score models on a split or an export
predict MODEL_DIR INPUT   tag text files, JSONL or an export (streaming, resumable)
calibrate MODEL_DIR       calibration for int8 (ONNX ranges, OpenVINO windows; train does it itself)
validate-data EXPORT      check an export (spans, duplicates, consistency)
corpus check|build        the bundled corpus' article files and export
labelstudio start|stop|status   the local Label Studio server (127.0.0.1)
push project|tasks|predictions  send a project, tasks, pre-annotations to Label Studio
pull --project ID         snapshot a project's annotated tasks under data/snapshots/
serve MODEL_DIR           serve a model as a Label Studio ML backend; train and swap models from it
agreement SOURCE          inter-annotator agreement of an export or a project (span F1, kappa)
audit CONFIG              cross-validated predictions -> ranked likely annotation errors

Each verb imports what it needs when it runs: torch only for the verbs that run a model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from training.config import API_KEY_ENV, SNAPSHOT_DIR, URL_ENV, Config, DataConfig, load_config
from training.errors import ConfigError, DataError, TrainingError
from training.inference.archive import DEFAULT_CHUNK_SIZE
from training.schema import ALL_SPLITS, TEXT_FIELD

# Where serve --train-config keeps model versions and training jobs unless --store says.
DEFAULT_STORE = Path("models/ml-backend")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.set or [])


def _file_source(data: DataConfig) -> DataConfig:
    """``data`` with a file source: a Label Studio project (``data.label_studio``) is pulled first."""
    if data.label_studio is None:
        return data
    from training.labelstudio.client import resolve_source

    return resolve_source(data)


def cmd_dataset(args: argparse.Namespace) -> int:
    from training.data.dataset import build_from_config, label_counts

    data = _file_source(_config(args).data)
    dataset, report = build_from_config(data)
    print(report.summary())
    for split, counts in label_counts(dataset).items():
        print(f"{split}: {len(dataset[split])} documents, {sum(counts.values())} entities")
    print(f"saved to {data.dataset_dir}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    result = train(_config(args), resume=args.resume)
    print(f"model saved to {result.output_dir}")
    return 0


def _rows_for_evaluation(args: argparse.Namespace, model_dir: Path) -> list[dict]:
    from training.data.dataset import build_from_config, document_record, load_documents

    if args.config:
        config = load_config(args.config, args.set or [])
    elif (model_dir / "training_config.yaml").is_file():
        config = load_config(model_dir / "training_config.yaml", args.set or [], ignore_unknown=True)
    else:
        config = load_config(None, args.set or [])
    if args.data:
        data = config.data.model_copy(update={"source": Path(args.data)})
        documents, _ = load_documents(data)
        return [document_record(doc)[0] for doc in documents]
    dataset, _ = build_from_config(_file_source(config.data), save=False)
    if args.split not in dataset:
        raise DataError(
            f"{config.data.source}: the dataset has no {args.split!r} documents"
            f" (splits: {', '.join(dataset)})"
        )
    return list(dataset[args.split])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluation.label_map import parse_label_map
    from training.evaluation.scores import (
        compare,
        format_comparison,
        format_scores,
        run_evaluation,
        write_json,
    )
    from training.inference.tagger import Tagger

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap: {args.bootstrap} samples; give 0 (no intervals) or more")
    label_map = parse_label_map(args.label_map)
    evaluations, results = [], []
    for model_dir in args.model_dirs:
        rows = _rows_for_evaluation(args, Path(model_dir))
        options = {"decoding": args.decoding} if args.decoding else {}
        tagger = Tagger.load(model_dir, **backend_options(args), **options)
        evaluation = run_evaluation(tagger, rows, label_map=label_map, model_name=model_dir)
        scores = evaluation.scores(bootstrap=args.bootstrap, seed=args.seed)
        evaluations.append((model_dir, evaluation))
        results.append((model_dir, scores))
        print(format_scores(scores, title=f"{model_dir} ({args.data or args.split})"))
        print()
    comparison = compare(evaluations, args.bootstrap, args.seed) if len(results) > 1 else None
    if comparison is not None:
        print(format_comparison(results, comparison))
    payload = results[0][1] if len(results) == 1 else {"models": dict(results), "comparison": comparison}
    if args.json:
        write_json(args.json, payload)
    if args.report:
        from training.evaluation.report import ReportModel, read_training_log, write_report

        models = [
            ReportModel(name, scores, evaluation.error_records(), read_training_log(name))
            for (name, scores), (_, evaluation) in zip(results, evaluations)
        ]
        page = write_report(
            args.report, models, comparison, payload, title=f"Evaluation on {args.data or args.split}"
        )
        print(f"report: {page}")
    return 0


def iter_inputs(paths: list[str], text_field: str = TEXT_FIELD) -> Iterator[tuple[str, str]]:
    """``(id, text)`` pairs from text files, JSONL files (``text`` field) or exports (``.json``),
    read lazily (JSONL line by line, exports task by task)."""
    from training.data.export import iter_export, task_text

    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{path}: input file not found")
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as handle:
                for n, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}: line {n}: not JSON: {exc.msg}") from None
                    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                        raise DataError(f"{path}: line {n}: no string {text_field!r} field")
                    yield str(record.get("id", f"{path.stem}:{n}")), record[text_field]
        elif path.suffix == ".json":
            for task in iter_export(path):
                try:
                    text = task_text(task, text_field, allow_blank=True)
                except DataError as exc:
                    raise DataError(f"{path}: {exc}") from None
                yield str(task["data"].get("doc_id", task.get("id"))), text
        else:
            yield path.stem, path.read_text(encoding="utf-8")


def count_inputs(paths: list[str]) -> int | None:
    """How many documents ``iter_inputs`` will yield, where that is cheap to know (no exports)."""
    total = 0
    for name in paths:
        path = Path(name)
        if path.suffix == ".json" or not path.is_file():
            return None
        if path.suffix != ".jsonl":
            total += 1
            continue
        with open(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def cmd_predict(args: argparse.Namespace) -> int:
    from training.inference.archive import TaggerSpec, tag_archive

    options = backend_options(args)
    if args.threads:
        options["threads"] = args.threads
    out = Path(args.out) if args.out else None
    result = tag_archive(
        iter_inputs(args.inputs),
        out,
        TaggerSpec(args.model_dir, options),
        workers=args.workers,
        chunk_size=args.chunk_size,
        total=count_inputs(args.inputs),
        progress=out is not None and not args.no_progress,
    )
    if out is not None:
        skipped = f" ({result.skipped} already there, skipped)" if result.skipped else ""
        rate = result.tagged / result.seconds if result.seconds else 0.0
        print(f"{result.tagged} documents tagged -> {out}{skipped}, {rate:.1f} documents/s")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from training.inference.quantization import CALIBRATION_WINDOWS, CALIBRATION_WINDOWS_FILE, calibrate
    from training.inference.tagger import Tagger

    tagger = Tagger.load(args.model_dir, precision="fp32")
    rows = _rows_for_evaluation(args, Path(args.model_dir))
    windows = tagger.encode([row["tokens"] for row in rows])
    path = calibrate(
        tagger.model, windows.input_ids, tagger.tokenizer.pad_token_id or 0, Path(args.model_dir)
    )
    used = min(len(windows), CALIBRATION_WINDOWS)
    print(
        f"activation ranges from {used} of {len(windows)} windows ({args.data or args.split}) -> {path}"
        f" (and the windows -> {path.with_name(CALIBRATION_WINDOWS_FILE)})"
    )
    return 0


def cmd_validate_data(args: argparse.Namespace) -> int:
    import yaml

    from training.data.checks import validate_documents
    from training.data.export import convert_tasks, iter_export

    explained = {}
    if args.explained:
        explained = yaml.safe_load(Path(args.explained).read_text(encoding="utf-8")) or {}
    failed = False
    for export in args.exports:
        documents, report = convert_tasks(iter_export(export), DataConfig(source=Path(export)))
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
    from training.data.checks import consistency_report
    from training.data.corpus import check_articles, parse_article

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
    from training.data.corpus import (
        assign_corpus_splits,
        load_articles,
        render_article,
        render_sources,
        write_export,
    )

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
    sources = Path(args.articles).parent / "SOURCES.md"
    sources.write_text(render_sources(articles), encoding="utf-8")
    print(f"{len(articles)} articles -> {args.out}; sources -> {sources}")
    return 0


def _connection(args: argparse.Namespace):
    from training.labelstudio.client import connect

    return connect(args.url, args.api_key_env)


def cmd_labelstudio_start(args: argparse.Namespace) -> int:
    from training.labelstudio import server

    data_dir = Path(args.data_dir or server.DEFAULT_DATA_DIR)
    state = server.start(
        port=args.port, data_dir=data_dir, say=lambda message: print(message, file=sys.stderr, flush=True)
    )
    credentials = server.local_credentials(data_dir)
    print(f"Label Studio runs at {state.url} (pid {state.pid}, data {state.data_dir}, log {state.log})")
    print(
        f"log in as {credentials.username}; the password and API token are in"
        f" {Path(state.data_dir) / server.CREDENTIALS_FILE} (commands here find them)"
    )
    return 0


def cmd_labelstudio_stop(args: argparse.Namespace) -> int:
    from training.labelstudio import server

    state = server.stop(Path(args.data_dir or server.DEFAULT_DATA_DIR))
    print(f"stopped pid {state.pid} ({state.url})" if state else "no local Label Studio server is running")
    return 0


def cmd_labelstudio_status(args: argparse.Namespace) -> int:
    from training.labelstudio import server

    state = server.status(Path(args.data_dir or server.DEFAULT_DATA_DIR))
    if state is None:
        print("no local Label Studio server is running (python -m training labelstudio start)")
    else:
        health = "healthy" if server.healthy(state.url) else "not answering /health"
        print(f"local server: {state.url} (pid {state.pid}), {health}; log {state.log}")
    if args.url:
        health = "healthy" if server.healthy(args.url) else "not answering /health"
        print(f"{args.url}: {health}")
    return 0 if state is not None or (args.url and server.healthy(args.url)) else 1


def cmd_push_project(args: argparse.Namespace) -> int:
    from training.labelstudio.client import push_project

    connection = _connection(args)
    result = push_project(connection, args.title)
    what = "created" if result.created else "unchanged"
    if result.config_updated:
        what = "updated its labeling config"
    print(f"project {result.id} {result.title!r} on {connection.url}: {what}")
    return 0


def cmd_push_tasks(args: argparse.Namespace) -> int:
    from training.data.export import read_export
    from training.labelstudio.client import push_tasks

    connection = _connection(args)
    result = push_tasks(connection, args.project, read_export(args.export))
    print(
        f"project {args.project}: imported {result.imported} tasks ({result.annotations} annotations),"
        f" {result.skipped} already there (same data.doc_id)"
    )
    return 0


def cmd_push_predictions(args: argparse.Namespace) -> int:
    from training.inference.tagger import Tagger
    from training.labelstudio.client import push_predictions
    from training.labelstudio.predictions import model_version

    connection = _connection(args)
    version = model_version(args.model_dir)
    tagger = Tagger.load(args.model_dir)
    ordered = not args.keep_order
    result = push_predictions(connection, args.project, tagger, version, order_by_uncertainty=ordered)
    print(
        f"project {args.project}: {result.predicted} tasks pre-annotated by {version},"
        f" {result.already_predicted} already had its predictions"
    )
    if result.scores:
        print(f"task scores (confidence) from {min(result.scores):.3f} to {max(result.scores):.3f}")
    if not args.keep_order:
        print("annotators now get the least confident tasks first (project sampling: Uncertainty sampling)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from training.labelstudio.client import pull, summary

    snapshot = pull(_connection(args), args.project, out=args.out, since=args.since)
    print(summary(snapshot))
    print(f"train on it: set data.source: {snapshot.export_path}")
    return 0


def _source_tasks(args: argparse.Namespace):
    """The tasks of SOURCE: an export file, or a project id (pulled into a snapshot first)."""
    from training.data.export import iter_export

    path = Path(args.source)
    if path.is_file():
        return iter_export(path)
    if not args.source.isdigit():
        raise DataError(f"{args.source}: neither an export file nor a Label Studio project id")
    from training.config import LabelStudioSource
    from training.labelstudio.client import pull_source, summary

    snapshot = pull_source(
        LabelStudioSource(url=args.url, project=int(args.source), api_key_env=args.api_key_env)
    )
    print(f"pulled {summary(snapshot)}")
    return iter_export(snapshot.export_path)


def cmd_agreement(args: argparse.Namespace) -> int:
    from training.evaluation.agreement import agreement
    from training.evaluation.report import agreement_html, write_page

    options = DataConfig(text_field=args.text_field, invalid_spans="drop")
    result = agreement(_source_tasks(args), options)
    print(result.summary())
    summary = result.to_dict()
    page = write_page(
        args.out,
        f"Annotator agreement: {args.source}",
        agreement_html(summary, result.disagreements),
        "disagreements.jsonl",
        result.disagreements,
        summary,
    )
    print(f"report: {page} (disagreements: {Path(args.out) / 'disagreements.jsonl'})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from training.audit import audit, push_findings

    if args.push_top and args.project is None:  # before hours of training, not after
        raise ConfigError("--push-top needs --project ID (the project that gets the review tasks)")
    result = audit(_config(args), folds=args.folds, out=Path(args.out))
    print(result.summary())
    if args.push_top:
        pushed = push_findings(_connection(args), args.project, result, args.push_top)
        print(
            f"project {args.project}: {pushed.imported} review tasks created,"
            f" {pushed.skipped} already there (same data.doc_id)"
        )
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _serve_settings(args: argparse.Namespace):
    from training.labelstudio.ml_backend import ServeSettings

    password = None
    if args.auth_user:
        password = os.environ.get(args.auth_password_env, "")
        if not password:
            raise ConfigError(
                f"--auth-user {args.auth_user}: set the password in ${args.auth_password_env}"
                " (never on the command line)"
            )
    for name in ("max_body_mb", "body_timeout", "max_tasks", "max_batch_texts"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')}: {getattr(args, name)}; give a positive number")
    if args.batch_wait_ms < 0:
        raise ConfigError(f"--batch-wait-ms: {args.batch_wait_ms}; give 0 (no batching) or more")
    return ServeSettings(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_tasks=args.max_tasks,
        body_timeout_s=args.body_timeout,
        batch_wait_ms=args.batch_wait_ms,
        max_batch_texts=args.max_batch_texts,
        auth_user=args.auth_user,
        auth_password=password,
    )


def _training_settings(args: argparse.Namespace, store_dir: str):
    """``serve --train-config``'s settings, checked before anything is loaded (None without it)."""
    if args.train_config is None:
        return None
    from training.labelstudio.jobs import TrainingSettings
    from training.labelstudio.versions import VersionStore

    if args.train_every is not None and args.train_every < 1:
        raise ConfigError(f"--train-every: {args.train_every}; give 1 or more annotation events")
    settings = TrainingSettings(
        config=Path(args.train_config),
        overrides=tuple(args.train_set or []),
        url=args.url,
        api_key_env=args.api_key_env,
        margin=args.promote_margin,
        bootstrap=args.bootstrap,
        train_every=args.train_every,
        debounce_s=args.train_debounce,
    )
    settings.check(VersionStore(store_dir))
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from training.inference.tagger import Tagger
    from training.labelstudio.ml_backend import Predictor, load_predictor, make_server, open_store
    from training.labelstudio.versions import is_store

    settings = _serve_settings(args)
    store_dir = args.store
    if store_dir is None and is_store(args.model_dir):
        store_dir = args.model_dir
    if store_dir is None and args.train_config is not None:
        store_dir = DEFAULT_STORE
    training = _training_settings(args, store_dir)
    store = jobs = None
    options = backend_options(args)
    if store_dir is None:
        predictor = load_predictor(args.model_dir, **options)
    else:
        store, version = open_store(args.model_dir, store_dir)
        predictor = Predictor(Tagger.load(store.path(version), **options), version, options)
    if training is not None:
        from training.labelstudio.jobs import JobManager
        from training.labelstudio.ml_backend import activate

        def promote(version: str) -> None:
            activate(store, predictor, version)

        jobs = JobManager(store, training, serving=lambda: predictor.version, promote=promote)
    server = make_server(predictor, args.host, args.port, settings=settings, store=store, jobs=jobs)
    backend_url = server.url
    where = f"; versions in {store.root}" if store is not None else ""
    trains = f"; trains with {args.train_config}" if jobs is not None else ""
    # Served from a thread; SIGTERM (a service manager, `kill`) ends the process like Ctrl-C
    # does, through the cleanup below (a running training job's child is stopped with it).
    signal.signal(signal.SIGTERM, _interrupt)
    connection = backend = webhook = None
    already = True
    try:
        server.start()
        print(
            f"ML backend for {predictor.version} at {backend_url}{where}{trains} (Ctrl-C stops it)",
            flush=True,
        )
        if args.connect is not None:
            from training.labelstudio.client import (
                connect_ml_backend,
                connect_training_webhook,
                ml_backend_ids,
            )

            # Label Studio calls /health and /setup while connecting: the server is up first.
            connection = _connection(args)
            auth = (settings.auth_user, settings.auth_password) if settings.auth_user else None
            already = bool(ml_backend_ids(connection, args.connect, backend_url))
            backend = connect_ml_backend(connection, args.connect, backend_url, auth=auth)
            print(f"connected to project {args.connect} as ML backend {backend}", flush=True)
            if jobs is not None and args.train_every is not None:
                webhook = connect_training_webhook(
                    connection, args.connect, f"{backend_url}/webhook", auth=auth
                )
                print(f"project {args.connect} sends annotation events to {backend_url}/webhook", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        # A registration this process made goes with it, unless asked to stay.
        if connection is not None and not args.keep_connected:
            from training.labelstudio.client import disconnect_ml_backend, remove_webhook

            if webhook is not None:
                remove_webhook(connection, webhook)
            if backend is not None and not already:
                disconnect_ml_backend(connection, backend)
                print(f"disconnected ML backend {backend} from project {args.connect}", flush=True)
    return 0


def with_backend(p: argparse.ArgumentParser, default: str) -> None:
    """``--backend`` and ``--quantize``: how ``Tagger.load`` runs the model."""
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx", "openvino"],
        default=default,
        help="auto: the fastest that holds accuracy on this CPU (README, Speed); torch: PyTorch; "
        "onnx: ONNX Runtime; openvino: OpenVINO (default: %(default)s)",
    )
    p.add_argument("--quantize", choices=["int8"], help="with --backend onnx or openvino: int8 weights")


def backend_options(args: argparse.Namespace) -> dict:
    """``Tagger.load`` keyword arguments from ``with_backend``'s flags."""
    return {"backend": args.backend, **({"quantize": args.quantize} if args.quantize else {})}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="YAML config (see configs/)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. training.epochs=3")

    def with_data(p: argparse.ArgumentParser, split: str, purpose: str) -> None:
        """--data or --split, and the config naming the data (the model's own by default)."""
        source = p.add_mutually_exclusive_group()
        source.add_argument("--data", metavar="EXPORT.json", help=f"a Label Studio export to {purpose}")
        source.add_argument("--split", default=split, choices=list(ALL_SPLITS))
        p.add_argument("--config", help="config naming the data (default: the model's own)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE")

    p = verbs.add_parser("dataset", help="build the dataset from the configured export")
    with_config(p)
    p.set_defaults(func=cmd_dataset)

    p = verbs.add_parser("train", help="fine-tune a model from a config")
    with_config(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("evaluate", help="score model directories")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    with_data(p, split="test", purpose="score on")
    p.add_argument("--json", metavar="OUT.json", help="write the scores as JSON")
    p.add_argument("--report", metavar="DIR", help="write DIR/index.html, errors.jsonl and scores.json")
    p.add_argument(
        "--label-map",
        metavar="A=B,...|FILE",
        help="rename labels on both sides before scoring (LOC=GPE; MISC=O drops one), or a .json/.yaml map",
    )
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap samples (0: none)")
    p.add_argument(
        "--decoding",
        choices=["viterbi", "greedy"],
        help="override the model's decoding (default: its config's, viterbi): greedy takes each"
        " word's top tag, for comparison",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    with_backend(p, default="torch")
    p.set_defaults(func=cmd_evaluate)

    p = verbs.add_parser("predict", help="tag documents (streaming, resumable with --out)")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".txt, .jsonl (text field) or .json export")
    p.add_argument(
        "--out", metavar="FILE.jsonl", help="append here, skipping ids it already has (default: stdout)"
    )
    with_backend(p, default="auto")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="tagging processes (default: 1)")
    p.add_argument("--threads", type=int, metavar="N", help="threads per process (default: cores / workers)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help="documents per batch and per write (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser(
        "calibrate", help="int8 calibration: activation ranges (ONNX), windows (OpenVINO); train does it"
    )
    p.add_argument("model_dir", metavar="MODEL_DIR")
    with_data(p, split="train", purpose="calibrate on")
    p.set_defaults(func=cmd_calibrate)

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

    def with_server(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            default=os.environ.get(URL_ENV),
            help=f"Label Studio URL (default: ${URL_ENV})",
        )
        p.add_argument(
            "--api-key-env",
            default=API_KEY_ENV,
            metavar="VAR",
            help=f"environment variable holding the API key (default: {API_KEY_ENV})",
        )

    labelstudio = verbs.add_parser("labelstudio", help="the local Label Studio server (127.0.0.1 only)")
    labelstudio_verbs = labelstudio.add_subparsers(dest="labelstudio_verb", required=True)
    for name, func, text in (
        ("start", cmd_labelstudio_start, "start it and wait until it answers"),
        ("stop", cmd_labelstudio_stop, "stop the process that start recorded"),
        ("status", cmd_labelstudio_status, "is it running and healthy"),
    ):
        p = labelstudio_verbs.add_parser(name, help=text)
        p.add_argument("--data-dir", help="server data dir (default: .labelstudio/data in the project)")
        if name == "start":
            p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: %(default)s)")
        if name == "status":
            p.add_argument("--url", default=os.environ.get(URL_ENV), help="also check this server")
        p.set_defaults(func=func)

    push = verbs.add_parser("push", help="send a project, tasks or predictions to Label Studio")
    push_verbs = push.add_subparsers(dest="push_verb", required=True)
    p = push_verbs.add_parser("project", help="find or create the project (labeling config from the schema)")
    p.add_argument("--title", required=True)
    with_server(p)
    p.set_defaults(func=cmd_push_project)
    p = push_verbs.add_parser("tasks", help="import an export's tasks and annotations (keyed on data.doc_id)")
    p.add_argument("export", metavar="EXPORT.json")
    p.add_argument("--project", type=int, required=True, metavar="ID")
    with_server(p)
    p.set_defaults(func=cmd_push_tasks)
    p = push_verbs.add_parser("predictions", help="pre-annotate unannotated tasks with a model")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--project", type=int, required=True, metavar="ID")
    p.add_argument(
        "--keep-order", action="store_true", help="leave the project's task order (no uncertainty sampling)"
    )
    with_server(p)
    p.set_defaults(func=cmd_push_predictions)

    p = verbs.add_parser("pull", help="snapshot a project's annotated tasks (export JSON + manifest)")
    p.add_argument("--project", type=int, required=True, metavar="ID")
    p.add_argument("--since", metavar="TIMESTAMP", help="only annotations created/updated since (ISO 8601)")
    p.add_argument("--out", metavar="DIR", help=f"snapshot dir (default: {SNAPSHOT_DIR}/project-ID-TIME)")
    with_server(p)
    p.set_defaults(func=cmd_pull)

    p = verbs.add_parser("serve", help="serve a model as a Label Studio ML backend (and train from it)")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a model directory, or a version store (--store)")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--connect", type=int, metavar="PROJECT", help="also connect it to this project")
    with_backend(p, default="auto")
    p.add_argument(
        "--keep-connected",
        action="store_true",
        help="leave the ML backend registered in the project when serve exits (default: removed)",
    )
    with_server(p)
    p.add_argument(
        "--store",
        metavar="DIR",
        help=f"version store: versions/<version>/ and current (default: MODEL_DIR if it is one; with"
        f" --train-config {DEFAULT_STORE})",
    )
    training = p.add_argument_group("training from Label Studio")
    training.add_argument("--train-config", metavar="CONFIG", help="train on START_TRAINING with this config")
    training.add_argument("--train-set", action="append", metavar="KEY=VALUE", help="override for every job")
    training.add_argument(
        "--train-every", type=int, metavar="N", help="also train after N annotation events (with --connect)"
    )
    training.add_argument(
        "--train-debounce", type=float, default=30.0, metavar="S",
        help="... once no annotation event came for S seconds (default: %(default)s)",
    )  # fmt: skip
    training.add_argument(
        "--promote-margin", type=float, default=0.0, metavar="F1",
        help="promote when candidate F1 >= serving F1 - margin (default: %(default)s)",
    )  # fmt: skip
    training.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap samples")
    service = p.add_argument_group("service")
    service.add_argument(
        "--batch-wait-ms", type=float, default=5.0, metavar="MS",
        help="gather concurrent /predict requests for up to MS ms into one model call (0: no batching)",
    )  # fmt: skip
    service.add_argument("--max-batch-texts", type=int, default=32, metavar="N", help="texts per model call")
    service.add_argument("--max-body-mb", type=float, default=8.0, metavar="MB", help="request size limit")
    service.add_argument("--max-tasks", type=int, default=100, metavar="N", help="tasks per /predict request")
    service.add_argument(
        "--body-timeout", type=float, default=30.0, metavar="S", help="seconds a request body may take"
    )
    service.add_argument("--auth-user", metavar="USER", help="require HTTP basic auth with this user")
    service.add_argument(
        "--auth-password-env", default="ML_BACKEND_PASSWORD", metavar="VAR",
        help="environment variable holding the basic auth password (default: %(default)s)",
    )  # fmt: skip
    p.set_defaults(func=cmd_serve)

    p = verbs.add_parser("agreement", help="inter-annotator agreement: span F1, token kappa, disagreements")
    p.add_argument("source", metavar="SOURCE", help="a Label Studio export (.json) or a project id")
    p.add_argument("--out", default="reports/agreement", metavar="DIR", help="report dir (%(default)s)")
    p.add_argument("--text-field", default=TEXT_FIELD, help="the task data field holding the text")
    with_server(p)
    p.set_defaults(func=cmd_agreement)

    p = verbs.add_parser("audit", help="k-fold predictions -> ranked likely annotation errors")
    with_config(p)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: %(default)s)")
    p.add_argument("--out", default="reports/audit", metavar="DIR", help="report dir (%(default)s)")
    p.add_argument("--push-top", type=int, default=0, metavar="N", help="push the top N for review")
    p.add_argument("--project", type=int, metavar="ID", help="with --push-top: the Label Studio project")
    with_server(p)
    p.set_defaults(func=cmd_audit)
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
