"""Words -> subword windows the model reads, and the labels aligned to them.

Articles longer than the model's window are cut into overlapping windows (``stride`` tokens
shared), so no word is dropped. Each word is *owned* by the one window where it sits farthest
from an edge: training labels every window, evaluation and inference read each word's
prediction from its owning window only, so every word is scored exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

IGNORE = -100


@dataclass
class Windows:
    """Model inputs for a batch of documents, with the bookkeeping to map predictions back."""

    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    doc_index: list[int] = field(default_factory=list)
    # Per window: (token position, word index) of the words this window owns.
    owned: list[list[tuple[int, int]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def as_columns(self) -> dict[str, list]:
        """Columns for a ``datasets.Dataset`` fed to the Trainer."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": [[1] * len(ids) for ids in self.input_ids],
            "labels": self.labels,
            "length": self.lengths(),
        }


def _continuation_tag(tag_id: int, id2label: dict[int, str], label2id: dict[str, int]) -> int:
    tag = id2label[tag_id]
    return label2id["I-" + tag[2:]] if tag.startswith("B-") else tag_id


def encode_documents(
    tokenizer,
    words: Sequence[Sequence[str]],
    tags: Sequence[Sequence[int]] | None = None,
    *,
    max_length: int,
    stride: int,
    label_all_subwords: bool = False,
    label_owned_only: bool = False,
    id2label: dict[int, str] | None = None,
) -> Windows:
    """Tokenize pre-split documents into overlapping windows (tokenized once, in one batch).

    With ``tags`` (BIO ids per word) the windows carry labels: the leading subword of each word
    gets its tag, the other subwords ``-100`` (or the I- tag with ``label_all_subwords``). With
    ``label_owned_only`` a word is labelled only in the window that owns it (for evaluation).
    """
    encoding = tokenizer(
        [list(w) for w in words],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
    )
    windows = Windows()
    mapping = encoding["overflow_to_sample_mapping"]
    # First pass: where each word leads in each window, and how central that position is.
    best: dict[tuple[int, int], tuple[int, int, int]] = {}  # (doc, word) -> (centrality, window, pos)
    leads_per_window: list[list[tuple[int, int]]] = []
    for b in range(len(encoding["input_ids"])):
        word_ids = encoding.word_ids(b)
        content = [p for p, w in enumerate(word_ids) if w is not None]
        first, last = (content[0], content[-1]) if content else (0, -1)
        leads = []
        previous = None
        for p, w in enumerate(word_ids):
            if w is not None and w != previous:
                leads.append((p, w))
                centrality = min(p - first, last - p)
                key = (mapping[b], w)
                if key not in best or centrality > best[key][0]:
                    best[key] = (centrality, b, p)
            previous = w
        leads_per_window.append(leads)
    label2id = {v: k for k, v in (id2label or {}).items()}
    for b, leads in enumerate(leads_per_window):
        doc = mapping[b]
        ids = encoding["input_ids"][b]
        owned = [(p, w) for p, w in leads if best[(doc, w)][1:] == (b, p)]
        windows.input_ids.append(ids)
        windows.doc_index.append(doc)
        windows.owned.append(owned)
        if tags is None:
            continue
        labels = [IGNORE] * len(ids)
        labelled = owned if label_owned_only else leads
        for p, w in labelled:
            labels[p] = tags[doc][w]
        if label_all_subwords and not label_owned_only:
            word_ids = encoding.word_ids(b)
            lead_positions = {p for p, _ in leads}
            for p, w in enumerate(word_ids):
                if w is not None and p not in lead_positions:
                    labels[p] = _continuation_tag(tags[doc][w], id2label, label2id)
        windows.labels.append(labels)
    return windows


def owned_predictions(windows: Windows, window_scores: Sequence, n_words: Sequence[int]) -> list[list]:
    """Per document, per word, the row of ``window_scores[window][position]`` of its owner.

    Words that produced no subword (e.g. characters the tokenizer deletes) get ``None``.
    """
    per_doc: list[list] = [[None] * n for n in n_words]
    for b, owned in enumerate(windows.owned):
        doc = windows.doc_index[b]
        scores = window_scores[b]
        for position, word in owned:
            per_doc[doc][word] = scores[position]
    return per_doc


def token_counts(tokenizer, words: Sequence[Sequence[str]]) -> list[int]:
    """Subword tokens of each pre-split document, special tokens included (no truncation)."""
    if not words:
        return []
    encoding = tokenizer([list(w) for w in words], is_split_into_words=True, verbose=False)
    return [len(ids) for ids in encoding["input_ids"]]


def encode_sized(
    tokenizer, words: Sequence[Sequence[str]], *, max_length: int, stride: int, single_window: int
) -> Windows:
    """Windows for inference, sized to the documents: a document of at most ``single_window``
    tokens is read in one window, a longer one in overlapping ``max_length`` windows.

    A short article in one window reads fewer tokens than two overlapping training-size
    windows (and no word sits near a window edge). ``single_window <= max_length``: plain
    ``encode_documents``.
    """
    if single_window <= max_length:
        return encode_documents(tokenizer, words, max_length=max_length, stride=stride)
    counts = token_counts(tokenizer, words)
    merged = Windows()
    for fits in (True, False):
        group = [i for i, n in enumerate(counts) if (n <= single_window) == fits]
        if not group:
            continue
        length = single_window if fits else max_length
        part = encode_documents(tokenizer, [words[i] for i in group], max_length=length, stride=stride)
        merged.input_ids += part.input_ids
        merged.doc_index += [group[d] for d in part.doc_index]
        merged.owned += part.owned
    return merged
