"""Model and data must agree on their labels; ``--label-map`` reconciles them when they do not.

A label map renames labels on both sides, gold and predicted, before anything is scored:
``LOC=GPE`` scores a model's LOC as the data's GPE, ``GOV_ORG=ORG`` merges two data labels the
model does not tell apart, ``MISC=O`` drops a label from both sides. After renaming, the model's
labels and the data's must be the same set, otherwise the evaluation stops and lists the
difference: a label only one side knows would silently count as all-missed or all-spurious.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from training.errors import ConfigError, ModelError
from training.schema import OUTSIDE


def parse_label_map(value: str | None) -> dict[str, str]:
    """``LABEL=LABEL[,LABEL=LABEL...]`` or a ``.json``/``.yaml`` file holding such a mapping."""
    if not value:
        return {}
    path = Path(value)
    if path.suffix in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"--label-map: {path}: file not found")
        text = path.read_text(encoding="utf-8")
        try:
            mapping = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"--label-map: {path}: not valid {path.suffix[1:].upper()}: {exc}") from None
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise ConfigError(f"--label-map: {path}: expected a mapping of label names, e.g. {{LOC: GPE}}")
        return dict(mapping)
    mapping = {}
    for item in value.split(","):
        source, sep, target = (part.strip() for part in item.partition("="))
        if not sep or not source or not target:
            raise ConfigError(
                f"--label-map: {item!r} is not LABEL=LABEL (e.g. LOC=GPE, or MISC=O to drop one)"
            )
        mapping[source] = target
    return mapping


def entity_labels(tags: Iterable[str]) -> set[str]:
    """Entity labels of BIO tags (``B-GPE`` -> ``GPE``), ``O`` left out."""
    return {tag.partition("-")[2] for tag in tags if tag != OUTSIDE}


def rename(label: str, label_map: dict[str, str]) -> str:
    """The label after the map; ``O`` when the map drops it."""
    return label_map.get(label, label)


def rename_tags(tags: Sequence[str], label_map: dict[str, str]) -> list[str]:
    """BIO tags with their labels renamed; a dropped label's tags become ``O``."""
    if not label_map:
        return list(tags)
    renamed = []
    for tag in tags:
        prefix, _, label = tag.partition("-")
        target = rename(label, label_map) if tag != OUTSIDE else OUTSIDE
        renamed.append(OUTSIDE if target == OUTSIDE else f"{prefix}-{target}")
    return renamed


def check_labels(
    model_labels: Iterable[str],
    data_labels: Iterable[str],
    label_map: dict[str, str],
    model_name: str = "the model",
) -> None:
    """Raise ``ModelError`` listing the difference unless the (renamed) label sets agree."""
    model_labels, data_labels = set(model_labels), set(data_labels)
    unknown = sorted(set(label_map) - model_labels - data_labels)
    if unknown:
        raise ConfigError(
            f"--label-map names {', '.join(unknown)}, neither a label of {model_name}"
            f" ({', '.join(sorted(model_labels))}) nor of the data ({', '.join(sorted(data_labels))})"
        )
    model_side = {rename(label, label_map) for label in model_labels} - {OUTSIDE}
    data_side = {rename(label, label_map) for label in data_labels} - {OUTSIDE}
    if model_side == data_side:
        return
    parts = []
    if model_side - data_side:
        parts.append(f"only in the model: {', '.join(sorted(model_side - data_side))}")
    if data_side - model_side:
        parts.append(f"only in the data: {', '.join(sorted(data_side - model_side))}")
    raise ModelError(
        f"{model_name}: the model's labels differ from the data's ({'; '.join(parts)}); "
        "map them with --label-map MODEL_LABEL=DATA_LABEL, or LABEL=O to leave one out of the scores"
    )
