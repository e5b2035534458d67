"""Training-split augmentation: other names, other typography, other capitalisation.

The bundled corpus is written in one house style and its people are invented; real news
names real people, uses curly quotes, em dashes and "U.S.", and puts headlines in title case.
Each augmented copy of a training document changes some of that, with every entity span
moved along with its text (``apply_edits``). Seeded; used for the training split only.

    data:
      augment:
        copies: 1            # augmented copies per training document (0: off)
        keep_original: true  # false: the copy replaces the original (same training cost)
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from training.config import AugmentConfig
from training.text import Span, widen_to_abbreviations

# Latin-script locales: the encoders here read Latin script best, and real news
# in English transliterates the rest.
FAKER_LOCALES = (
    "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pl_PL", "nl_NL", "tr_TR", "id_ID",
    "pt_BR", "sv_SE", "cs_CZ", "ro_RO",
)  # fmt: skip

# Typography pairs: (house style, real-news variant); either direction may be applied.
ABBREVIATED_NAMES = {"US": "U.S.", "UK": "U.K.", "UN": "U.N.", "EU": "E.U."}
HONORIFICS = ("Mr", "Mr.", "Ms", "Ms.", "Mrs", "Dr", "Dr.", "Sheikh", "Datuk")
SMALL_WORDS = frozenset(
    ("a", "an", "and", "as", "at", "but", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with")
)


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` with ``replacement``."""

    start: int
    end: int
    replacement: str


def apply_edits(text: str, spans: Sequence[Span], edits: Sequence[Edit]) -> tuple[str, list[Span]]:
    """``text`` with ``edits`` applied and ``spans`` moved to the same characters.

    An edit must lie inside a span, cover it exactly, or lie outside every span; an edit that
    straddles a span boundary, or overlaps an earlier edit, is skipped, so spans always stay
    aligned.
    """
    accepted: list[Edit] = []
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if edit.end <= edit.start or (accepted and edit.start < accepted[-1].end):
            continue
        if any(edit.start < s.start < edit.end or edit.start < s.end < edit.end for s in spans):
            continue  # a span boundary inside the edit: it would no longer be a boundary
        accepted.append(edit)
    pieces, cursor = [], 0
    for edit in accepted:
        pieces += [text[cursor : edit.start], edit.replacement]
        cursor = edit.end
    pieces.append(text[cursor:])
    return "".join(pieces), [
        Span(_moved(span.start, accepted), _moved(span.end, accepted), span.label) for span in spans
    ]


def _moved(position: int, edits: Sequence[Edit]) -> int:
    """Where a span boundary at ``position`` lands: edits that end at or before it shift it."""
    return position + sum(len(e.replacement) - (e.end - e.start) for e in edits if e.end <= position)


