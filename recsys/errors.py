"""Exceptions raised by recsys. Each names the bad value and says what to do.

The CLI prints ``str(error)`` on one line and exits 1 for any :class:`RecsysError`.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base class of every error recsys raises on purpose."""


class ConfigError(RecsysError):
    """A setting is unknown, malformed or out of range."""


class DataError(RecsysError):
    """Input data is missing, unreadable or does not have the expected layout."""


class IngestError(DataError):
    """The raw dataset could not be fetched or does not match its recorded checksum."""


class ValidationFailed(RecsysError):
    """A great-expectations suite failed; ``report`` holds the readable summary."""

    def __init__(self, suite: str, report: str, docs: str | None = None) -> None:
        where = f"\nData Docs: {docs}" if docs else ""
        super().__init__(f"validation suite '{suite}' failed:\n{report}{where}")
        self.suite = suite
        self.report = report
        self.docs = docs  # the failing run's great-expectations Data Docs page (HTML), if written


class ModelNotFoundError(RecsysError):
    """No registered model version matches the requested version or alias."""


class StoreError(RecsysError):
    """The online store (Redis through Feast) is unreachable or holds unexpected data."""


class UnknownUserError(RecsysError):
    """The user has no recommendation list in the online store."""


class UnknownMovieError(RecsysError):
    """The movie has no similar-movies list in the online store."""


class InvalidRequestError(RecsysError):
    """A lookup or serving request is malformed (bad user id, k out of range...)."""


class LockedError(RecsysError):
    """Another run holds a lock this one needs (recsys.ops.locks); the message names the holder."""
