"""Text, the layer everything shares: spans, words, BIO tags, offsets and constrained decoding.

Words come from a deterministic splitter that cuts punctuation, hyphens and possessives, so
entity boundaries fall between words; abbreviations and dotted initialisms (``U.S.``,
``Jr.``, ``Co.``) stay whole. Decoding turns per-word tag probabilities into a valid BIO
sequence (no ``I-`` that does not continue an entity, no entity across a line break, none
made only of punctuation or symbols). Older Label Studio versions and other tools count
offsets in UTF-16 code units; ``python_index`` reads them.

Nothing here imports torch, ``datasets`` or pydantic.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.schema import OUTSIDE


@dataclass(frozen=True)
class Span:
    """A labelled character span ``text[start:end]``."""

    start: int
    end: int
    label: str


# --- words ---------------------------------------------------------------------------------

# Abbreviations kept whole with their full stop (case-sensitive). An abbreviation that ends
# a sentence keeps the one full stop it shares with the sentence: "arrived in the U.S." ends
# with the word "U.S.", and a span over it includes the stop.
ABBREVIATIONS: tuple[str, ...] = (
    # honorifics, suffixes and ranks
    "Mr", "Mrs", "Ms", "Dr", "Prof", "Messrs", "Jr", "Sr", "St", "Gen", "Lt", "Col", "Maj",
    "Capt", "Cmdr", "Adm", "Sgt", "Cpl", "Brig", "Gov", "Sen", "Rep", "Rev", "Hon",
    # companies
    "Co", "Corp", "Inc", "Ltd", "Bhd", "Plc", "Cos", "Bros",
    # months
    "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
    # other
    "vs", "etc", "approx", "Dept", "Govt", "Mt", "Ft",
)  # fmt: skip
# "No." only before a number ("No. 10"), where it cannot be the word "No" ending a sentence.
WORD_PATTERN = re.compile(
    r"(?:[^\W\d_]\.){2,}"  # dotted initialisms: U.S., U.K., E.U., U.S.A.
    r"|(?<![^\W_])(?:" + "|".join(ABBREVIATIONS) + r")\.(?![^\W_])"
    r"|No\.(?=\s*\d)"
    r"|\d+(?:[.,]\d+)+"  # numbers with separators stay whole: 1,200 / 3.5
    r"|['’][sS](?![^\W_])"  # the possessive 's is a word of its own
    r"|[^\W_]+"  # runs of letters and digits
    r"|\S"  # every other non-space character stands alone
)


def tokenize_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of ``text`` and their character spans."""
    words, spans = [], []
    for match in WORD_PATTERN.finditer(text):
        words.append(match.group())
        spans.append(match.span())
    return words, spans


def is_symbol_word(word: str) -> bool:
    """A word of punctuation, symbols or emoji only (currency signs do not count: "$1.2bn")."""
    return all(unicodedata.category(ch)[0] in "PSZCM" and unicodedata.category(ch) != "Sc" for ch in word)


def line_starts(text: str, word_spans: Sequence[Sequence[int]]) -> list[bool]:
    """Per word: whether a line break separates it from the word before."""
    starts, previous_end = [], 0
    for start, end in word_spans:
        starts.append("\n" in text[previous_end:start] or "\r" in text[previous_end:start])
        previous_end = end
    return starts


# --- offsets: Python string indices <-> the browser's UTF-16 code units ------------------


def python_index(text: str, utf16_index: int) -> int | None:
    """Python string index of a UTF-16 code-unit offset (None if it splits a surrogate pair)."""
    units = 0
    for index, ch in enumerate(text):
        if units == utf16_index:
            return index
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > utf16_index:
            return None
    return len(text) if units == utf16_index else None


# --- spans <-> BIO tags --------------------------------------------------------------------


def spans_to_tags(word_spans: Sequence[Sequence[int]], spans: Sequence[Span]) -> tuple[list[str], list[Span]]:
    """BIO tags for words; also the spans whose boundaries fall inside a word (not tagged)."""
    tags = [OUTSIDE] * len(word_spans)
    starts = {start: i for i, (start, _) in enumerate(word_spans)}
    ends = {end: i for i, (_, end) in enumerate(word_spans)}
    misaligned = []
    for span in spans:
        first, last = starts.get(span.start), ends.get(span.end)
        if first is None or last is None or last < first:
            misaligned.append(span)
            continue
        tags[first] = f"B-{span.label}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{span.label}"
    return tags, misaligned


def widen_to_abbreviations(
    text: str, spans: Sequence[Span], word_spans: Sequence[Sequence[int]] | None = None
) -> tuple[list[Span], list[tuple[Span, Span]]]:
    """Spans that stop just before an abbreviation's full stop ("U.S" of "U.S.") include it.

    Exports annotated before abbreviations became whole words may leave the stop out; such a
    span would otherwise end inside a word. ``word_spans``: the text's words, when the caller
    has split it already. Returns the spans and the ``(old, new)`` changes.
    """
    if word_spans is None:
        word_spans = tokenize_words(text)[1]
    ends = {end for _, end in word_spans}
    out, changed = [], []
    for span in spans:
        if span.end not in ends and span.end + 1 in ends and text[span.end : span.end + 1] == ".":
            wider = Span(span.start, span.end + 1, span.label)
            out.append(wider)
            changed.append((span, wider))
        else:
            out.append(span)
    return out, changed