class Augmenter:
    """Seeded augmented copies of documents (text and spans)."""

    def __init__(self, options: AugmentConfig) -> None:
        from faker import Faker

        self.options = options
        self.rng = random.Random(options.seed)
        self.faker = Faker(list(FAKER_LOCALES))
        self.faker.seed_instance(options.seed)

    def __call__(self, text: str, spans: Sequence[Span]) -> tuple[str, list[Span]]:
        """One augmented copy of a document."""
        o = self.options
        if o.mentions > 0:
            text, spans = apply_edits(text, spans, self._mention_edits(text, spans))
        if o.honorifics > 0:
            text, spans = apply_edits(text, spans, self._honorific_edits(text, spans))
        if self.rng.random() < o.typography:
            text, spans = apply_edits(text, spans, self._typography_edits(text))
        if self.rng.random() < o.case:
            text, spans = apply_edits(text, spans, self._case_edits(text))
        # A new name ending in an abbreviation before a full stop ("May Ltd.") takes the stop.
        spans, _ = widen_to_abbreviations(text, spans)
        return text, spans

    # -- mentions --------------------------------------------------------------------------

    def _mention_edits(self, text: str, spans: Sequence[Span]) -> list[Edit]:
        """PERSON and COMPANY mentions replaced by generated names, consistently in a document:
        a replaced full name's surname replaces the surname-only mentions too."""
        people: dict[str, str] = {}
        surnames: dict[str, str] = {}
        companies: dict[str, str] = {}
        for span in sorted(spans, key=lambda s: s.end - s.start, reverse=True):
            surface = text[span.start : span.end]
            if span.label == "PERSON" and " " in surface and surface not in people:
                if self.rng.random() < self.options.mentions:
                    first, last = self.faker.first_name(), self.faker.last_name()
                    people[surface] = f"{first} {last}"
                    surnames[surface.split()[-1]] = last
            elif (
                span.label == "COMPANY"
                and surface not in companies
                and not surface.isupper()  # acronyms (KAI) stay: a generated name would not fit
                and self.rng.random() < self.options.mentions
            ):
                # Some locales end names with a stop ("Sp. z o.o."): spans end on a letter.
                companies[surface] = self.faker.company().rstrip(".")
        edits = []
        for span in spans:
            surface = text[span.start : span.end]
            replacement = None
            if span.label == "PERSON":
                replacement = people.get(surface) or surnames.get(surface)
            elif span.label == "COMPANY":
                replacement = companies.get(surface)
            if replacement:
                edits.append(Edit(span.start, span.end, replacement))
        return edits

    def _honorific_edits(self, text: str, spans: Sequence[Span]) -> list[Edit]:
        """An honorific before some surname-only PERSON mentions ("Mr Dalhatu"), outside the span
        as the guidelines want (rule 12)."""
        edits = []
        for span in spans:
            surface = text[span.start : span.end]
            if (
                span.label == "PERSON"
                and " " not in surface
                and span.start > 0
                and text[span.start - 1] == " "
                and self.rng.random() < self.options.honorifics
            ):
                title = self.rng.choice(HONORIFICS)
                edits.append(Edit(span.start - 1, span.start, f" {title} "))
        return edits

    # -- typography ------------------------------------------------------------------------

    def _typography_edits(self, text: str) -> list[Edit]:
        """Straight <-> curly quotes, ``--`` <-> em dash, US <-> U.S. (one direction per copy)."""
        edits = []
        to_real = self.rng.random() < 0.75  # the corpus is in house style: mostly towards real news
        if to_real:
            opening = True
            for m in re.finditer(r'"', text):
                edits.append(Edit(m.start(), m.end(), "“" if opening else "”"))
                opening = not opening
            for m in re.finditer(r"(?<=\w)'(?=\w)", text):
                edits.append(Edit(m.start(), m.end(), "’"))
            for m in re.finditer(r" -- ", text):
                edits.append(Edit(m.start(), m.end(), " — " if self.rng.random() < 0.5 else "—"))
            for short, dotted in ABBREVIATED_NAMES.items():
                for m in re.finditer(rf"\b{short}\b(?![$\-])", text):
                    edits.append(Edit(m.start(), m.end(), dotted))
        else:
            for m in re.finditer(r"[“”]", text):
                edits.append(Edit(m.start(), m.end(), '"'))
            for m in re.finditer(r"’", text):
                edits.append(Edit(m.start(), m.end(), "'"))
            for m in re.finditer(r"\s?—\s?", text):
                edits.append(Edit(m.start(), m.end(), " -- "))
            for short, dotted in ABBREVIATED_NAMES.items():
                for m in re.finditer(re.escape(dotted), text):
                    edits.append(Edit(m.start(), m.end(), short))
        return edits

    # -- capitalisation --------------------------------------------------------------------

    def _case_edits(self, text: str) -> list[Edit]:
        """Headline case for the first sentence, or an upper-case dateline."""
        first_line = text.split("\n", 1)[0]
        dateline = re.match(r"[^\n:,]{2,40}?(?=,|:| --| —)", first_line)
        if dateline and self.rng.random() < 0.5:
            words = re.finditer(r"\w+", dateline.group())
            return [Edit(m.start(), m.end(), m.group().upper()) for m in words]
        sentence = re.match(r"[^\n.!?]+", text)
        if not sentence:
            return []
        edits = []
        for m in re.finditer(r"[^\W\d_][\w’'-]*", sentence.group()):
            word = m.group()
            if word.lower() not in SMALL_WORDS and word[0].islower():
                edits.append(Edit(m.start(), m.end(), word[0].upper() + word[1:]))
        return edits
