"""Named-entity recognition for diplomacy and defence-industry news.

The pipeline, one module per stage: ``schema`` -> ``labelstudio`` -> ``dataset`` ->
``alignment`` -> ``train`` -> ``evaluate`` -> ``inference``. Heavy modules load lazily, so
``python -m training corpus check`` and ``validate-data`` run without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Tagger"]

if TYPE_CHECKING:
    from training.inference import Tagger


def __getattr__(name: str) -> Any:
    if name == "Tagger":
        from training.inference import Tagger

        return Tagger
    raise AttributeError(f"module 'training' has no attribute {name!r}")
