"""Building the token-classification model: labels and the attention-dropout override."""

import json

import pytest
import torch

from training.errors import ModelError
from training.modeling import encoder as modeling
from training.modeling.encoder import build_model
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
