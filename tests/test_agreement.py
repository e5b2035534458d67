"""Agreement: hand-computed span F1, Cohen's and Fleiss' kappa on small tasks, and the verb."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from tests.conftest import make_task
from training.cli import main
from training.evaluation.agreement import agreement, cohen_kappa, fleiss_kappa


def annotation(user, spans, *, cancelled=False, updated="2026-01-01T00:00:00Z", annotation_id=None):
    result = [
        {"id": f"r{n}", "from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": s, "end": e, "labels": [label]}}
        for n, (s, e, label) in enumerate(spans)
    ]  # fmt: skip
    return {
        "id": annotation_id if annotation_id is not None else user,
        "completed_by": user,
        "result": result,
        "was_cancelled": cancelled,
        "updated_at": updated,
    }


def two_annotator_tasks() -> list[dict]:
    """Annotators 1 and 2 on three tasks (plus a cancelled one, a draft, a single-annotator task)."""
    t1 = make_task(
        1,
        "Putin met Xi in Beijing on Monday.",
        [],
        doc_id="d1",
        annotations=[
            annotation(1, [(0, 5, "PERSON"), (10, 12, "PERSON"), (16, 23, "GPE"), (27, 33, "DATE")]),
            annotation(2, [(0, 5, "PERSON"), (10, 12, "GPE"), (16, 23, "GPE")]),
            annotation(3, [(0, 5, "GPE")], cancelled=True),
        ],
    )
    t1["drafts"] = [{"id": 9, "user": "u3", "result": []}]
    t2 = make_task(
        2,
        "The Ministry of Defence said.",
        [],
        doc_id="d2",
        annotations=[annotation(1, [(4, 23, "GOV_ORG")]), annotation(2, [(0, 23, "GOV_ORG")])],
    )
    # Annotator 2's annotation is empty: it says there is no entity, and counts.
    t4 = make_task(
        4,
        "Reuters reported.",
        [],
        doc_id="d4",
        annotations=[annotation(1, [(0, 7, "ORG")]), annotation(2, [])],
    )
    single = make_task(5, "Kim spoke.", [(0, 3, "PERSON")], doc_id="d5")
    return [t1, t2, single, t4]


def test_span_f1_and_cohen_kappa_match_the_hand_computation():
    result = agreement(two_annotator_tasks())
    # Spans: task 1 has 4 and 3 with 2 agreed; task 2 1 and 1, none agreed; task 4 1 and 0.
    assert result.spans["overall"]["f1"] == pytest.approx(2 * 2 / (4 + 3 + 1 + 1 + 1 + 0))
    per_label = result.spans["per_label"]
    assert per_label["PERSON"]["f1"] == pytest.approx(2 * 1 / (2 + 1))
    assert per_label["GPE"]["f1"] == pytest.approx(2 * 1 / (1 + 2))
    for label in ("DATE", "GOV_ORG", "ORG"):
        assert per_label[label]["f1"] == 0.0

    # Words: 8 + 6 + 3 = 17, BIO tags per word (see the texts above):
    #   task 1  A: B-PER O B-PER O B-GPE O B-DATE O   B: B-PER O B-GPE O B-GPE O O O     6 agree
    #   task 2  A: O B-GOV I-GOV I-GOV O O            B: B-GOV I-GOV I-GOV I-GOV O O     4 agree
    #   task 4  A: B-ORG O O                          B: O O O                           2 agree
    observed = Fraction(6 + 4 + 2, 17)
    # Tag counts  A: O 9, B-PER 2, B-GPE 1, B-DATE 1, B-GOV 1, I-GOV 2, B-ORG 1
    #             B: O 10, B-PER 1, B-GPE 2, B-GOV 1, I-GOV 3
    expected = Fraction(9 * 10 + 2 * 1 + 1 * 2 + 1 * 1 + 2 * 3, 17 * 17)
    kappa = (observed - expected) / (1 - expected)
    assert result.tokens["measure"] == "cohen"
    assert result.tokens["words"] == 17
    assert result.tokens["kappa"] == pytest.approx(float(kappa))


def test_what_counts_and_what_does_not():
    result = agreement(two_annotator_tasks())
    summary = result.to_dict()
    assert summary["tasks"] == {"read": 4, "compared": 3, "single_annotator": 1, "no_annotation": 0}
    assert summary["annotations_not_counted"] == {"cancelled": 1, "drafts": 1, "repeated": 0}
    assert summary["empty_annotations"] == 1
    assert "3" not in summary["annotators"]  # the cancelled annotator is nobody's pair
    assert summary["annotators"]["1"] == {
        "tasks": 3,
        "spans": 6,
        "per_label": {"DATE": 1, "GOV_ORG": 1, "GPE": 1, "ORG": 1, "PERSON": 2},
    }
    assert summary["annotators"]["2"]["spans"] == 4


def test_disagreements_are_classified_with_context():
    records = agreement(two_annotator_tasks()).disagreements
    found = sorted((r["doc_id"], r["kind"], (r["first"] or {}).get("text"), (r["second"] or {}).get("text"))
                   for r in records)  # fmt: skip
    assert found == [
        ("d1", "only_first", "Monday", None),
        ("d1", "type", "Xi", "Xi"),
        ("d2", "boundary", "Ministry of Defence", "The Ministry of Defence"),
        ("d4", "only_first", "Reuters", None),
    ]
    xi = next(r for r in records if r["kind"] == "type")
    assert xi["annotators"] == ["1", "2"]
    assert (xi["first"]["label"], xi["second"]["label"]) == ("PERSON", "GPE")
    assert xi["context"]["before"] == "Putin met " and xi["context"]["after"].startswith(" in Beijing")


def test_three_annotators_give_fleiss_kappa():
    text = "Kim met Moon."
    task = make_task(
        1,
        text,
        [],
        annotations=[
            annotation(1, [(0, 3, "PERSON"), (8, 12, "PERSON")]),
            annotation(2, [(0, 3, "PERSON"), (8, 12, "PERSON")]),
            annotation(3, [(0, 3, "PERSON")]),
        ],
    )
    result = agreement([task])
    # Words Kim / met / Moon / "." rated by 3: B-PER 3; O 3; B-PER 2 + O 1; O 3.
    per_word = [Fraction(1), Fraction(1), Fraction(2 * 1, 3 * 2), Fraction(1)]
    observed = sum(per_word) / 4
    expected = Fraction(5, 12) ** 2 + Fraction(7, 12) ** 2  # 5 B-PER and 7 O of 12 ratings
    assert result.tokens["measure"] == "fleiss"
    assert result.tokens["kappa"] == pytest.approx(float((observed - expected) / (1 - expected)))
    assert float((observed - expected) / (1 - expected)) == pytest.approx(23 / 35)
    # Pairs (1,2): 2+2 spans, 2 agreed; (1,3) and (2,3): 2+1, 1 agreed.
    assert result.spans["overall"]["f1"] == pytest.approx(2 * 4 / (4 + 3 + 3))
    assert len(result.tokens["pairs"]) == 3


def test_a_repeated_annotator_counts_once_with_the_latest_annotation():
    text = "Kim met Moon."
    task = make_task(
        1,
        text,
        [],
        annotations=[
            annotation(1, [(0, 3, "GPE")], updated="2026-01-01T00:00:00Z", annotation_id=10),
            annotation(1, [(0, 3, "PERSON")], updated="2026-02-01T00:00:00Z", annotation_id=11),
            annotation(2, [(0, 3, "PERSON")]),
        ],
    )
    result = agreement([task])
    assert result.read.repeated == 1
    assert result.spans["overall"]["f1"] == 1.0
    assert result.tokens["kappa"] == 1.0


def test_kappa_edge_cases():
    assert cohen_kappa(["O", "O"], ["O", "O"]) is None  # chance agreement is 1: undefined
    assert cohen_kappa(["A", "B"], ["B", "A"]) == pytest.approx(-1.0)
    assert fleiss_kappa([]) is None
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["A"], ["A", "B"])


def test_agreement_verb_writes_jsonl_summary_and_report(tmp_path, capsys):
    export = tmp_path / "export.json"
    export.write_text(json.dumps(two_annotator_tasks()), encoding="utf-8")
    out = tmp_path / "report"
    assert main(["agreement", str(export), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "span F1 (exact, pairwise): 0.400" in printed
    lines = (out / "disagreements.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["doc_id"] == "d1"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["span_f1"]["overall"]["f1"] == pytest.approx(0.4)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Inter-annotator agreement" in page and "Token Cohen's kappa" in page
    assert '<mark class="pred">The </mark><mark class="gold pred">Ministry of Defence</mark>' in page


def test_agreement_verb_rejects_a_source_that_is_neither_file_nor_project(tmp_path, capsys):
    assert main(["agreement", str(tmp_path / "nothing.json"), "--out", str(tmp_path)]) == 2
    assert "neither an export file nor a Label Studio project id" in capsys.readouterr().err


def test_agreement_of_a_live_project_with_two_annotators(label_studio, tmp_path, monkeypatch, capsys):
    from training.labelstudio import client

    connection = label_studio.connection
    project = client.push_project(connection, "agreement-test").id
    email = "second-annotator@localhost.localdomain"
    second = next((u.id for u in connection.sdk.users.list() if u.email == email), None)
    if second is None:
        second = connection.sdk.users.create(email=email, username="second-annotator").id
    first = next(u.id for u in connection.sdk.users.list() if u.id != second)
    tasks = two_annotator_tasks()
    for task in tasks:  # the fixture's annotators 1 and 2 become the server's two users
        for a in task["annotations"]:
            a["completed_by"] = {1: first, 2: second}.get(a["completed_by"], first)
    tasks[0]["annotations"] = tasks[0]["annotations"][:2]  # the cancelled one is the first user's too
    client.push_tasks(connection, project, tasks)

    monkeypatch.setenv("AGREEMENT_KEY", label_studio.token)
    monkeypatch.chdir(tmp_path)  # the pulled snapshot goes under ./data/snapshots
    out = tmp_path / "report"
    argv = ["agreement", str(project), "--url", label_studio.url, "--api-key-env", "AGREEMENT_KEY"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pulled 4 tasks" in printed
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["tasks"]["compared"] == 3
    assert sorted(summary["annotators"]) == sorted([str(first), str(second)])
    assert summary["span_f1"]["overall"]["f1"] == pytest.approx(0.4)  # as from the file
    assert len((out / "disagreements.jsonl").read_text(encoding="utf-8").splitlines()) == 4
