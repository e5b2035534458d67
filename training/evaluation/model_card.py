"""The model card (``README.md`` in a model directory), filled from the real run's numbers."""

from __future__ import annotations

from training.config import Config
from training.evaluation.error_analysis import top_confusions
from training.evaluation.scores import (
    MIN_DOCUMENTS_FOR_INTERVALS,
    format_interval,
    format_scores,
    unreliable_intervals_note,
    worst_labels,
)
from training.schema import ALL_SPLITS, HELD_OUT_SPLITS


def _interval(leaf: dict, before: str = " (", after: str = ")") -> str:
    """``95% CI a-b`` between ``before`` and ``after`` when the score has a bootstrap interval."""
    interval = format_interval(leaf, digits=2)
    return f"{before}95% CI {interval}{after}" if interval else ""


def _held_out_section(name: str, scores: dict) -> str:
    micro = scores["strict"]["micro"]
    return f"""
## Scores on the held-out `{name}` split

Articles written from real published reports, never used for training or model selection:
strict micro F1 **{micro["f1"]:.3f}**{_interval(micro)} over {scores["documents"]} documents.

```
{format_scores(scores)}
```
"""


def render_model_card(
    config: Config,
    metrics: dict,
    label_counts: dict[str, dict[str, int]],
    data_sha256: str,
) -> str:
    """Markdown: labels and counts, data and its hash, config, test scores, weaknesses, usage."""
    labels = sorted({label for counts in label_counts.values() for label in counts})
    splits = [split for split in ALL_SPLITS if split in label_counts]
    count_rows = "\n".join(
        f"| {label} | " + " | ".join(str(label_counts[split].get(label, 0)) for split in splits) + " |"
        for label in labels
    )
    test = metrics["test"]
    final_split = metrics.get("splits_used", {}).get("final_scores", "test")
    caveats = ""
    if final_split != "test":
        caveats += f"\nThe project has no test documents: these scores come from the {final_split} split."
    if test["documents"] < MIN_DOCUMENTS_FOR_INTERVALS:
        caveats += f"\n**{unreliable_intervals_note(test['documents'])}.**"
    held_out = "".join(_held_out_section(name, metrics[name]) for name in HELD_OUT_SPLITS if name in metrics)
    micro = test["strict"]["micro"]
    weak = ", ".join(
        f"{label} (F1 {f1:.2f}{_interval(test['strict']['per_label'][label], ', ', '')})"
        for label, f1 in worst_labels(test)
    )
    confusions = "; ".join(
        f"{gold} tagged as {predicted} {n} times"
        for gold, predicted, n in top_confusions(test.get("confusion", {}))
    )
    errors = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in test.get("errors", {}).items())
    return f"""---
library_name: transformers
pipeline_tag: token-classification
tags: [ner, token-classification, diplomacy, defence]
---

# {config.name}: entity tagger for diplomacy and defence-industry news

Fine-tuned from `{config.model.name}` by `python -m training train` on `{config.data.source}`
(sha256 `{data_sha256}`).

## Scores on the {final_split} split

Entity-level, seqeval strict IOB2 (P/R/F1) and default mode (F1 def), micro over
{test["documents"]} documents: **strict micro F1 {micro["f1"]:.3f}**{_interval(micro)}.
Intervals are 95% bootstrap intervals over the test documents.{caveats}

```
{format_scores(test)}
```

Known weaknesses (lowest F1 on test, labels the test documents contain): {weak or "none"}.
Most frequent type confusions (same boundaries, other label): {confusions or "none"}.
Errors on test (exact character spans): {errors or "not counted"}.
{held_out}
## Labels and their counts (entities per split)

| label | {" | ".join(splits)} |
|---|{"---|" * len(splits)}
{count_rows}

## How to load

```python
from training import Tagger
tagger = Tagger.load("{config.training.output_dir}")
tagger("South Korea's ambassador Yeo Seung-Bae met officials in Kuala Lumpur.")
```

With plain `transformers` (no project code):

```python
from transformers import pipeline
ner = pipeline("token-classification", model="{config.training.output_dir}", aggregation_strategy="first")
```

`Tagger` handles articles of any length (overlapping windows of {config.model.max_length}
tokens, stride {config.model.stride}); a plain pipeline truncates unless given `stride`.

## Training configuration

```yaml
{config.to_yaml().rstrip()}
```
"""
