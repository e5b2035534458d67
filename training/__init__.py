"""Named-entity recognition for diplomacy and defence-industry news.

The pipeline, one place per stage, each importing only the ones before it:

- ``schema``, ``errors``, ``files``, ``config``: labels, errors, safe writes, the run configuration;
- ``text``: spans, words, BIO tags, offsets, constrained decoding (the layer everything shares);
- ``data``: corpus files, Label Studio exports -> documents, checks, augmentation, the dataset;
- ``modeling``: the encoder, subword windows, hardware;
- ``inference``: ``Tagger``, its ONNX Runtime backend, int8 quantization;
- ``evaluation``: scores with intervals, error analysis, the HTML report, the model card;
- ``labelstudio``: the local server, the client (push, pull), pre-annotations, the ML backend;
- ``train`` and ``cli`` on top.

``from training import Tagger`` loads the tagger only (torch, not ``datasets``, pydantic or
the Label Studio SDK); ``python -m training corpus check`` and ``validate-data`` run without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Tagger"]

if TYPE_CHECKING:
    from training.inference.tagger import Tagger


def __getattr__(name: str) -> Any:
    # Lazy: ``import training`` (e.g. for ``python -m training corpus check``) must not load torch.
    if name == "Tagger":
        from training.inference.tagger import Tagger

        return Tagger
    raise AttributeError(f"module 'training' has no attribute {name!r}")
