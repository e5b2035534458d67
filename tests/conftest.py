"""Shared fixtures: a tiny random-weight BERT with a vocabulary trained on the fly, and tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


def make_task(task_id, text, spans, *, doc_id=None, split=None, annotations=None, **annotation):
    """A Label Studio task in export shape with one annotation over ``spans`` [(start, end, label)]."""
    result = [
        {
            "id": f"r{n}",
            "from_name": "label",
            "to_name": "text",
            "type": "labels",
            "value": {"start": s, "end": e, "labels": [label]},
        }
        for n, (s, e, label) in enumerate(spans)
    ]
    data = {"text": text}
    if doc_id is not None:
        data["doc_id"] = doc_id
    if split is not None:
        data["split"] = split
    if annotations is None:
        annotations = [
            {
                "id": 1,
                "completed_by": 1,
                "result": result,
                "was_cancelled": False,
                "ground_truth": False,
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
                **annotation,
            }
        ]
    return {"id": task_id, "data": data, "annotations": annotations, "predictions": []}


ARCHIVE_SENTENCES = [
    "South Korea's ambassador Yeo Seung-Bae met Malaysia's Defence Ministry on Thursday.",
    "Hanwha sold K9 howitzers to Poland for US$2.{n} billion, the ministry in Warsaw said.",
    "NATO ministers met in Brussels; Ankara and Athens signed an accord on {n} March.",
]


def write_archive(path: Path, n: int) -> list[tuple[str, str]]:
    """``n`` JSONL articles of one to three sentences, ids ``doc-0`` ... ``doc-(n-1)``."""
    documents = []
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            text = " ".join(ARCHIVE_SENTENCES[j].format(n=i) for j in range(i % 3 + 1))
            documents.append((f"doc-{i}", text))
            handle.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")
    return documents


def tiny_overrides(encoder_dir, export_path, root: Path, **changes) -> list[str]:
    """``--set`` overrides that train the tiny encoder on the fixture export under ``root``.

    ``changes`` replace or add keys, e.g. ``training__epochs=4`` for ``training.epochs=4``.
    """
    settings = {
        "data.source": export_path,
        "data.dataset_dir": root / "dataset",
        "model.name": encoder_dir,
        "model.case_markers": "true",
        "model.max_length": 64,
        "model.stride": 16,
        "training.output_dir": root / "model",
        "training.epochs": 2,
        "training.batch_size": 8,
        "training.progress": "false",
        "training.bf16": "false",
    }
    settings.update({key.replace("__", "."): value for key, value in changes.items()})
    return [f"{key}={value}" for key, value in settings.items()]


@pytest.fixture(scope="session")
def tiny_export_path() -> Path:
    return FIXTURES / "tiny_export.json"


@pytest.fixture(scope="session")
def tiny_tasks(tiny_export_path) -> list[dict]:
    return json.loads(tiny_export_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tiny_tasks) -> Path:
    """A random-weight 2-layer BERT whose WordPiece vocabulary is trained on the fixture texts."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-encoder")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "^"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials)
    tokenizer.train_from_iterator([t["data"]["text"] for t in tiny_tasks], trainer)
    from tokenizers.processors import TemplateProcessing

    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    fast.save_pretrained(directory)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_tagger(tiny_encoder_dir):
    """A Tagger over the tiny encoder with a fresh (random) classification head."""
    import torch

    from training.inference.tagger import Tagger
    from training.modeling.encoder import build_model, load_tokenizer
    from training.schema import BIO_TAGS

    torch.manual_seed(0)
    model = build_model(str(tiny_encoder_dir), BIO_TAGS)
    tokenizer = load_tokenizer(str(tiny_encoder_dir), True)
    return Tagger(model, tokenizer, max_length=32, stride=8, batch_size=4)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tagger) -> Path:
    """The tiny tagger saved as a model directory (what ``Tagger.load`` and ``serve`` read)."""
    directory = tmp_path_factory.mktemp("tiny-model")
    tiny_tagger.model.save_pretrained(directory)
    tiny_tagger.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server (``.labelstudio/venv``, ``make labelstudio``) for the session.

    Free port, temporary data dir, stopped by its PID at the end. A missing install is an
    error, never a skip: ``make test`` installs the server first.
    """
    import socket

    from training.labelstudio import server as labelstudio_server
    from training.labelstudio.client import LabelStudioConnection, RetryPolicy

    data_dir = tmp_path_factory.mktemp("label-studio-data")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    said: list[str] = []
    state = labelstudio_server.start(port=port, data_dir=data_dir, say=said.append)
    token = labelstudio_server.local_credentials(data_dir).token
    connection = LabelStudioConnection(state.url, token, RetryPolicy(attempts=2))
    try:
        yield LabelStudioServer(state, token, connection, said)
    finally:
        labelstudio_server.stop(data_dir)


class LabelStudioServer:
    """What the ``label_studio`` fixture yields: the server's state, its token, a connection."""

    def __init__(self, state, token: str, connection, said: list[str]) -> None:
        self.said = said  # what start() told the user while it waited
        self.state = state
        self.url = state.url
        self.token = token
        self.connection = connection
