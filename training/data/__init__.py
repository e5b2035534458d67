"""Annotated data: the bundled corpus, Label Studio exports, checks, augmentation, the dataset.

- ``corpus``: article source files with inline markup, and their Label Studio export;
- ``export``: a Label Studio JSON export -> documents (annotation choice, span checks, offsets);
- ``checks``: span hygiene, consistency and near-duplicates (``validate-data``, ``corpus check``);
- ``augment``: training-split augmentation (names, typography, capitalisation);
- ``dataset``: documents -> words -> BIO tags, splits, a ``datasets.DatasetDict``.

Files only: a Label Studio *server* is ``training.labelstudio``'s, which pulls a project into a
snapshot file before anything here reads it.
"""
