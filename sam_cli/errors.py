"""Typed errors raised by the library; the CLI maps each kind to one exit code."""

from __future__ import annotations


class SamError(Exception):
    """Base class. `hint` is an optional second sentence telling the user what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class InputError(SamError):
    """A missing, unreadable or unsupported input file."""


class PromptError(SamError):
    """A malformed prompt, or one outside the image."""


class CheckpointError(SamError):
    """A checkpoint that cannot be loaded or does not fit the model."""


class DownloadError(SamError):
    """A checkpoint download failed (network, HTTP status, size or hash mismatch)."""


class OutputError(SamError):
    """An output path that cannot be written."""
