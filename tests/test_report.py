"""The HTML report: renders, parses, embeds real PNGs, escapes document text; the evaluate CLI."""

import base64
import json
import shutil
from html.parser import HTMLParser

import pytest

from training.cli import main
from training.evaluation.report import ReportModel, read_training_log, write_report
from training.evaluation.scores import Evaluation
from training.text import Span

VOID = {"meta", "img", "input", "br", "hr", "link"}
HOSTILE = '<script>alert("x")</script> & <b>'


class PageParser(HTMLParser):
    """Collects images, scripts and text, and checks that every element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.scripts, self.errors = [], [], 0, []
        self.text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "script":
            self.scripts += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    return parser


def assert_png(src: str) -> None:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    assert base64.b64decode(src[len(prefix) :], validate=True).startswith(b"\x89PNG\r\n\x1a\n")


TRAINING_LOG = [
    {"loss": 2.1, "epoch": 0.5, "step": 5},
    {"eval_loss": 1.5, "eval_f1": 0.2, "epoch": 1.0, "step": 10},
    {"loss": 1.2, "epoch": 1.5, "step": 15},
    {"eval_loss": 1.0, "eval_f1": 0.4, "epoch": 2.0, "step": 20},
    {"train_runtime": 3.0, "train_loss": 1.6, "epoch": 2.0, "step": 20},
]


def hostile_evaluation() -> Evaluation:
    text = f"Seoul and {HOSTILE} met Hanwha in Busan."
    gold_spans = [[Span(0, 5, "GPE"), Span(10, 18, "ORG"), Span(len(text) - 6, len(text) - 1, "GPE")]]
    predicted_spans = [[Span(0, 5, "GOV_ORG"), Span(10, 40, "ORG")]]
    return Evaluation(
        document_ids=["<doc & 1>"],
        texts=[text],
        gold_tags=[["B-GPE", "O", "B-ORG", "O", "B-GPE"]],
        predicted_tags=[["B-GOV_ORG", "O", "B-ORG", "I-ORG", "O"]],
        gold_spans=gold_spans,
        predicted_spans=predicted_spans,
    )


def test_report_renders_parses_escapes_and_embeds_every_image(tmp_path):
    evaluation = hostile_evaluation()
    scores = evaluation.scores(bootstrap=50)
    records = evaluation.error_records()
    assert {r["kind"] for r in records} == {"wrong_type", "wrong_boundary", "missed"}
    model = ReportModel("models/<a>", scores, records, TRAINING_LOG)
    page_path = write_report(tmp_path / "report", [model], payload=scores)
    page = page_path.read_text(encoding="utf-8")
    parsed = parse(page)
    assert parsed.scripts == 1  # only the page's own filter script
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;doc &amp; 1&gt;" in page and "models/&lt;a&gt;" in page
    assert len(parsed.images) == 3  # F1 bars, confusion heatmap, learning curves
    for src in parsed.images:
        assert_png(src)
    text = "".join(parsed.text)
    assert "Learning curves" in text and "wrong_type" in text and "MUC-style matching" in text
    lines = [json.loads(line) for line in (tmp_path / "report" / "errors.jsonl").read_text().splitlines()]
    assert len(lines) == len(records) and lines[0]["model"] == "models/<a>"
    assert any(HOSTILE in "".join(line["context"].values()) for line in lines)
    assert json.loads((tmp_path / "report" / "scores.json").read_text()) == json.loads(json.dumps(scores))


def test_report_without_training_log_says_so(tmp_path):
    evaluation = hostile_evaluation()
    model = ReportModel("m", evaluation.scores(bootstrap=0), evaluation.error_records(), None)
    page = write_report(tmp_path, [model]).read_text(encoding="utf-8")
    assert len(parse(page).images) == 2 and "no training log" in page


def test_training_log_errors_name_the_file(tmp_path):
    from training.errors import DataError

    assert read_training_log(tmp_path) is None
    (tmp_path / "training_log.json").write_text("{not json")
    with pytest.raises(DataError, match="training_log.json: not valid JSON"):
        read_training_log(tmp_path)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_tagger):
    """The tiny tagger saved as a model directory with a training log, and a copy whose labels
    call GPE "LOC"."""
    root = tmp_path_factory.mktemp("models")
    model_dir = root / "tiny"
    tiny_tagger.model.save_pretrained(model_dir)
    tiny_tagger.tokenizer.save_pretrained(model_dir)
    (model_dir / "training_log.json").write_text(json.dumps(TRAINING_LOG))
    other = root / "tiny-loc"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {k: v.replace("GPE", "LOC") for k, v in config["id2label"].items()}
    config["label2id"] = {k.replace("GPE", "LOC"): v for k, v in config["label2id"].items()}
    (other / "config.json").write_text(json.dumps(config))
    return model_dir, other


def test_evaluate_cli_compares_models_and_writes_the_report(saved_models, tiny_export_path, tmp_path, capsys):
    model_dir, _ = saved_models
    out, report = tmp_path / "scores.json", tmp_path / "report"
    args = ["evaluate", str(model_dir), str(model_dir), "--data", str(tiny_export_path)]
    assert (
        main(args + ["--json", str(out), "--report", str(report), "--bootstrap", "100", "--seed", "5"]) == 0
    )
    printed = capsys.readouterr().out
    assert "95% CI" in printed and "paired bootstrap p = 1.000" in printed
    payload = json.loads(out.read_text())
    assert set(payload) == {"models", "comparison"}
    (scores,) = payload["models"].values()  # the same directory twice is one entry
    assert scores["bootstrap"]["samples"] == 100 and scores["bootstrap"]["seed"] == 5
    (pair,) = payload["comparison"]["paired"]
    assert pair["strict"]["difference"] == 0.0 and pair["strict"]["p_value"] == 1.0
    page = (report / "index.html").read_text(encoding="utf-8")
    parsed = parse(page)
    assert len(parsed.images) >= 5 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert "Paired bootstrap tests" in page
    errors = (report / "errors.jsonl").read_text().splitlines()
    assert sum(scores["errors"].values()) * 2 == len(errors)


def test_evaluate_cli_label_mismatch_is_an_error_unless_mapped(saved_models, tiny_export_path, capsys):
    _, loc_model = saved_models
    args = ["evaluate", str(loc_model), "--data", str(tiny_export_path), "--bootstrap", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "only in the model: LOC" in err and "only in the data: GPE" in err and "--label-map" in err
    assert main(args + ["--label-map", "LOC=GPE"]) == 0
    assert main(args + ["--bootstrap", "-1"]) == 2


def test_learning_curves_read_well_for_a_one_epoch_run(tmp_path):
    from training.evaluation.report import learning_curve_series, learning_curves_png

    one_epoch = [
        {"eval_loss": 2.1, "eval_f1": 0.0, "epoch": 1.0, "step": 3},
        {"train_runtime": 1.0, "train_loss": 2.4, "epoch": 1.0, "step": 3},
    ]
    series = learning_curve_series(one_epoch)
    # Fewer steps than logging_steps: the run's mean loss stands in for the training curve.
    assert series["training loss"] == [(1.0, 2.4)]
    assert series["validation loss"] == [(1.0, 2.1)] and series["validation F1"] == [(1.0, 0.0)]
    assert_png("data:image/png;base64," + learning_curves_png(one_epoch))
    # With per-step losses logged, those are the curve.
    assert learning_curve_series(TRAINING_LOG)["training loss"] == [(0.5, 2.1), (1.5, 1.2)]
