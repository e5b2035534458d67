import json

import pytest
from conftest import make_task
from datasets import load_from_disk

from training.config import DataConfig, load_config
from training.data.dataset import (
    assign_splits,
    build_dataset,
    build_from_config,
)
from training.data.export import ConversionReport, Document, convert_tasks
from training.errors import DataError
from training.schema import BIO_TAGS
from training.text import Span


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


def test_spans_short_of_an_abbreviations_stop_are_widened_and_reported():
    text = "Talks with the U.S. ended. Hanwha Ocean Co. won."
    docs = [Document(id="a", text=text, spans=[Span(15, 18, "GPE"), Span(27, 42, "COMPANY")], split="train")]
    report = ConversionReport()
    row = build_dataset(docs, DataConfig(), report)["train"][0]
    assert [text[e["start"] : e["end"]] for e in row["entities"]] == ["U.S.", "Hanwha Ocean Co."]
    assert [a["message"] for a in report.adjustments] == [
        "doc a: entity [15:18] GPE 'U.S' widened to the whole abbreviation 'U.S.'",
        "doc a: entity [27:42] COMPANY 'Hanwha Ocean Co' widened to the whole abbreviation"
        " 'Hanwha Ocean Co.'",
    ]


def test_a_held_out_split_is_kept_apart_and_only_where_named():
    docs = _docs(10) + [Document(id="r", text="Oslo.", spans=[Span(0, 4, "GPE")], split="realnews")]
    splits = assign_splits(docs, DataConfig())
    assert [d.id for d in splits["realnews"]] == ["r"]
    assert all(d.id != "r" for name in ("train", "validation", "test") for d in splits[name])
    assert "realnews" not in assign_splits(_docs(10), DataConfig())


def test_a_refit_trains_on_the_validation_documents_and_keeps_test_and_held_out_apart():
    docs = _docs(20) + [Document(id="r", text="Oslo.", spans=[Span(0, 4, "GPE")], split="realnews")]
    plain = assign_splits(docs, DataConfig())
    refit = assign_splits(docs, DataConfig(split={"refit": True}))
    ids = {name: sorted(d.id for d in split) for name, split in refit.items()}
    assert ids["validation"] == []
    assert ids["train"] == sorted(d.id for d in plain["train"] + plain["validation"])
    assert ids["test"] == sorted(d.id for d in plain["test"]) and ids["realnews"] == ["r"]


def test_build_from_config_saves_dataset_and_report(tmp_path):
    tasks = [
        make_task(i, f"Seoul signed deal number {i}.", [(0, 5, "GPE")], doc_id=f"d{i}") for i in range(10)
    ]
    tasks.append(make_task(99, "Nothing.", [], annotations=[]))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    config = load_config(None, [f"data.source={export}", f"data.dataset_dir={tmp_path / 'ds'}"])
    dataset, report = build_from_config(config.data)
    assert sum(len(s) for s in dataset.values()) == 10
    reloaded = load_from_disk(str(tmp_path / "ds"))
    assert reloaded["train"][0] == dataset["train"][0]
    saved = json.loads((tmp_path / "ds" / "conversion_report.json").read_text())
    assert saved["documents_excluded"] == 1 and saved["entities_per_label"] == {"GPE": 10}
    assert sum(saved["splits"].values()) == 10


def test_conversion_of_the_fixture_export(tiny_tasks):
    docs, report = convert_tasks(tiny_tasks, DataConfig())
    assert report.kept == len(tiny_tasks) and not report.adjustments


def test_splits_built_in_chunks_equal_one_chunk(monkeypatch, tiny_tasks):
    import training.data.dataset as dataset_module

    docs, _ = convert_tasks(tiny_tasks, DataConfig())
    whole = build_dataset(docs, DataConfig(), ConversionReport())
    monkeypatch.setattr(dataset_module, "BUILD_CHUNK", 2)
    chunked = build_dataset(docs, DataConfig(), ConversionReport())
    assert max(len(split) for split in whole.values()) > 2, "the fixture must span several chunks"
    for name in whole:
        assert chunked[name].features == whole[name].features
        assert chunked[name].to_list() == whole[name].to_list()
