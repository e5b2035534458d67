"""Tagger output as Label Studio predictions: names from the config, code-point offsets, scores, versions."""

from __future__ import annotations

import shutil

import pytest

from training.data.export import task_text
from training.errors import DataError, LabelStudioError, ModelError
from training.inference.tagger import Entity
from training.labelstudio.predictions import (
    LabelingNames,
    labeling_names,
    model_version,
    predict_texts,
    prediction_result,
)
from training.schema import labeling_config_xml


def test_names_come_from_the_labeling_config():
    assert labeling_names(labeling_config_xml()) == LabelingNames("label", "text", "text")
    assert labeling_names(None) == LabelingNames()
    custom = labeling_config_xml(from_name="ner", to_name="body", text_field="article")
    assert labeling_names(custom) == LabelingNames("ner", "body", "article")


def test_a_config_without_labels_over_text_is_a_clear_error():
    with pytest.raises(LabelStudioError, match="no <Labels> over a <Text>"):
        labeling_names('<View><Choices name="c" toName="t"/><Text name="t" value="$text"/></View>')
    with pytest.raises(LabelStudioError, match="not valid XML"):
        labeling_names("<View>")


def test_offsets_are_written_as_label_studios_frontend_reads_them():
    text = "Talks \U0001f600 in Seoul."
    start = text.index("Seoul")
    entity = Entity("GPE", start, start + 5, "Seoul", 0.9)
    [result] = prediction_result(text, [entity], LabelingNames())
    value = result["value"]
    # Code points, as Label Studio 1.23 draws them (UTF-16 units would be one further after the emoji).
    assert (value["start"], value["end"]) == (start, start + 5)
    assert text[value["start"] : value["end"]] == value["text"] == "Seoul"
    assert result["score"] == 0.9 and value["labels"] == ["GPE"] and result["type"] == "labels"


def test_each_text_gets_one_prediction_with_a_task_score(tiny_tagger):
    texts = ["Seoul and Paris met in Kuala Lumpur.", "The ministry said on Tuesday."]
    predictions = predict_texts(tiny_tagger, texts, LabelingNames(), "tiny-0")
    assert len(predictions) == 2
    for prediction, (entities, confidence) in zip(predictions, tiny_tagger.tag_with_confidence(texts)):
        assert prediction["model_version"] == "tiny-0"
        assert prediction["score"] == confidence and 0 < confidence <= 1
        assert [r["value"]["text"] for r in prediction["result"]] == [e.text for e in entities]


def test_confidence_is_the_geometric_mean_of_word_probabilities(tiny_tagger):
    import math

    from training.text import tokenize_words

    text = "Seoul and Paris met in Kuala Lumpur."
    [(_, confidence)] = tiny_tagger.tag_with_confidence([text])
    [words] = tiny_tagger.predict_words([tokenize_words(text)[0]])
    expected = math.exp(sum(math.log(p) for _, p in words) / len(words))
    assert confidence == pytest.approx(expected, abs=1e-6)


def test_model_version_follows_the_weights(tiny_model_dir, tmp_path):
    version = model_version(tiny_model_dir)
    assert version.startswith(tiny_model_dir.name + "-") and len(version.rsplit("-", 1)[1]) == 12
    copy = tmp_path / tiny_model_dir.name
    shutil.copytree(tiny_model_dir, copy)
    assert model_version(copy) == version
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b" ")
    assert model_version(copy) != version
    with pytest.raises(ModelError, match="no safetensors"):
        model_version(tmp_path)


def test_a_task_without_the_text_field_is_named():
    with pytest.raises(DataError, match="task 7: data has no 'text' field"):
        task_text({"id": 7, "data": {"body": "x"}}, LabelingNames().text_field, allow_blank=True)
