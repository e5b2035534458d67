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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from label_studio_sdk.label_interface import LabelInterface

from training.errors import LabelStudioError, ModelError
from training.files import sha256_of_files
from training.schema import FROM_NAME, TEXT_FIELD, TO_NAME

if TYPE_CHECKING:  # type hints only: this module works on any tagger's output, without torch
    from training.inference.tagger import Entity, Tagger


@dataclass(frozen=True)
class LabelingNames:
    """Where predictions go: the ``<Labels>`` name, the ``<Text>`` name and its data field."""

    from_name: str = FROM_NAME
    to_name: str = TO_NAME
    text_field: str = TEXT_FIELD


def labeling_names(label_config: str | None) -> LabelingNames:
    """The names a project's labeling config uses (the schema's defaults when there is none).

    Read with the SDK's ``LabelInterface``: the first ``<Labels>`` whose ``toName`` is a
    ``<Text>`` (or ``<HyperText>``) reading a ``$field`` of the task data.
    """
    if not label_config:
        return LabelingNames()
    try:
        interface = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises its own XML syntax errors (lxml's, rewrapped)
        raise LabelStudioError(f"the project's labeling config is not valid XML: {exc}") from None
    objects = {tag.name: tag for tag in interface.objects}
    for control in interface.controls:
        if control.tag != "Labels":
            continue
        for to_name in control.to_name or []:
            target = objects.get(to_name)
            if target is not None and target.tag in ("Text", "HyperText") and target.value_is_variable:
                return LabelingNames(control.name, to_name, target.value_name)
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


def as_predictions(
    texts: Sequence[str],
    tagged: Sequence[tuple[Sequence[Entity], float]],
    names: LabelingNames,
    version: str,
) -> list[dict]:
    """One prediction per text from ``Tagger.tag_with_confidence``'s output for ``texts``."""
    return [
        {"model_version": version, "score": confidence, "result": prediction_result(text, entities, names)}
        for text, (entities, confidence) in zip(texts, tagged)
    ]


def predict_texts(tagger: Tagger, texts: Sequence[str], names: LabelingNames, version: str) -> list[dict]:
    """One prediction per text: ``{"model_version", "score", "result"}``."""
    return as_predictions(texts, tagger.tag_with_confidence(list(texts)), names, version)
