import json

import pytest
from conftest import make_task

from training.config import DataConfig, load_config
from training.dataset import (
    assign_splits,
    build_dataset,
    build_from_config,
    load_dataset_dir,
    spans_to_tags,
    tags_to_spans,
    tokenize_words,
)
from training.errors import DataError
from training.labelstudio import ConversionReport, Document, convert_tasks
from training.schema import BIO_TAGS
from training.validation import Span


def test_word_tokenizer_splits_punctuation_hyphens_and_possessives():
    words, spans = tokenize_words("South Korea’s F-16s cost US$1.2 billion, Seung-Bae's.")
    assert words == [
        "South",
        "Korea",
        "’s",
        "F",
        "-",
        "16s",
        "cost",
        "US",
        "$",
        "1.2",
        "billion",
        ",",
        "Seung",
        "-",
        "Bae",
        "'s",
        ".",
    ]
    text = "South Korea’s F-16s cost US$1.2 billion, Seung-Bae's."
    assert all(text[s:e] == w for w, (s, e) in zip(words, spans))


def test_spans_to_tags_and_back():
    text = "Yeo Seung-Bae met KAI in Seoul."
    words, word_spans = tokenize_words(text)
    spans = [Span(0, 13, "PERSON"), Span(18, 21, "COMPANY"), Span(25, 30, "GPE")]
    tags, misaligned = spans_to_tags(word_spans, spans)
    assert tags == ["B-PERSON", "I-PERSON", "I-PERSON", "I-PERSON", "O", "B-COMPANY", "O", "B-GPE", "O"]
    assert misaligned == []
    assert tags_to_spans(word_spans, tags) == spans


def test_boundary_inside_a_word_is_reported_not_widened():
    _, word_spans = tokenize_words("The F-16s flew.")
    tags, misaligned = spans_to_tags(word_spans, [Span(4, 8, "EQUIPMENT")])  # "F-16" inside "16s"
    assert misaligned == [Span(4, 8, "EQUIPMENT")]
    assert set(tags) == {"O"}


def test_lenient_decoding_of_invalid_i_tags():
    spans = tags_to_spans([(0, 1), (2, 3), (4, 5)], ["I-GPE", "I-GPE", "B-ROLE"])
    assert spans == [Span(0, 3, "GPE"), Span(4, 5, "ROLE")]


def _docs(n, split=None):
    return [
        Document(id=f"d{i}", text=f"Seoul {i}.", spans=[Span(0, 5, "GPE")], split=split) for i in range(n)
    ]


def test_named_splits_win_and_the_rest_is_seeded():
    options = DataConfig()
    docs = _docs(20) + [Document(id="t", text="Seoul.", spans=[], split="test")]
    first = assign_splits(docs, options)
    again = assign_splits(list(reversed(docs)), options)
    assert {k: [d.id for d in v] for k, v in first.items()} == {
        k: [d.id for d in v] for k, v in again.items()
    }
    assert "t" in [d.id for d in first["test"]]
    assert [len(first[s]) for s in ("train", "validation", "test")] == [14, 3, 4]
    other = assign_splits(docs, DataConfig(split={"seed": 99}))
    assert [d.id for d in other["train"]] != [d.id for d in first["train"]]


def test_build_dataset_features_and_misaligned_policy():
    docs = [
        Document(
            id="a",
            text="The F-16s flew to Seoul.",
            spans=[Span(4, 8, "EQUIPMENT"), Span(18, 23, "GPE")],
            split="train",
            task_id=3,
        )
    ]
    with pytest.raises(DataError, match=r"doc a \(task 3\).*'F-16'.*word boundaries"):
        build_dataset(docs, DataConfig(), ConversionReport())
    report = ConversionReport()
    dataset = build_dataset(docs, DataConfig(invalid_spans="drop"), report)
    row = dataset["train"][0]
    assert report.dropped_spans["boundary inside a word"] == 1
    assert row["tokens"][-2] == "Seoul"
    assert [BIO_TAGS[t] for t in row["ner_tags"]][-2] == "B-GPE"
    assert row["entities"][1] == {"start": 18, "end": 23, "label": "GPE"}
    assert dataset["train"].features["ner_tags"].feature.names == list(BIO_TAGS)


def test_build_from_config_saves_dataset_and_report(tmp_path):
    tasks = [
        make_task(i, f"Seoul signed deal number {i}.", [(0, 5, "GPE")], doc_id=f"d{i}") for i in range(10)
    ]
    tasks.append(make_task(99, "Nothing.", [], annotations=[]))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    config = load_config(None, [f"data.source={export}", f"data.dataset_dir={tmp_path / 'ds'}"])
    dataset, report = build_from_config(config)
    assert sum(len(s) for s in dataset.values()) == 10
    reloaded = load_dataset_dir(tmp_path / "ds")
    assert reloaded["train"][0] == dataset["train"][0]
    saved = json.loads((tmp_path / "ds" / "conversion_report.json").read_text())
    assert saved["documents_excluded"] == 1 and saved["entities_per_label"] == {"GPE": 10}
    assert sum(saved["splits"].values()) == 10


def test_conversion_of_the_fixture_export(tiny_tasks):
    docs, report = convert_tasks(tiny_tasks, DataConfig())
    assert report.kept == len(tiny_tasks) and not report.adjustments


def test_splits_built_in_chunks_equal_one_chunk(monkeypatch, tiny_tasks):
    import training.dataset as dataset_module

    docs, _ = convert_tasks(tiny_tasks, DataConfig())
    whole = build_dataset(docs, DataConfig(), ConversionReport())
    monkeypatch.setattr(dataset_module, "BUILD_CHUNK", 2)
    chunked = build_dataset(docs, DataConfig(), ConversionReport())
    assert max(len(split) for split in whole.values()) > 2, "the fixture must span several chunks"
    for name in whole:
        assert chunked[name].features == whole[name].features
        assert chunked[name].to_list() == whole[name].to_list()