def tags_to_word_ranges(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(first_word, last_word, label)`` of each entity in a BIO sequence.

    Lenient like seqeval's default mode: an I- tag that does not continue an entity of the
    same label starts a new one (constrained decoding never produces one). These are the
    semantics of ``seqeval``'s ``get_entities`` (a test checks they agree), kept here because
    importing seqeval loads scikit-learn (1.8 s), which ``Tagger`` must not pay for.
    """
    entities: list[tuple[int, int, str]] = []
    current: list | None = None
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and current is not None and current[2] == label and current[1] == i - 1:
            current[1] = i
            continue
        if current is not None:
            entities.append(tuple(current))
            current = None
        if prefix in ("B", "I"):
            current = [i, i, label]
    if current is not None:
        entities.append(tuple(current))
    return entities


def tags_to_spans(word_spans: Sequence[Sequence[int]], tags: Sequence[str]) -> list[Span]:
    """Character spans of the entities in a BIO sequence over words with ``word_spans``."""
    return [
        Span(word_spans[first][0], word_spans[last][1], label)
        for first, last, label in tags_to_word_ranges(tags)
    ]


# --- decoding ------------------------------------------------------------------------------

DECODINGS = ("viterbi", "greedy")


class BioConstraints:
    """Which tag may follow which, for one tag set (``O``, ``B-X``, ``I-X``)."""

    def __init__(self, tags: Sequence[str]) -> None:
        self.tags = list(tags)
        n = len(self.tags)
        prefixes = [t.partition("-")[0] for t in self.tags]
        labels = [t.partition("-")[2] for t in self.tags]
        self.inside = np.array([p == "I" for p in prefixes])
        self.begin = np.array([p == "B" for p in prefixes])
        # continues[i, j]: tag j may follow tag i (I-X only after B-X or I-X).
        self.continues = np.ones((n, n), dtype=bool)
        for j in range(n):
            if self.inside[j]:
                self.continues[:, j] = [labels[i] == labels[j] and prefixes[i] != "O" for i in range(n)]
        # same_inside[i, j]: j is the I- tag of i's entity (what must follow an entity's symbol word).
        self.same_inside = np.zeros((n, n), dtype=bool)
        for i in range(n):
            for j in range(n):
                self.same_inside[i, j] = self.inside[j] and labels[i] == labels[j] and prefixes[i] != "O"


def viterbi(
    log_probs: np.ndarray,
    constraints: BioConstraints,
    *,
    line_start: Sequence[bool] | None = None,
    symbol: Sequence[bool] | None = None,
) -> list[int]:
    """The most probable valid tag sequence for ``log_probs`` (words x tags).

    Valid: ``I-X`` only continues ``B-X``/``I-X``; no ``I-`` on the first word or on a word
    after a line break (``line_start``); an entity neither starts nor ends on a punctuation or
    symbol word (``symbol``), so none consists only of them. The all-``O`` sequence is always
    valid, so a path always exists.
    """
    n_words, n_tags = log_probs.shape
    if n_words == 0:
        return []
    line_start = line_start if line_start is not None else [False] * n_words
    symbol = symbol if symbol is not None else [False] * n_words
    forbidden = -np.inf
    allowed_first = ~constraints.inside & ~(constraints.begin & bool(symbol[0]))
    score = np.where(allowed_first, log_probs[0], forbidden)
    back = np.zeros((n_words, n_tags), dtype=np.int64)
    for w in range(1, n_words):
        transitions = constraints.continues.copy()
        if line_start[w]:
            transitions[:, constraints.inside] = False
        if symbol[w]:
            transitions[:, constraints.begin] = False
        if symbol[w - 1]:
            # An entity that reached a symbol word must go on past it.
            entity_rows = constraints.begin | constraints.inside
            transitions[entity_rows] &= constraints.same_inside[entity_rows]
        candidates = np.where(transitions, score[:, None], forbidden)
        back[w] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_probs[w]
    if symbol[-1]:
        score = np.where(constraints.inside | constraints.begin, forbidden, score)
    best = [int(score.argmax())]
    for w in range(n_words - 1, 0, -1):
        best.append(int(back[w, best[-1]]))
    return best[::-1]


def word_probabilities(rows: Sequence[np.ndarray | None], tags: Sequence[str]) -> np.ndarray:
    """Words x tags probabilities from per-word rows; a word with no row (its characters
    produced no subword) is ``O`` for certain."""
    outside = np.zeros(len(tags), dtype=np.float32)
    outside[list(tags).index(OUTSIDE)] = 1.0
    if not rows:
        return np.empty((0, len(tags)), dtype=np.float32)
    return np.stack([outside if row is None else row for row in rows]).astype(np.float32, copy=False)


def decode(
    probabilities: np.ndarray,
    tags: Sequence[str],
    *,
    decoding: str = "viterbi",
    words: Sequence[str] | None = None,
    line_start: Sequence[bool] | None = None,
    constraints: BioConstraints | None = None,
) -> list[tuple[str, float]]:
    """Per word, the chosen tag and its probability (``probabilities``: words x tags).

    ``greedy`` takes each word's most probable tag (may give invalid ``I-`` starts);
    ``viterbi`` the best valid sequence (see ``viterbi``).
    """
    if decoding not in DECODINGS:
        raise ValueError(f"decoding={decoding!r}: use one of {DECODINGS}")
    if len(probabilities) == 0:
        return []
    if decoding == "greedy":
        chosen = probabilities.argmax(-1).tolist()
    else:
        constraints = constraints or BioConstraints(tags)
        symbol = [is_symbol_word(w) for w in words] if words is not None else None
        with np.errstate(divide="ignore"):
            log_probs = np.log(probabilities)
        chosen = viterbi(log_probs, constraints, line_start=line_start, symbol=symbol)
    picked = probabilities[np.arange(len(chosen)), chosen]
    return [(tags[t], float(p)) for t, p in zip(chosen, picked)]
