"""Errors that trustlab raises for bad input.

Every error a user can cause by what they pass in (a name, a file, a value, a config key) is an
:class:`InputError`: one message naming the problem and the fix. The CLI prints it and exits with
code 2; nothing is written to the results store.
"""

from __future__ import annotations


class TrustlabError(Exception):
    """Base class of trustlab's own errors.

    Catch it to handle every error trustlab raises on purpose; it holds only its message.

    Example:
        >>> issubclass(InputError, TrustlabError)
        True
    """


class InputError(TrustlabError, ValueError):
    """Bad input from the user: the message names the problem and how to fix it.

    Also a :class:`ValueError`. The CLI prints the message and exits with code 2; nothing is written
    to the results store.

    Example:
        >>> str(InputError("unknown model 'resnet21'; did you mean 'resnet20'?"))
        "unknown model 'resnet21'; did you mean 'resnet20'?"
    """


class MissingDataError(InputError, FileNotFoundError):
    """A dataset's files are not where they were looked for.

    An :class:`InputError` and a :class:`FileNotFoundError`; the message says where trustlab looked
    and how to get the files (e.g. ``download=True``).

    Example:
        >>> isinstance(MissingDataError("no CIFAR-10 files in ./data"), FileNotFoundError)
        True
    """


class CheckpointError(InputError):
    """A file handed in as a checkpoint is not a valid trustlab safetensors checkpoint.

    An :class:`InputError`; also raised when a resumed run's settings do not match its checkpoint.

    Example:
        >>> isinstance(CheckpointError("not a trustlab checkpoint"), InputError)
        True
    """
