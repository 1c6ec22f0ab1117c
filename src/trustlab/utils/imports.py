"""Load a user's object (a model class, a defense, a function) named by a short spec string.

Two forms are accepted:

- ``"pkg.module:Name"``: the module is imported with :func:`importlib.import_module`, so it must
  be importable (installed, or on ``PYTHONPATH``);
- ``"path/to/file.py:Name"``: the file is loaded by its path (relative to the current directory,
  or absolute), as a module of a private package of its own (``trustlab_user_<hash>``, whose
  search path is the file's folder) so that two files with the same name never collide and
  ``sys.path`` is never changed. The file imports the modules next to it relatively
  (``from .layers import Block``); an absolute ``import layers`` needs the folder on
  ``PYTHONPATH`` (the user's choice), or the ``pkg.module:Name`` form.

After the colon comes an attribute name, dotted for nested objects (``"nets.py:Zoo.Small"``).
Every failure is an :class:`~trustlab.errors.InputError` with one message that names the spec,
what went wrong (the missing file, the module's import error in one line, the missing name and
the names that do exist) and the fix.

Importing or loading a module runs its code: load only code you trust, or run it in a process of
its own with time and memory limits (as submissions do).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from trustlab.errors import InputError

__all__ = ["load_object"]

_FORMS = "'pkg.module:Name' or 'path/to/file.py:Name'"


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line; a syntax error also names file and line."""
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
        return f"SyntaxError: {exc.msg}{where}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where_raised(exc: BaseException, path: Path) -> str:
    """`` at file.py:LINE`` for the deepest frame of ``exc``'s traceback inside ``path``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f" at {path.name}:{frames[-1].lineno}" if frames else ""


def _split(spec: Any, what: str) -> tuple[str, str]:
    if not isinstance(spec, str) or ":" not in spec:
        raise InputError(
            f"{what} {spec!r} names no object: write it as {_FORMS} (a colon before the name)."
        )
    source, name = (part.strip() for part in spec.rsplit(":", 1))
    if not source or not name or any(not part.isidentifier() for part in name.split(".")):
        raise InputError(
            f"{what} {spec!r} is malformed: write it as {_FORMS}, the name after the colon "
            "being a Python identifier (dotted for a nested one, e.g. 'Outer.Inner')."
        )
    return source, name


def _is_path(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


def _load_file(source: str, spec: str, what: str) -> ModuleType:
    path = Path(source).expanduser()
    if path.suffix != ".py":
        raise InputError(
            f"{what} {spec!r}: {source!r} looks like a path but is not a .py file; pass the "
            f"Python file ('{source}.py:Name'?) or an importable module ('pkg.module:Name')."
        )
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(
            f"{what} {spec!r}: the file {source} {where} (looked in {Path.cwd()} for a relative "
            "path). Check the path."
        )
    path = path.resolve()
    digest = hashlib.sha1(str(path.parent).encode()).hexdigest()[:12]
    package = f"trustlab_user_{digest}"
    if package not in sys.modules:  # the folder as a package: relative imports, no sys.path
        pkg_spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        pkg_spec.submodule_search_locations = [str(path.parent)]
        sys.modules[package] = importlib.util.module_from_spec(pkg_spec)
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    mod_name = f"{package}.{stem}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:  # pragma: no cover (a .py file loads)
        raise InputError(f"{what} {spec!r}: Python cannot load {path} as a module.")
    module = importlib.util.module_from_spec(loader_spec)
    # Registered before it runs, as a normal import does (dataclasses and typing look it up).
    sys.modules[mod_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(mod_name, None)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours to hide
            raise
        raise InputError(
            f"{what} {spec!r}: importing {source} failed{_where_raised(exc, path)} with "
            f"{_one_line(exc)}. Fix the file (run 'python {source}' to see the whole traceback)."
        ) from exc
    return module


def _import(source: str, spec: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (source == missing or source.startswith(missing + ".")):
            local = Path(*source.split(".")).with_suffix(".py")
            hint = (
                f" There is a file {local} here: pass it as '{local}:{spec.rsplit(':', 1)[1]}'."
                if local.is_file()
                else " Install it, add its folder to PYTHONPATH, or pass a file path "
                "('path/to/file.py:Name')."
            )
            raise InputError(
                f"{what} {spec!r}: no module named {missing!r} can be imported.{hint}"
            ) from exc
        raise InputError(
            f"{what} {spec!r}: importing {source} failed with {_one_line(exc)}. Install the "
            "missing package or fix the module."
        ) from exc
    except Exception as exc:
        raise InputError(
            f"{what} {spec!r}: importing {source} failed with {_one_line(exc)}. Fix the module "
            f"(python -c 'import {source}' shows the whole traceback)."
        ) from exc


def _attribute(module: ModuleType, source: str, name: str, spec: str, what: str) -> Any:
    obj: Any = module
    done: list[str] = []
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = ".".join(done) or source
            names = sorted(n for n in dir(obj) if not n.startswith("_"))
            close = difflib.get_close_matches(part, names, n=3)
            if close:
                hint = "did you mean " + ", ".join(repr(n) for n in close) + "?"
            elif names:
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                hint = f"it has {shown}."
            else:
                hint = "it defines no public names."
            raise InputError(
                f"{what} {spec!r}: {owner} has no attribute {part!r}; {hint}"
            ) from None
        except Exception as exc:  # a property or module __getattr__ that raises
            raise InputError(
                f"{what} {spec!r}: reading {'.'.join([*done, part])} failed with {_one_line(exc)}."
            ) from exc
        done.append(part)
    return obj


def load_object(spec: str, *, what: str) -> Any:
    """The object that ``spec`` names: ``"pkg.module:Name"`` or ``"path/to/file.py:Name"``.

    A file is loaded by its path as a module of a private package whose folder is the file's
    (it imports the modules beside it relatively; ``sys.path`` is never changed); a module is
    imported by name. The name after the colon may be dotted (``"nets.py:Zoo.Small"``).
    Loading runs the module's code: only load code you trust.

    Args:
        spec: ``"module:Name"`` or ``"file.py:Name"`` (a relative path is relative to the
            current directory).
        what: what the object is for, used in error messages (e.g. ``"model class"``).

    Returns:
        The object.

    Raises:
        InputError: no colon or a malformed name; the file is missing; importing the module
            failed (the error, in one line); the module has no such attribute (the close names).

    Example:
        >>> load_object("collections:OrderedDict", what="class").__name__
        'OrderedDict'
    """
    what = what.strip() or "object"
    source, name = _split(spec, what)
    module = _load_file(source, spec, what) if _is_path(source) else _import(source, spec, what)
    return _attribute(module, source, name, spec, what)
