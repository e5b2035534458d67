"""Tagger output -> Label Studio predictions (pre-annotations): results, scores, model version.

Shared by ``push predictions`` (imported in bulk) and the ML backend (``python -m training
serve``, asked by Label Studio as an annotator opens a task). A prediction is
``{"model_version", "score", "result"}``: one ``labels`` result per entity with its own
``score``, and a task ``score``, the model's confidence in the whole text (low = uncertain,
annotate first). Offsets are code points (Python indices): what Label Studio 1.23's frontend
reads and writes (its selection code converts "for external usage"); UTF-16 code units are
drawn shifted after every emoji (tests/test_browser.py shows both in a real browser).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.errors import LabelStudioError, ModelError
from training.files import sha256_of_files
from training.inference import Entity, Tagger
from training.schema import FROM_NAME, TEXT_FIELD, TO_NAME


@dataclass(frozen=True)
class LabelingNames:
    """Where predictions go: the ``<Labels>`` name, the ``<Text>`` name and its data field."""

    from_name: str = FROM_NAME
    to_name: str = TO_NAME
    text_field: str = TEXT_FIELD


def labeling_names(label_config: str | None) -> LabelingNames:
    """The names a project's labeling config uses (the schema's defaults when there is none)."""
    if not label_config:
        return LabelingNames()
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as exc:
        raise LabelStudioError(f"the project's labeling config is not valid XML: {exc}") from None
    texts = {
        element.get("name"): element.get("value", "")
        for element in root.iter()
        if element.tag in ("Text", "HyperText")
    }
    for element in root.iter("Labels"):
        to_name = element.get("toName")
        value = texts.get(to_name)
        if element.get("name") and value and value.startswith("$"):
            return LabelingNames(element.get("name"), to_name, value[1:])
    raise LabelStudioError(
        "the project's labeling config has no <Labels> over a <Text>; create the project with"
        " `python -m training push project` (its config comes from training.schema)"
    )


def model_version(model_dir: str | Path) -> str:
    """``<model directory name>-<12 hex digits of the weights' sha256>``: changes when the weights do."""
    model_dir = Path(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise ModelError(f"{model_dir}: no safetensors weights to name a model version after")
    return f"{model_dir.resolve().name}-{sha256_of_files(weights)[:12]}"


def prediction_result(text: str, entities: Sequence[Entity], names: LabelingNames) -> list[dict]:
    """Label Studio ``labels`` results for ``entities`` of ``text``, each with its score."""
    return [
        {
            "id": f"p{n}",
            "from_name": names.from_name,
            "to_name": names.to_name,
            "type": "labels",
            "value": {
                "start": entity.start,
                "end": entity.end,
                "text": entity.text,
                "labels": [entity.label],
            },
            "score": entity.score,
        }
        for n, entity in enumerate(entities)
    ]


def predict_texts(tagger: Tagger, texts: Sequence[str], names: LabelingNames, version: str) -> list[dict]:
    """One prediction per text: ``{"model_version", "score", "result"}``."""
    return [
        {"model_version": version, "score": confidence, "result": prediction_result(text, entities, names)}
        for text, (entities, confidence) in zip(texts, tagger.tag_with_confidence(list(texts)))
    ]


def task_text(task: dict, names: LabelingNames) -> str:
    """The text a task holds in the labeling config's data field; a clear error when it has none."""
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    text = data.get(names.text_field)
    if not isinstance(text, str):
        raise LabelStudioError(
            f"task {task.get('id')}: data has no string {names.text_field!r} field (fields: {sorted(data)})"
        )
    return text
