import json

import pytest
from conftest import make_task

from training.config import DataConfig
from training.data.export import convert_tasks, read_export
from training.errors import DataError
from training.text import Span, python_index

TEXT = "Seoul and Kuala Lumpur signed an arms deal."
#       0    5    10        20        30   35


def convert(tasks, **options):
    return convert_tasks(tasks, DataConfig(**options))


def test_spans_are_rebuilt_from_text_and_counted():
    docs, report = convert([make_task(1, TEXT, [(0, 5, "GPE"), (10, 22, "GPE"), (33, 42, "AGREEMENT")])])
    assert [TEXT[s.start : s.end] for s in docs[0].spans] == ["Seoul", "Kuala Lumpur", "arms deal"]
    assert report.entities == {"GPE": 2, "AGREEMENT": 1}
    assert report.kept == 1


def test_cancelled_annotations_are_skipped_and_tasks_without_usable_ones_excluded():
    cancelled = make_task(1, TEXT, [(0, 5, "GPE")], was_cancelled=True)
    empty_list = make_task(2, TEXT, [], annotations=[])
    docs, report = convert([cancelled, empty_list, make_task(3, TEXT, [(0, 5, "GPE")])])
    assert [d.task_id for d in docs] == [3]
    assert {(e["task"], e["reason"]) for e in report.excluded} == {
        (1, "only cancelled annotations"),
        (2, "no annotation"),
    }


def _annotation(ann_id, spans, *, updated, ground_truth=False, user=1, cancelled=False):
    return {
        "id": ann_id,
        "completed_by": user,
        "was_cancelled": cancelled,
        "ground_truth": ground_truth,
        "updated_at": updated,
        "result": [
            {"type": "labels", "from_name": "label", "value": {"start": s, "end": e, "labels": [lab]}}
            for s, e, lab in spans
        ],
    }


def test_ground_truth_wins_then_latest_then_chosen_annotator():
    anns = [
        _annotation(1, [(0, 5, "GPE")], updated="2026-01-03", user=7),
        _annotation(2, [(10, 22, "GPE")], updated="2026-01-01", ground_truth=True, user=8),
        _annotation(3, [(33, 42, "AGREEMENT")], updated="2026-01-05", user=9, cancelled=True),
    ]
    task = make_task(1, TEXT, [], annotations=anns)
    (doc,), _ = convert([task])
    assert doc.spans == [Span(10, 22, "GPE")]
    (doc,), _ = convert([task], annotation={"prefer": "latest"})
    assert doc.spans == [Span(0, 5, "GPE")]
    (doc,), _ = convert([task], annotation={"annotator": 7})
    assert doc.spans == [Span(0, 5, "GPE")]
    docs, report = convert([task], annotation={"annotator": 9})
    assert docs == [] and report.excluded[0]["reason"] == "no annotation by annotator 9"


def test_value_text_mismatch_is_an_error_naming_the_task():
    task = make_task(42, TEXT, [(0, 5, "GPE")], doc_id="doc-a")
    task["annotations"][0]["result"][0]["value"]["text"] = "Busan"
    with pytest.raises(DataError, match=r"task 42 \(doc doc-a\).*'Busan'"):
        convert([task])


def test_whitespace_is_trimmed_and_reported():
    (doc,), report = convert([make_task(5, TEXT, [(9, 23, "GPE")])])
    assert doc.spans == [Span(10, 22, "GPE")]
    assert "trimmed" in report.adjustments[0]["message"] and report.adjustments[0]["task"] == 5


@pytest.mark.parametrize(
    "spans, message",
    [
        ([(0, 5, "CITY")], "not in the schema"),
        ([(0, 99, "GPE")], "past the end"),
        ([(5, 2, "GPE")], "bad offsets"),
        ([(0, 9, "GPE"), (6, 22, "GPE")], "overlaps"),
        ([(5, 6, "GPE")], "whitespace"),
    ],
)
def test_invalid_spans_error_by_default_and_are_counted_when_dropped(spans, message):
    task = make_task(7, TEXT, spans)
    with pytest.raises(DataError, match=message) as error:
        convert([task])
    assert "task 7" in str(error.value)
    (doc,), report = convert([task], invalid_spans="drop")
    assert sum(report.dropped_spans.values()) == 1
    assert any("dropped" in a["message"] for a in report.adjustments)


