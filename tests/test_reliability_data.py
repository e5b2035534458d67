"""Messy exports: each case gives a clear error naming task and field, or a counted repair."""

import pytest
from conftest import make_task
from hypothesis import given, settings
from hypothesis import strategies as st

from training.config import DataConfig
from training.data.export import convert_tasks
from training.errors import DataError
from training.text import Span, spans_to_tags, tags_to_spans, tokenize_words


def convert(tasks, **options):
    return convert_tasks(tasks, DataConfig(**options))


def _with_value_text(task, text):
    for result in task["annotations"][0]["result"]:
        value = result["value"]
        value["text"] = text
    return task


def test_crlf_line_ends_with_browser_offsets_are_converted():
    text = "Line one.\r\nSeoul met Ankara."
    # The browser reads CRLF as one character: "Seoul" is 10..15 there, 11..16 in Python.
    assert text[11:16] == "Seoul" and text[10:15] != "Seoul"
    (doc,), report = convert([_with_value_text(make_task(1, text, [(10, 15, "GPE")]), "Seoul")])
    assert doc.spans == [Span(11, 16, "GPE")]
    assert "CRLF offsets 10:15 -> 11:16" in report.adjustments[0]["message"]


def test_crlf_and_emoji_together():
    text = "😀😀 Note.\r\nSeoul met Ankara."
    # Browser: each emoji counts 2 units, CRLF counts 1 -> "Seoul" at 11..16; Python: 10..15.
    assert text[10:15] == "Seoul"
    (doc,), report = convert([_with_value_text(make_task(1, text, [(11, 16, "GPE")]), "Seoul")])
    assert doc.spans == [Span(10, 15, "GPE")]
    assert "UTF-16 CRLF offsets 11:16 -> 10:15" in report.adjustments[0]["message"]


def test_emoji_offsets_from_a_python_script_are_kept_when_value_text_confirms_them():
    text = "😀 Seoul met Ankara."
    (doc,), report = convert([_with_value_text(make_task(1, text, [(2, 7, "GPE")]), "Seoul")])
    assert doc.spans == [Span(2, 7, "GPE")] and not report.adjustments


@pytest.mark.parametrize(
    "task_changes, reason",
    [
        ({"annotations": [], "drafts": [{"result": []}]}, "only drafts"),
        ({"annotations": [], "predictions": [{"result": []}]}, "only predictions"),
        ({"annotations": []}, "no annotation"),
    ],
)
def test_tasks_without_usable_annotations_are_excluded_with_their_reason(task_changes, reason):
    task = make_task(4, "Seoul.", [(0, 5, "GPE")])
    task.update(task_changes)
    docs, report = convert([task])
    assert docs == [] and report.excluded == [{"task": 4, "reason": reason}]


def test_empty_annotation_is_a_document_without_entities():
    (doc,), report = convert([make_task(1, "Nothing to see.", [])])
    assert doc.spans == [] and report.kept == 1


def test_disagreeing_annotators_are_counted():
    a = make_task(1, "Seoul met Ankara.", [(0, 5, "GPE")])["annotations"][0]
    b = make_task(1, "Seoul met Ankara.", [(10, 16, "GPE")])["annotations"][0]
    b["updated_at"] = "2026-02-01T00:00:00Z"
    (doc,), report = convert([make_task(1, "Seoul met Ankara.", [], annotations=[a, b])])
    assert doc.spans == [Span(10, 16, "GPE")]
    assert report.disagreements == [1]
    assert "disagree" in report.summary()


def test_duplicate_tasks_are_an_error_or_a_counted_repair():
    tasks = [make_task(1, "Seoul.", [(0, 5, "GPE")]), make_task(2, "Seoul.", [(0, 5, "GPE")])]
    with pytest.raises(DataError, match=r"task 2: same text as task 1"):
        convert(tasks)
    docs, report = convert(tasks, duplicate_texts="keep_first")
    assert [d.task_id for d in docs] == [1]
    assert report.duplicates == [{"task": 2, "same_as": 1}]


def test_labels_never_used_are_reported():
    _, report = convert([make_task(1, "Seoul.", [(0, 5, "GPE")])])
    assert "ROLE" in report.unused_labels() and "GPE" not in report.unused_labels()
    assert "never used" in report.summary()


@pytest.mark.parametrize(
    "data, message",
    [
        (None, "has no 'data' object"),
        ({"text": 42}, "data.text is empty or not a string"),
        ({"text": "   "}, "data.text is empty or not a string"),
        ({"body": "x"}, "data has no 'text' field"),
    ],
)
def test_task_data_problems_name_the_task_and_field(data, message):
    task = make_task(17, "x", [])
    if data is None:
        del task["data"]
    else:
        task["data"] = data
    with pytest.raises(DataError, match=message) as error:
        convert([task])
    assert "task 17" in str(error.value)


def test_results_from_another_labels_control_are_ignored_and_counted():
    task = make_task(1, "Seoul met Ankara.", [(0, 5, "GPE")])
    task["annotations"][0]["result"][0]["from_name"] = "sentiment_labels"
    (doc,), report = convert([task], from_name="label")
    assert doc.spans == [] and report.ignored_results == {"labels from 'sentiment_labels'": 1}


@pytest.mark.parametrize(
    "value, message",
    [
        ({"end": 5, "labels": ["GPE"]}, "start/end missing"),
        ({"start": -1, "end": 5, "labels": ["GPE"]}, "bad offsets"),
        ({"start": 0, "end": 5, "labels": []}, "no label"),
    ],
)
def test_broken_span_values(value, message):
    task = make_task(3, "Seoul met Ankara.", [(0, 5, "GPE")])
    task["annotations"][0]["result"][0]["value"] = value
    with pytest.raises(DataError, match=message):
        convert([task])


def test_nested_spans_are_an_overlap_error():
    task = make_task(3, "Korea Aerospace Industries", [(0, 26, "COMPANY"), (0, 5, "GPE")])
    with pytest.raises(DataError, match=r"task 3: span \[0:5\] GPE 'Korea'.*overlaps \[0:26\] COMPANY"):
        convert([task])


# --- property-based round trips -------------------------------------------------------

TEXTS = st.text(alphabet=st.sampled_from(list("abcXYZ019 -'’.,$€\n😀é")), min_size=1, max_size=80)


@st.composite
def text_with_spans(draw):
    text = draw(TEXTS)
    _, word_spans = tokenize_words(text)
    spans, position = [], 0
    while position < len(word_spans):
        if draw(st.booleans()):
            length = draw(st.integers(1, 3))
            last = min(position + length, len(word_spans)) - 1
            label = draw(st.sampled_from(["GPE", "ROLE", "MONEY"]))
            spans.append(Span(word_spans[position][0], word_spans[last][1], label))
            position = last + 1 + draw(st.integers(0, 2))
        else:
            position += 1
    return text, spans


@settings(max_examples=300, deadline=None)
@given(text_with_spans())
def test_spans_survive_words_and_bio_exactly(case):
    text, spans = case
    words, word_spans = tokenize_words(text)
    assert all(text[s:e] == w for w, (s, e) in zip(words, word_spans))
    tags, misaligned = spans_to_tags(word_spans, spans)
    assert misaligned == []
    assert tags_to_spans(word_spans, tags) == spans
