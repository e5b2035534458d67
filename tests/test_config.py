from pathlib import Path

import pytest

from training.config import load_config
from training.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_defaults_are_valid():
    config = load_config()
    assert config.model.name == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_validates_and_shows_its_command(path):
    config = load_config(path)
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# python -m training train ") and path.name in first_line
    assert config.name


def test_there_are_default_tiny_and_gpu_configs():
    assert {"default.yaml", "tiny.yaml"} <= {p.name for p in CONFIGS}
    assert any(load_config(p).training.bf16 is True for p in CONFIGS)


def test_dotted_overrides_are_typed():
    config = load_config(None, ["training.epochs=3", "model.max_length=128", "data.invalid_spans=drop"])
    assert config.training.epochs == 3
    assert config.model.max_length == 128
    assert config.data.invalid_spans == "drop"


def test_all_problems_reported_together_naming_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epoch: 3\n  learning_rate: -1\nmodel:\n  max_length: abc\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "training.epoch: unknown key" in message
    assert "training.learning_rate" in message
    assert "model.max_length" in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_split_ratios_must_sum_to_one():
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(None, ["data.split.train=0.9"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["training.epochs"])


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["training.epochs=2"])
    saved = tmp_path / "resolved.yaml"
    saved.write_text(config.to_yaml())
    assert load_config(saved) == config


def test_saved_configs_of_other_versions_load_without_their_unknown_keys(tmp_path):
    path = tmp_path / "training_config.yaml"
    path.write_text("training:\n  max_steps: null\n  epochs: 2\ndata:\n  retired: 1\n")
    with pytest.raises(ConfigError, match="training.max_steps: unknown key"):
        load_config(path)
    with pytest.warns(UserWarning, match="data.retired, training.max_steps|training.max_steps, data.retired"):
        config = load_config(path, ignore_unknown=True)
    assert config.training.epochs == 2
    path.write_text("training:\n  max_steps: null\n  epochs: -2\n")
    with pytest.raises(ConfigError, match="training.epochs"):  # other problems still fail
        load_config(path, ignore_unknown=True)
