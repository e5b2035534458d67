"""The label-error audit on the tiny fixtures: k folds, an injected error that must rank high."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import make_task, tiny_overrides
from training.audit import assign_folds, audit, document_findings, rank, review_tasks
from training.config import load_config
from training.errors import ConfigError


def test_folds_cover_every_document_once_and_are_balanced():
    ids = [f"d{n}" for n in range(11)]
    folds = assign_folds(ids, 3, seed=1)
    assert set(folds) == set(ids)
    assert sorted(np.bincount(list(folds.values()))) == [3, 4, 4]
    assert folds == assign_folds(list(reversed(ids)), 3, seed=1)  # input order does not matter


class FixedTagger:
    """What ``document_findings`` asks of a tagger: labels and decoding (greedy, for a fixed table)."""

    labels = ["O", "B-GPE", "I-GPE", "B-PERSON", "I-PERSON"]

    def decode_words(self, probabilities, words, line_start=None):
        return [(self.labels[i], float(probabilities[n, i])) for n, i in enumerate(probabilities.argmax(-1))]


def kim_met_lee(monkeypatch, ner_tags: list[int], entities: list[dict]) -> dict:
    """A dataset row of "Kim met Lee in Seoul ." annotated as given (FixedTagger's tag ids)."""
    import training.audit as audit_module

    monkeypatch.setattr(audit_module, "BIO_TAGS", FixedTagger.labels)
    text = "Kim met Lee in Seoul ."
    spans = [[0, 3], [4, 7], [8, 11], [12, 14], [15, 20], [21, 22]]
    return {
        "id": "doc",
        "text": text,
        "tokens": text.split(),
        "token_spans": spans,
        "ner_tags": ner_tags,
        "entities": [{"start": s, "end": e, "label": label} for s, e, label in entities],
    }


def test_candidates_are_classified_and_scored_from_the_model_probabilities(monkeypatch):
    # Annotation: Kim PERSON, Lee GPE (wrong type), nothing on Seoul (missing), "met" PERSON (extra).
    row = kim_met_lee(monkeypatch, [3, 3, 1, 0, 0, 0], [(0, 3, "PERSON"), (4, 7, "PERSON"), (8, 11, "GPE")])
    probabilities = np.array(
        [
            [0.05, 0.05, 0.0, 0.9, 0.0],  # Kim: PERSON, agrees
            [0.8, 0.1, 0.0, 0.1, 0.0],  # met: O
            [0.1, 0.2, 0.0, 0.7, 0.0],  # Lee: PERSON
            [0.9, 0.05, 0.0, 0.05, 0.0],  # in
            [0.02, 0.95, 0.0, 0.03, 0.0],  # Seoul: GPE
            [1.0, 0.0, 0.0, 0.0, 0.0],  # .
        ]
    )
    findings, entities = document_findings(row, probabilities, FixedTagger(), fold=2)
    by_kind = {f["kind"]: f for f in findings}
    assert sorted(by_kind) == ["extra", "missing", "wrong_type"]
    # score = 1 - P(annotation's tags), averaged over the words the readings tag differently.
    missing = by_kind["missing"]
    assert missing["suggested"]["text"] == "Seoul" and missing["suggested"]["score"] == 0.95
    assert (missing["confidence"], missing["annotation_probability"]) == (0.95, 0.02)  # B-GPE vs O
    assert missing["score"] == pytest.approx(0.98)
    extra = by_kind["extra"]
    assert extra["gold"]["text"] == "met" and extra["suggested"] is None
    assert (extra["confidence"], extra["annotation_probability"]) == (0.8, 0.1)  # O vs B-PERSON
    assert extra["score"] == pytest.approx(0.9)
    wrong = by_kind["wrong_type"]
    assert (wrong["gold"]["label"], wrong["suggested"]["label"]) == ("GPE", "PERSON")
    assert (wrong["confidence"], wrong["annotation_probability"]) == (0.7, 0.2) and wrong["fold"] == 2
    assert wrong["score"] == pytest.approx(0.8)
    ranked = rank(findings)
    assert [f["kind"] for f in ranked] == ["missing", "extra", "wrong_type"]
    assert [f["rank"] for f in ranked] == [1, 2, 3]
    assert [e.text for e in entities] == ["Kim", "Lee", "Seoul"]


def test_a_boundary_slip_is_scored_on_the_words_the_readings_disagree_on(monkeypatch):
    row = kim_met_lee(monkeypatch, [0, 0, 3, 4, 0, 0], [(8, 14, "PERSON")])  # "Lee in": a word too many
    probabilities = np.array(
        [
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.05, 0.0, 0.0, 0.95, 0.0],  # Lee: B-PERSON, as annotated
            [0.9, 0.0, 0.0, 0.0, 0.1],  # in: O, not I-PERSON
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    (finding,), _ = document_findings(row, probabilities, FixedTagger(), fold=0)
    assert finding["kind"] == "wrong_boundary" and finding["suggested"]["text"] == "Lee"
    # Only "in" is read differently; "Lee", where both agree, does not dilute the score.
    assert (finding["confidence"], finding["annotation_probability"]) == (0.9, 0.1)
    assert finding["score"] == pytest.approx(0.9)


# Few names, each in every fold: a tiny model learns them in a few dozen steps.
CITIES = ["Dakar", "Maputo"]
DAYS = ["Monday", "Tuesday", "Friday"]


def consistent_tasks(n: int = 18) -> list[dict]:
    """Short, consistently annotated articles: a city (GPE) hosts talks on a day (DATE)."""
    tasks = []
    for i in range(n):
        city, day = CITIES[i % len(CITIES)], DAYS[i % len(DAYS)]
        text = f"Officials met in {city} on {day} for round {i} , the ministry said ."
        start = text.index(city)
        day_start = text.index(day)
        spans = [(start, start + len(city), "GPE"), (day_start, day_start + len(day), "DATE")]
        tasks.append(make_task(i + 1, text, spans, doc_id=f"doc{i:02d}"))
    return tasks


def test_audit_ranks_an_injected_type_swap_first(tmp_path, tiny_encoder_dir):
    tasks = consistent_tasks()
    # The injected error: one city annotated as a person.
    injected = tasks[5]
    injected["annotations"][0]["result"][0]["value"]["labels"] = ["PERSON"]
    start, end = (injected["annotations"][0]["result"][0]["value"][k] for k in ("start", "end"))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks), encoding="utf-8")
    overrides = tiny_overrides(
        tiny_encoder_dir,
        export,
        tmp_path,
        training__epochs=10,
        training__batch_size=2,
        training__learning_rate=3e-3,
    )
    result = audit(load_config(None, overrides), folds=3, out=tmp_path / "audit", say=lambda _: None)
    assert result.documents == 18 and result.folds == 3
    hits = [
        f
        for f in result.findings
        if f["doc_id"] == "doc05" and f["gold"] and (f["gold"]["start"], f["gold"]["end"]) == (start, end)
    ]
    assert hits, f"the injected error is not among the {len(result.findings)} candidates"
    hit = hits[0]
    assert hit["kind"] == "wrong_type" and hit["suggested"]["label"] == "GPE"
    assert hit["rank"] == 1, [(f["rank"], f["kind"], f["doc_id"], f["score"]) for f in result.findings[:5]]

    out = tmp_path / "audit"
    lines = (out / "findings.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(result.findings) and json.loads(lines[0])["rank"] == 1
    assert json.loads((out / "summary.json").read_text())["candidates"] == len(result.findings)
    assert "Likely annotation errors" in (out / "index.html").read_text(encoding="utf-8")
    assert not (out / ".work").exists()

    review = review_tasks(result, 1)
    assert [t["data"]["doc_id"] for t in review] == ["audit:doc05"]
    assert review[0]["data"]["audit"].startswith("#1 wrong_type")

    def spans(results):
        return {(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in results}

    assert (start, end, "PERSON") in spans(review[0]["annotations"][0]["result"])
    assert (start, end, "GPE") in spans(review[0]["predictions"][0]["result"])


def test_audit_needs_two_folds(tmp_path):
    with pytest.raises(ConfigError, match="at least 2 folds"):
        audit(load_config(None), folds=1, out=tmp_path)


def test_audit_push_top_creates_review_tasks_on_the_server(
    label_studio, tmp_path, tiny_encoder_dir, monkeypatch
):
    from training.cli import main
    from training.labelstudio import client

    tasks = consistent_tasks(9)
    tasks[4]["annotations"][0]["result"][0]["value"]["labels"] = ["PERSON"]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks), encoding="utf-8")
    overrides = tiny_overrides(tiny_encoder_dir, export, tmp_path, training__epochs=1)
    project = client.push_project(label_studio.connection, "audit-review").id
    monkeypatch.setenv("AUDIT_KEY", label_studio.token)
    argv = ["audit", "configs/tiny.yaml", *[x for o in overrides for x in ("--set", o)], "--folds", "3"]
    argv += ["--out", str(tmp_path / "audit"), "--push-top", "3", "--project", str(project)]
    argv += ["--url", label_studio.url, "--api-key-env", "AUDIT_KEY"]
    assert main(argv) == 0
    findings = [json.loads(line) for line in (tmp_path / "audit" / "findings.jsonl").read_text().splitlines()]
    expected = sorted({f"audit:{f['doc_id']}" for f in findings[:3]})

    pages = client.iter_task_pages(label_studio.connection, project)
    pushed = [task for page in pages for task in page]
    assert sorted(t["data"]["doc_id"] for t in pushed) == expected
    for task in pushed:
        assert task["data"]["audit"].startswith("#")
        assert len(task["annotations"]) == 1 and len(task["predictions"]) == 1
        prediction = task["predictions"][0]
        assert prediction["model_version"].startswith("audit-fold-")
        doc = task["data"]["doc_id"].removeprefix("audit:")
        best = next(f for f in findings if f["doc_id"] == doc)
        assert prediction["score"] == pytest.approx(max(0.0, best["score"]))


def test_push_top_without_a_project_fails_before_any_training(tmp_path, capsys):
    from training.cli import main

    assert main(["audit", "configs/tiny.yaml", "--out", str(tmp_path), "--push-top", "5"]) == 2
    assert "--push-top needs --project" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
