import json

import pytest

from training.errors import ConfigError, ModelError
from training.evaluation.label_map import check_labels, entity_labels, parse_label_map, rename_tags


def test_parse_pairs_and_files(tmp_path):
    assert parse_label_map(None) == {}
    assert parse_label_map("LOC=GPE, MISC=O") == {"LOC": "GPE", "MISC": "O"}
    json_file = tmp_path / "map.json"
    json_file.write_text(json.dumps({"LOC": "GPE"}))
    yaml_file = tmp_path / "map.yaml"
    yaml_file.write_text("LOC: GPE\nMISC: O\n")
    assert parse_label_map(str(json_file)) == {"LOC": "GPE"}
    assert parse_label_map(str(yaml_file)) == {"LOC": "GPE", "MISC": "O"}
    with pytest.raises(ConfigError, match="'LOC' is not LABEL=LABEL"):
        parse_label_map("LOC")
    with pytest.raises(ConfigError, match="file not found"):
        parse_label_map(str(tmp_path / "missing.yaml"))
    yaml_file.write_text("- LOC\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_label_map(str(yaml_file))


def test_mismatch_lists_the_difference_and_a_map_resolves_it():
    model = entity_labels(["O", "B-LOC", "I-LOC", "B-PERSON", "I-PERSON", "B-MISC", "I-MISC"])
    assert model == {"LOC", "PERSON", "MISC"}
    data = {"GPE", "PERSON", "EVENT"}
    with pytest.raises(ModelError) as caught:
        check_labels(model, data, {}, "models/old")
    message = str(caught.value)
    assert message.startswith("models/old: ")
    assert "only in the model: LOC, MISC" in message and "only in the data: EVENT, GPE" in message
    assert "--label-map" in message
    check_labels(model, data, {"LOC": "GPE", "MISC": "O", "EVENT": "O"}, "models/old")
    with pytest.raises(ModelError, match="only in the data: EVENT"):
        check_labels(model, data, {"LOC": "GPE", "MISC": "O"})
    with pytest.raises(ConfigError, match="--label-map names NOPE"):
        check_labels(model, data, {"NOPE": "GPE"})


def test_rename_tags_renames_and_drops():
    tags = ["B-LOC", "I-LOC", "O", "B-MISC", "I-MISC", "B-PERSON"]
    assert rename_tags(tags, {"LOC": "GPE", "MISC": "O"}) == ["B-GPE", "I-GPE", "O", "O", "O", "B-PERSON"]
    assert rename_tags(tags, {}) == tags
