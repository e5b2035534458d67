"""User-facing errors: one family, each message says what happened, where, and how to fix it."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class of every error the CLI reports as one line (``--verbose`` shows the traceback)."""


class DataError(TrainingError):
    """Bad input data: an export, a task, a span, an article file. The message names it."""


class ConfigError(TrainingError):
    """An invalid configuration file or override. The message names the key."""


class ModelError(TrainingError):
    """A model that cannot be resolved, loaded or does not fit the data."""


class LabelStudioError(TrainingError):
    """A Label Studio server that cannot be started, reached or used; the message says what to fix."""
