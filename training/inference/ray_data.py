"""Tagging archives that outgrow one machine: Ray Data, one Tagger per actor.

    import ray
    from training.inference.ray_data import tag_dataset

    ray.init()  # joins the cluster of the machine it runs on (``ray start --head`` / ``--address``)
    articles = ray.data.read_json("s3://bucket/articles/")  # JSONL with "id" and "text"
    tag_dataset(articles, "/shared/models/default", concurrency=16).write_json("s3://bucket/tags/")

Each output row is what ``python -m training predict`` writes for the document:
``{"id", "entities": [{"label", "start", "end", "text", "score"}]}``. Ray (``pip install -e
'.[ray]'``) is imported only by ``tag_dataset``; ``RayTagger`` is a plain class.
"""

from __future__ import annotations

from training.errors import DataError
from training.inference.archive import TaggerSpec, tag_records


class RayTagger:
    """The callable class ``Dataset.map_batches`` runs: one Tagger per actor, loaded once."""

    def __init__(self, model_dir: str, options: dict | None = None, text_field: str = "text") -> None:
        self.tagger = TaggerSpec(str(model_dir), dict(options or {})).load()
        self.text_field = text_field

    def __call__(self, batch: dict) -> dict:
        """A batch of ``id`` and text columns -> ``id`` and ``entities`` columns."""
        ids = [str(doc_id) for doc_id in batch["id"]]
        records = tag_records(self.tagger, ids, [str(text) for text in batch[self.text_field]])
        return {"id": ids, "entities": [record["entities"] for record in records]}


def tag_dataset(
    dataset,
    model_dir: str,
    *,
    options: dict | None = None,
    text_field: str = "text",
    batch_size: int = 64,
    concurrency: int = 1,
    cpus_per_actor: float = 1,
):
    """``dataset`` (a ``ray.data.Dataset`` with ``id`` and ``text_field`` columns) tagged lazily.

    ``concurrency`` actors, each with ``cpus_per_actor`` CPUs and a Tagger loaded with
    ``options`` (``Tagger.load`` keywords; ``threads`` defaults to ``cpus_per_actor``, at least
    1). Leave CPUs for reading: actors holding every CPU of a cluster starve the read tasks
    that feed them (on 2 CPUs: ``concurrency=2, cpus_per_actor=0.5``).
    ``model_dir`` must be readable at the same path on every node (a shared or synced folder).
    """
    columns = dataset.columns()
    missing = [name for name in ("id", text_field) if name not in columns]
    if missing:
        raise DataError(
            f"the Ray dataset has no {' or '.join(map(repr, missing))} column (columns: {columns});"
            " every row needs a unique id and its text"
        )
    options = {"threads": max(1, round(cpus_per_actor)), **(options or {})}
    return dataset.select_columns(["id", text_field]).map_batches(
        RayTagger,
        fn_constructor_kwargs={"model_dir": str(model_dir), "options": options, "text_field": text_field},
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=cpus_per_actor,
        batch_format="numpy",
    )
