"""The label schema: the one source of truth for entity labels, BIO tags and the Label Studio config.

Everything label-related in the project (BIO tag names, ``id2label``/``label2id`` in saved
models, the Label Studio labeling interface, the guidelines' table) is derived from ``LABELS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr


@dataclass(frozen=True)
class Label:
    """One entity label: its name, a one-line definition and the colour Label Studio shows."""

    name: str
    description: str
    color: str


LABELS: tuple[Label, ...] = (
    Label("PERSON", "named people, surname-only mentions too", "#e6194b"),
    Label("ROLE", "titles and ranks of people (title words only)", "#f58231"),
    Label("GPE", "countries, states, cities, geopolitical regions", "#3cb44b"),
    Label("GOV_ORG", "named government bodies: ministries, parliaments, armed forces", "#4363d8"),
    Label("COMPANY", "businesses, manufacturers, shipyards, state-owned firms, funds", "#911eb4"),
    Label("INTL_ORG", "international and regional organisations, alliances", "#42d4f4"),
    Label("ORG", "other organisations: parties, news agencies, think tanks, NGOs", "#f032e6"),
    Label("POLICY", "named policies, strategies, doctrines, initiatives, programmes", "#bfef45"),
    Label("AGREEMENT", "specific agreements, treaties, deals, contracts, MoUs", "#fabed4"),
    Label("EVENT", "named events: summits, exhibitions, elections, exercises", "#469990"),
    Label("EQUIPMENT", "military equipment by model or class name", "#dcbeff"),
    Label("MONEY", "monetary amounts", "#9a6324"),
    Label("DATE", "dates, days, months, years, relative dates", "#800000"),
)

LABEL_NAMES: tuple[str, ...] = tuple(label.name for label in LABELS)

OUTSIDE = "O"
BIO_TAGS: tuple[str, ...] = (OUTSIDE,) + tuple(
    f"{prefix}-{name}" for name in LABEL_NAMES for prefix in ("B", "I")
)
ID2LABEL: dict[int, str] = dict(enumerate(BIO_TAGS))
LABEL2ID: dict[str, int] = {tag: i for i, tag in ID2LABEL.items()}

# Dataset splits: the three the Trainer uses, and held-out ones that are only ever evaluated
# (``realnews``: articles written from real reports, never used for training or model selection).
SPLITS: tuple[str, ...] = ("train", "validation", "test")
HELD_OUT_SPLITS: tuple[str, ...] = ("realnews",)
ALL_SPLITS: tuple[str, ...] = SPLITS + HELD_OUT_SPLITS

# Names used by the generated Label Studio interface (and expected in exports by default).
FROM_NAME = "label"
TO_NAME = "text"
TEXT_FIELD = "text"


def labeling_config_xml(
    from_name: str = FROM_NAME, to_name: str = TO_NAME, text_field: str = TEXT_FIELD
) -> str:
    """The Label Studio labeling interface for the schema: one ``<Labels>`` over one ``<Text>``."""
    label_lines = "\n".join(
        f"    <Label value={quoteattr(label.name)} background={quoteattr(label.color)}"
        f" hint={quoteattr(label.description)}/>"
        for label in LABELS
    )
    return (
        "<View>\n"
        f"  <Labels name={quoteattr(from_name)} toName={quoteattr(to_name)}>\n"
        f"{label_lines}\n"
        "  </Labels>\n"
        f"  <Text name={quoteattr(to_name)} value={quoteattr('$' + text_field)}"
        ' granularity="word"/>\n'
        "</View>\n"
    )
