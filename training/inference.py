"""``Tagger``: load a trained model and tag articles of any length.

    from training import Tagger
    tagger = Tagger.load("models/default")
    tagger("South Korea's ambassador Yeo Seung-Bae met ...")

Texts are split into words once, tokenized once into overlapping windows, batched across
documents in length order with dynamic padding, and merged back per word (each word read from
the window where it is most central). Entities carry character offsets into the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

from training.alignment import Windows, encode_documents, owned_predictions
from training.dataset import tags_to_word_ranges, tokenize_words
from training.schema import OUTSIDE

DEFAULT_MAX_LENGTH = 256
DEFAULT_STRIDE = 64


@dataclass(frozen=True)
class Entity:
    """One predicted entity: ``text == input[start:end]``; ``score`` is its mean tag probability."""

    label: str
    start: int
    end: int
    text: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


class Tagger:
    """Entity tagger over a token-classification model and its fast tokenizer."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        stride: int = DEFAULT_STRIDE,
        batch_size: int = 16,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.stride = stride
        self.batch_size = batch_size
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}

    @classmethod
    def load(cls, model_dir: str | Path, **kwargs) -> Tagger:
        """A Tagger for a model directory written by ``python -m training train``.

        Window length and stride default to the ones the model was trained with.
        """
        from training.modeling import load_trained

        model, tokenizer = load_trained(model_dir)
        saved = Path(model_dir) / "training_config.yaml"
        if saved.is_file():
            model_section = (yaml.safe_load(saved.read_text()) or {}).get("model", {})
            kwargs.setdefault("max_length", model_section.get("max_length", DEFAULT_MAX_LENGTH))
            kwargs.setdefault("stride", model_section.get("stride", DEFAULT_STRIDE))
        return cls(model, tokenizer, **kwargs)

    @property
    def labels(self) -> list[str]:
        """The model's BIO tags, in id order."""
        return [self.id2label[i] for i in range(len(self.id2label))]

    def encode(self, words: Sequence[Sequence[str]]) -> Windows:
        """The windows of pre-split documents."""
        return encode_documents(self.tokenizer, words, max_length=self.max_length, stride=self.stride)

    @torch.inference_mode()
    def window_probabilities(self, windows: Windows) -> list[torch.Tensor]:
        """Softmax over tags for every token of every window (windows batched by length)."""
        order = sorted(range(len(windows)), key=lambda i: len(windows.input_ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        device = next(self.model.parameters()).device
        results: list[torch.Tensor | None] = [None] * len(windows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(windows.input_ids[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                tokens = windows.input_ids[i]
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            probabilities = logits.float().softmax(-1).cpu()
            for row, i in enumerate(batch):
                results[i] = probabilities[row, : len(windows.input_ids[i])]
        return results

    def predict_words(self, words: Sequence[Sequence[str]]) -> list[list[tuple[str, float]]]:
        """Per document, per word: the predicted BIO tag and its probability."""
        if not words:
            return []
        windows = self.encode(words)
        probabilities = self.window_probabilities(windows)
        per_word = owned_predictions(windows, probabilities, [len(w) for w in words])
        documents = []
        for rows in per_word:
            tagged = []
            for row in rows:
                if row is None:
                    tagged.append((OUTSIDE, 1.0))
                    continue
                best = int(row.argmax())
                tagged.append((self.id2label[best], float(row[best])))
            documents.append(tagged)
        return documents

    def tag(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of each text in ``texts``."""
        split = [tokenize_words(text) for text in texts]
        predictions = self.predict_words([words for words, _ in split])
        results = []
        for text, (_, spans), tagged in zip(texts, split, predictions):
            tags = [tag for tag, _ in tagged]
            entities = []
            for first, last, label in tags_to_word_ranges(tags):
                start, end = spans[first][0], spans[last][1]
                score = sum(p for _, p in tagged[first : last + 1]) / (last - first + 1)
                entities.append(Entity(label, start, end, text[start:end], round(score, 4)))
            results.append(entities)
        return results

    def __call__(self, texts: str | Sequence[str]) -> list[Entity] | list[list[Entity]]:
        """Entities of one text, or a list of entity lists for a batch of texts."""
        if isinstance(texts, str):
            return self.tag([texts])[0]
        return self.tag(list(texts))
