"""Errors that trustlab raises for bad input.

Every error a user can cause by what they pass in (a name, a file, a value, a config key) is an
:class:`InputError`: one message naming the problem and the fix. The CLI prints it and exits with
code 2; nothing is written to the results store.
"""

from __future__ import annotations


class TrustlabError(Exception):
    """Base class of trustlab's own errors."""


class InputError(TrustlabError, ValueError):
    """Bad input from the user: the message names the problem and how to fix it."""


class MissingDataError(InputError, FileNotFoundError):
    """A dataset's files are not where they were looked for."""


class CheckpointError(InputError):
    """A file handed in as a checkpoint is not a valid trustlab safetensors checkpoint."""