def test_several_labels_on_one_span():
    task = make_task(8, TEXT, [(0, 5, "GPE")])
    task["annotations"][0]["result"][0]["value"]["labels"] = ["GPE", "GOV_ORG"]
    with pytest.raises(DataError, match="several labels"):
        convert([task])


def test_non_label_results_are_ignored_and_counted():
    task = make_task(9, TEXT, [(0, 5, "GPE")])
    task["annotations"][0]["result"] += [
        {"type": "relation", "from_id": "a", "to_id": "b"},
        {"type": "choices", "value": {"choices": ["ok"]}},
    ]
    (doc,), report = convert([task])
    assert len(doc.spans) == 1
    assert report.ignored_results == {"relation": 1, "choices": 1}


def test_utf16_offsets_are_converted():
    text = "😀 Seoul met Ankara."
    # Older frontends count the emoji as two code units: "Seoul" is 3..8 there, 2..7 in Python;
    # the span text they save settles which reading is meant.
    task = make_task(1, text, [(3, 8, "GPE")])
    task["annotations"][0]["result"][0]["value"]["text"] = "Seoul"
    (doc,), report = convert([task])
    assert text[doc.spans[0].start : doc.spans[0].end] == "Seoul"
    assert "UTF-16" in report.adjustments[0]["message"]
    assert python_index(text, 1) is None  # inside the surrogate pair


def test_code_point_offsets_are_kept_and_no_change_is_no_adjustment():
    text = "😀 Seoul met Ankara."
    # Label Studio 1.23 writes code points: "Seoul" is 2..7, as in Python; nothing to adjust.
    (doc,), report = convert([make_task(1, text, [(2, 7, "GPE")])])
    assert text[doc.spans[0].start : doc.spans[0].end] == "Seoul" and report.adjustments == []
    (doc,), report = convert([make_task(1, "Seoul met Ankara.", [(0, 5, "GPE")])])
    assert report.adjustments == []


def test_split_from_task_data_and_bad_split_value():
    (doc,), _ = convert([make_task(1, TEXT, [], split="test")])
    assert doc.split == "test"
    with pytest.raises(DataError, match="train/validation/test"):
        convert([make_task(1, TEXT, [], split="dev")])


def test_duplicate_document_ids_are_an_error():
    tasks = [make_task(1, TEXT, [], doc_id="a"), make_task(2, TEXT + " More.", [], doc_id="a")]
    with pytest.raises(DataError, match="duplicate document id 'a'"):
        convert(tasks)


def test_missing_text_field_names_the_field():
    task = make_task(3, TEXT, [])
    task["data"] = {"body": TEXT}
    with pytest.raises(DataError, match=r"task 3: data has no 'text' field.*body"):
        convert([task])
    (doc,), _ = convert([task], text_field="body")
    assert doc.text == TEXT


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("[{", "not valid JSON"),
        ('{"data": {"text": "a"}}\n{"data": {"text": "b"}}\n', "JSONL"),
        ('"hello"', "expected a JSON list"),
        ("[1, 2]", "item 0 is a int"),
    ],
)
def test_read_export_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "export.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        read_export(path)
    assert str(path) in str(error.value)


def test_read_export_round_trip(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([make_task(1, TEXT, [])]))
    assert read_export(path)[0]["id"] == 1


def test_iter_export_streams_tasks_before_a_later_error(tmp_path):
    from training.data.export import iter_export

    path = tmp_path / "export.json"
    good = json.dumps(make_task(1, TEXT, [(0, 5, "GPE")]))
    path.write_bytes(b"\xef\xbb\xbf  [" + good.encode() + b", {broken")
    tasks = iter_export(path)
    assert next(tasks)["id"] == 1, "the first task arrives before the file is read to its end"
    with pytest.raises(DataError, match=r"export.json: not valid JSON \(after 1 tasks\)"):
        next(tasks)


def test_iter_export_keeps_numbers_as_python_numbers(tmp_path):
    from training.data.export import iter_export

    task = make_task(7, TEXT, [(0, 5, "GPE")])
    task["meta"] = {"score": 0.25}
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    (streamed,) = iter_export(path)
    assert streamed == task and type(streamed["meta"]["score"]) is float
