"""Submit a defense or a model to a benchmark: evaluated in the sandbox, cached, recorded.

:func:`submit` never runs the user's code in its own process. It

1. checks the command from bytes and source text alone (nothing is imported or unpickled): the
   files and modules exist, the named class is defined at the top level of its file or module
   (:func:`check_object_exists`, by parsing the source), a model's weights are safetensors (a
   pickle or ``torch.save`` file is refused), a model without ``arch`` is a trustlab
   checkpoint, the limits are possible. A mistake here is an :class:`InputError` and nothing
   is recorded;
2. computes the submission's **source hash** from bytes alone: the ``.py`` file of a
   ``file.py:Name`` spec, or the module of a ``pkg.module:Name`` spec (every ``.py`` file of
   its top-level package when it lives in one), plus the object's name; for a model, the
   weights file's bytes and the ``--arch`` file's;
3. looks for a finished evaluation under the **cache key** ``sha256(source hash : benchmark
   hash)`` in the results store and returns it (``cached=True``) when there is one: the same
   submission on the same benchmark version is evaluated once (under the label it had then);
4. otherwise records **one** run of kind ``"submission"``, name ``"<benchmark>/<label>"``,
   status ``running``, evaluates it in a child process with a time and memory limit
   (:func:`~trustlab.platform.sandbox.run_sandboxed`) and finishes or fails the run, whatever
   happened:

   - config: ``{"benchmark", "benchmark_version", "benchmark_hash", "submission": {"kind",
     "ref", "label", "source_hash"}, "cache_key"}`` (``ref``: the absolute file path, or the
     module spec; for a model ``"<weights> --arch <file.py:Class>"``);
   - finished: summary ``{"scores": {metric: {"mean", "lo", "hi", "values"}}, "primary",
     "higher_is_better", "wall_s"}``, artefact ``evaluation.json`` (the per-attack and per-seed
     details and the tail of the child's log);
   - failed: status ``failed``, ``run.error`` the reason (with the stage the evaluation was
     in), summary ``{"failure": "raised" | "timeout" | "memory" | "malformed", "reason",
     "traceback"}``, artefact ``sandbox.log``.

   A failed evaluation is not cached: submitting again evaluates again. When the submitting
   process is killed, the child dies with it and the store marks the run ``interrupted``
   (:meth:`~trustlab.results.RunStore.mark_stale`); only finished runs are ever cache hits.

Example::

    res = submit("my_defense.py:MyDefense", "backdoor-quick", kind="defense")
    res.ok, res.cached, res.scores["der"]["mean"], res.run.id
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.machinery
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustlab.errors import InputError
from trustlab.platform.benchmarks import Benchmark, get_benchmark
from trustlab.platform.sandbox import SandboxOutcome, check_limits, run_sandboxed
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.utils.executor import Executor, Task, WorkerLost, make_executor
from trustlab.utils.io import write_json_atomic, write_text_atomic

__all__ = [
    "KIND",
    "SubmissionResult",
    "cache_key",
    "check_object_exists",
    "default_label",
    "find_cached",
    "source_hash",
    "submit",
    "submit_many",
]

#: the kind of the runs a submission records
KIND = "submission"


@dataclass
class SubmissionResult:
    """What :func:`submit` gives back.

    Attributes:
        run: the stored run (for a cache hit: the earlier run that holds the evaluation).
        benchmark: the benchmark it was scored on.
        cached: True when the evaluation came from the cache (nothing was run).
        ok: the evaluation finished.
        label: the submission's label.
        source_hash, cache_key: hex digests (see the module).
        scores: ``{metric: {"mean", "lo", "hi", "values"}}`` (empty on failure).
        primary: the headline metric ("" on failure).
        failure: ``None`` or ``"raised"``, ``"timeout"``, ``"memory"``, ``"malformed"``.
        reason: why it failed ("" when ok).
        traceback: the traceback summary of a failure ("" otherwise).
        wall_s: the evaluation's seconds (of the original evaluation for a cache hit).

    Example::

        if res.ok:
            print(res.scores[res.primary]["mean"])
    """

    run: Run
    benchmark: Benchmark
    cached: bool
    ok: bool
    label: str
    source_hash: str
    cache_key: str
    scores: dict[str, Any]
    primary: str = ""
    failure: str | None = None
    reason: str = ""
    traceback: str = ""
    wall_s: float = 0.0

    @classmethod
    def from_run(cls, run: Run, benchmark: Benchmark, cached: bool) -> SubmissionResult:
        """The result recorded in ``run`` (a submission run)."""
        s, sub = run.summary, run.config["submission"]
        return cls(
            run, benchmark, cached, run.status == "finished", sub["label"], sub["source_hash"],
            run.config["cache_key"], dict(s.get("scores", {})), str(s.get("primary", "")),
            s.get("failure"), str(s.get("reason", run.error or "")), str(s.get("traceback", "")),
            float(s.get("wall_s", 0.0) or 0.0),
        )  # fmt: skip


# -- hashing (bytes only: nothing of the user's is imported here) ----------------------------
def _split(ref: str, what: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ":" not in ref:
        raise InputError(
            f"{what} {ref!r} names no object: write it as 'pkg.module:Name' or "
            "'path/to/file.py:Name'."
        )
    source, name = (p.strip() for p in ref.rsplit(":", 1))
    if not source or not name:
        raise InputError(
            f"{what} {ref!r} is malformed: write it as 'module:Name' or 'file.py:Name'."
        )
    return source, name


def _is_path(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


def _module_files(source: str, ref: str, what: str) -> list[Path]:
    """The source files of module ``source`` found without importing it: the module's file,
    or every ``.py`` file of its top-level package."""
    parts = source.split(".")
    top = parts[0]
    loaded = sys.modules.get(top)
    if loaded is not None and getattr(loaded, "__path__", None):
        root = Path(list(loaded.__path__)[0])
        return sorted(root.rglob("*.py"))
    spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd(), *sys.path])
    if spec is None or spec.origin is None and not spec.submodule_search_locations:
        raise InputError(
            f"{what} {ref!r}: no module named {top!r} in {os.getcwd()} or on sys.path. Run from "
            "the folder that holds it, add it to PYTHONPATH, or pass 'path/to/file.py:Name'."
        )
    if spec.submodule_search_locations:
        return sorted(Path(list(spec.submodule_search_locations)[0]).rglob("*.py"))
    if len(parts) > 1:
        raise InputError(f"{what} {ref!r}: {top} is a module, not a package.")
    return [Path(spec.origin)]


def _digest(files: list[tuple[str, Path]], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for label, path in files:
        h.update(f"\0{label}\0".encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist (looked in {Path.cwd()}).")
    return p.resolve()


def source_hash(ref: str, *, kind: str, arch: str | None = None) -> str:
    """SHA-256 (hex) of a submission's source (see the module); reads bytes, imports nothing.

    Args:
        ref: ``"module:Name"`` / ``"file.py:Name"`` for a defense; the weights file for a model.
        kind: ``"defense"`` or ``"model"``.
        arch: a model's class (``"file.py:Class"`` or ``"module:Class"``); None for a trustlab
            checkpoint.

    Raises:
        InputError: the file or module does not exist, or the spec is malformed.

    Example::

        source_hash("examples/submissions/backdoor_defense.py:CleanFineTune", kind="defense")
    """
    if kind == "defense":
        source, name = _split(ref, "defense")
        if _is_path(source):
            files = [(Path(source).name, _file(source, "defense file"))]
        else:
            found = _module_files(source, ref, "defense")
            root = found[0].parent if found else Path()
            files = [(str(f.relative_to(root)) if f.is_relative_to(root) else f.name, f)
                     for f in found]  # fmt: skip
        return _digest(files, f"defense:{name}")
    if kind == "model":
        files = [("weights", _file(ref, "model file"))]
        name = ""
        if arch:
            source, name = _split(arch, "model class")
            if _is_path(source):
                files.append((Path(source).name, _file(source, "model class file")))
            else:
                files += [(f.name, f) for f in _module_files(source, arch, "model class")]
        return _digest(files, f"model:{name}")
    raise InputError(f"a submission is a 'defense' or a 'model', not {kind!r}.")


def cache_key(source: str, benchmark: Benchmark) -> str:
    """``sha256("<source hash>:<benchmark hash>")`` (hex): a submission's evaluation on one
    benchmark version.

    Example::

        key = cache_key(source_hash("mine.py:Mine", kind="defense"), get_benchmark("privacy-quick"))
    """
    return hashlib.sha256(f"{source}:{benchmark.hash}".encode()).hexdigest()


def find_cached(store: RunStore, key: str) -> Run | None:
    """The newest finished submission run with cache key ``key``, or None (failed runs are
    never cached).

    Example::

        run = find_cached(RunStore(), key)  # None: not evaluated yet
    """
    if KIND not in store.kinds():
        return None
    for run in store.list(status="finished", kind=KIND):
        if run.config.get("cache_key") == key:
            return run
    return None


# -- checks of the command (bytes and syntax only: nothing of the user's is imported) -------
def _module_source(source: str, ref: str, what: str) -> Path | None:
    """The ``.py`` file of module ``source`` found without importing it (nor its parent
    packages, which ``importlib.util.find_spec`` would import), or None when it has no Python
    source to read (an extension module, a namespace package)."""
    parts = source.split(".")
    top = parts[0]
    loaded = sys.modules.get(top)
    if loaded is not None and getattr(loaded, "__path__", None):
        root = Path(list(loaded.__path__)[0])
    else:
        spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd(), *sys.path])
        if spec is None:
            raise InputError(
                f"{what} {ref!r}: no module named {top!r} in {os.getcwd()} or on sys.path."
            )
        if not spec.submodule_search_locations:
            origin = Path(spec.origin or "")
            return origin if len(parts) == 1 and origin.suffix == ".py" else None
        root = Path(list(spec.submodule_search_locations)[0])
    if len(parts) == 1:
        init = root / "__init__.py"
        return init if init.is_file() else None
    base = root.joinpath(*parts[1:])
    for candidate in (base.parent / f"{base.name}.py", base / "__init__.py"):
        if candidate.is_file():
            return candidate
    if base.is_dir() or any(base.parent.glob(f"{base.name}.*")):
        return None  # a namespace package or an extension module: no source to read
    raise InputError(f"{what} {ref!r}: no module named {source!r} (looked in {root}).")


def _top_level_names(tree: ast.Module) -> tuple[set[str], list[str], bool]:
    """``(names bound at the top level, the classes among them, complete)``: classes,
    functions, assignments and imports, also inside top-level ``if``/``try``/``with`` blocks;
    ``complete`` is False when a ``from x import *`` or a module ``__getattr__`` may add more."""
    names: set[str] = set()
    classes: list[str] = []
    complete = True

    def targets(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def visit(body: list[ast.stmt]) -> None:
        nonlocal complete
        for node in body:
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
                classes.append(node.name)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
                complete = complete and node.name != "__getattr__"
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    targets(t)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets(node.target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        complete = False
                    else:
                        names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for block in ("body", "orelse", "finalbody"):
                    visit(getattr(node, block, []) or [])
                for handler in getattr(node, "handlers", []) or []:
                    visit(handler.body)
                if isinstance(node, ast.For):
                    targets(node.target)

    visit(tree.body)
    return names, classes, complete


def check_object_exists(spec: str, what: str) -> None:
    """Refuse a ``file.py:Name`` / ``module:Name`` whose file or module does not define
    ``Name``, without importing it: the source is parsed (:mod:`ast`) and its top-level
    classes, functions, assignments and imports are looked at (also inside top-level
    ``if``/``try`` blocks). When that cannot tell (a ``from x import *``, a module
    ``__getattr__``, a syntax error, no Python source) nothing is refused here: the sandbox
    then loads it and reports what goes wrong.

    Args:
        spec: ``"path/to/file.py:Name"`` or ``"pkg.module:Name"``.
        what: what the object is, for the message (``"defense"``, ``"model class"``).

    Raises:
        InputError: the spec is malformed, the file or module is missing, or it does not
            define ``Name`` (the message lists the classes it does define).

    Example::

        check_object_exists("examples/submissions/digits_net.py:DigitsNet", "model class")
    """
    source, name = _split(spec, what)
    if _is_path(source):
        path: Path | None = _file(source, f"{what} file")
    else:
        path = _module_source(source, spec, what)
    if path is None or "." in name:
        return
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return  # the sandbox reports it, with its traceback
    names, classes, complete = _top_level_names(tree)
    if name in names or not complete:
        return
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    where = f"defines the classes {shown}" if classes else "defines no class"
    raise InputError(
        f"{what} {spec!r}: {path.name} has no top-level {name!r} (it {where}). Check the "
        "name's spelling and case."
    )


def _check_model_file(weights: Path, arch: str | None) -> None:
    """A model's weights checked in this process from their bytes (safetensors header only,
    never unpickled): a pickle or ``torch.save`` file is refused, and without ``arch`` the
    file must be a trustlab checkpoint (it records the spec that rebuilds its network)."""
    if arch:
        from trustlab.train.checkpoint import read_checkpoint_meta

        read_checkpoint_meta(weights)
        check_object_exists(arch, "model class")
    else:
        from trustlab.workflows.targets import check_model_checkpoint

        check_model_checkpoint(weights)


_RUN_FOLDER = re.compile(r"run-\d+")


def default_label(ref: str, *, kind: str, source: str, bench: Benchmark, store: RunStore) -> str:
    """The leaderboard label of a submission given without ``--label``.

    A defense: its class's name. A model: the run's id (``"run-000003"``) for the weights of a
    trustlab run (a ``run-NNNNNN`` folder of a results store), else the weights file's stem.
    When another submission to the same benchmark already holds that label with other source
    (a different file of the same name, an edited class), the first 7 hex digits of the source
    hash are added (``"model-3f9a2c1"``), so that two submissions never share a label.

    Args:
        ref: the defense spec or the weights file.
        kind: ``"defense"`` or ``"model"``.
        source: the submission's source hash.
        bench: the benchmark.
        store: the results store its submissions are in.

    Example::

        default_label("runs/run-000003/model.safetensors", kind="model", source=h,
                      bench=bench, store=store)  # "run-000003"
    """
    if kind == "defense":
        label = _split(ref, "defense")[1]
    else:
        path = Path(ref).expanduser().resolve()
        in_run = (
            _RUN_FOLDER.fullmatch(path.parent.name)
            and (path.parent.parent / "trustlab.db").is_file()
        )
        label = path.parent.name if in_run else path.stem
    label = _check_label(label)
    if KIND in store.kinds():
        for run in store.list(kind=KIND):
            sub = run.config.get("submission") or {}
            if (run.name == f"{bench.name}/{label}" and run.status != "failed"
                    and sub.get("source_hash") != source):  # fmt: skip
                return f"{label}-{source[:7]}"
    return label


# -- submit ----------------------------------------------------------------------------------
def _absolute_spec(spec: str) -> str:
    """A ``file.py:Name`` spec with the file made absolute (the child may resolve it alone)."""
    source, name = spec.rsplit(":", 1)
    return f"{Path(source).expanduser().resolve()}:{name}" if _is_path(source) else spec


def _check_label(label: str) -> str:
    label = " ".join(str(label).split())
    if not label or len(label) > 100:
        raise InputError(f"the label must be 1 to 100 characters on one line, got {label!r}.")
    return label


def submit(
    ref: str,
    benchmark: str | Benchmark,
    *,
    kind: str,
    arch: str | None = None,
    label: str | None = None,
    store: RunStore | None = None,
    timeout: float | None = None,
    memory_mb: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> SubmissionResult:
    """Score a submission on a benchmark, in the sandbox, once (see the module).

    Args:
        ref: a defense ``"pkg.module:Name"`` / ``"path/to/file.py:Name"``, or a model's weights
            file (safetensors).
        benchmark: a registered benchmark's name or a :class:`Benchmark`.
        kind: ``"defense"`` or ``"model"``; must be what the benchmark takes.
        arch: a model's class (``"file.py:Class"``); None for a trustlab checkpoint.
        label: the name on the leaderboard (default: :func:`default_label`). A cache hit keeps
            the label of the earlier evaluation.
        store: the results store (default ``$TRUSTLAB_HOME``).
        timeout: wall-time limit in seconds (default: the benchmark's ``budget["timeout_s"]``).
        memory_mb: memory limit of the evaluating process in MiB (default: the benchmark's
            ``budget["memory_mb"]``).
        notify: called with one line (naming the run) just before an evaluation starts (not
            on a cache hit); default None.

    Returns:
        A :class:`SubmissionResult`: the scores, or the failure and its reason; ``cached`` says
        whether it came from an earlier evaluation.

    Raises:
        InputError: an unknown benchmark, a kind the benchmark does not take, a missing file,
            module or class, a pickle, a plain ``state_dict`` without ``arch``, a bad label or
            limit. Nothing is recorded then. A failing submission is
            recorded and returned, never raised.

    Example::

        res = submit("my_defense.py:MyDefense", "backdoor-quick", kind="defense")
    """
    (result,) = submit_many(  # one job: evaluated from this process (the local executor)
        [ref], benchmark, kind=kind, arch=arch, store=store, timeout=timeout,
        memory_mb=memory_mb, notify=notify, labels=[label],
    )  # fmt: skip
    return result


def submit_many(
    refs: Sequence[str],
    benchmark: str | Benchmark,
    *,
    kind: str,
    arch: str | None = None,
    store: RunStore | None = None,
    timeout: float | None = None,
    memory_mb: int | None = None,
    executor: str | Executor = "local",
    notify: Callable[[str], None] | None = None,
    labels: Sequence[str | None] | None = None,
) -> list[SubmissionResult]:
    """Score several submissions on one benchmark at once: :func:`submit` for each, with the
    evaluations run as jobs of ``executor`` (``"local"``: this machine's process pool, one
    evaluation per core; ``"ray"``: a Ray cluster, whose nodes must see the submissions' files
    at the same paths; or an :class:`~trustlab.utils.executor.Executor`).

    Every submission is checked before anything is recorded (one bad one: an
    :class:`InputError`, nothing recorded); cache hits are returned without running. Each
    evaluation runs in its own sandboxed child process on the worker (the same time and memory
    limits as :func:`submit`); its outcome comes back to this process, which records the run, as
    each finishes. A worker lost mid-evaluation fails that submission's run with the reason
    (submitting it again evaluates it again). Results are in the order of ``refs``; ``labels``
    (one per ref, None for the default: :func:`default_label`) name them.

    Example::

        results = submit_many(["a.py:A", "b.py:B"], "backdoor-quick", kind="defense",
                              executor="ray")
    """
    bench = benchmark if isinstance(benchmark, Benchmark) else get_benchmark(benchmark)
    store = store or RunStore()
    if not refs:
        raise InputError("give at least one submission.")
    names = list(labels) if labels is not None else [None] * len(refs)
    if len(names) != len(refs):
        raise InputError(f"give one label per submission: {len(refs)} refs, {len(names)} labels.")
    jobs = [
        _checked(ref, bench, kind, arch, label, timeout, memory_mb, store)
        for ref, label in zip(refs, names, strict=True)
    ]
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise InputError("the same submission is given twice; give each once.")
    started = [_start(job, bench, store) for job in jobs]
    out: list[SubmissionResult | None] = [
        s if isinstance(s, SubmissionResult) else None for s in started
    ]
    pending = {i: s for i, s in enumerate(started) if isinstance(s, Run)}
    if not pending:
        return [r for r in out if r is not None]
    ex = executor if isinstance(executor, Executor) else make_executor(executor)
    try:
        tasks = []
        for i, run in pending.items():
            job = jobs[i]
            if notify is not None:
                notify(_evaluating(job, bench, run))
            limits = {"timeout": job.timeout, "memory_mb": job.memory_mb}
            tasks.append(Task(run_sandboxed, (bench, job.task), limits, key=i))
        try:
            with contextlib.closing(ex.as_completed(tasks)) as results:
                for i, outcome in results:
                    run = pending.pop(int(i))
                    with recording_outcome(run):
                        _record(run, outcome, bench)
                    out[int(i)] = SubmissionResult.from_run(run.refresh(), bench, cached=False)
        except BaseException as exc:  # Ctrl-C: interrupted; a lost worker or else: failed
            for i, run in pending.items():
                if isinstance(exc, KeyboardInterrupt):
                    run.mark_interrupted()
                elif run.refresh().status == "running":
                    run.fail(f"not evaluated: {type(exc).__name__}: {exc}")
                out[i] = SubmissionResult.from_run(run.refresh(), bench, cached=False)
            if not isinstance(exc, WorkerLost):
                raise
    finally:
        if not isinstance(executor, Executor):
            ex.close()
    return [r for r in out if r is not None]


@dataclass(frozen=True)
class _Job:
    """One submission, checked: what :func:`_start` records and the sandbox evaluates."""

    ref: str
    kind: str
    label: str | None
    source: str
    key: str
    timeout: float
    memory_mb: int
    task: dict[str, Any]
    stored: str
    shown: str


def _checked(
    ref: str,
    bench: Benchmark,
    kind: str,
    arch: str | None,
    label: str | None,
    timeout: float | None,
    memory_mb: int | None,
    store: RunStore,
) -> _Job:
    """Step 1-2 of the module: everything checked from bytes and source text, nothing recorded."""
    if kind not in ("defense", "model"):
        raise InputError(f"a submission is a 'defense' or a 'model', not {kind!r}.")
    if kind != bench.takes:
        flag = "--defense" if bench.takes == "defense" else "--model FILE [--arch file.py:Class]"
        raise InputError(f"benchmark {bench.name!r} takes a {bench.takes} ({flag}), not a {kind}.")
    if kind == "defense" and arch:
        raise InputError("--arch goes with --model; a defense is named by --defense alone.")
    src = source_hash(ref, kind=kind, arch=arch)
    key = cache_key(src, bench)
    if kind == "defense":
        check_object_exists(ref, "defense")
    else:
        _check_model_file(_file(ref, "model file"), arch)
    if label is not None:
        label = _check_label(label)
    timeout = bench.budget.get("timeout_s", 600) if timeout is None else timeout
    memory_mb = bench.budget.get("memory_mb", 4096) if memory_mb is None else memory_mb
    check_limits(timeout, memory_mb)
    if store.readonly:
        raise InputError(
            f"the results store {store.root} is read-only, so the evaluation could not be "
            "recorded; point TRUSTLAB_HOME at a folder you can write."
        )
    if kind == "defense":
        task = {"kind": "defense", "ref": _absolute_spec(ref)}
        stored, shown = task["ref"], ref
    else:
        task = {"kind": "model", "weights": str(_file(ref, "model file")),
                "arch": _absolute_spec(arch) if arch else None}  # fmt: skip
        stored = task["weights"] + (f" --arch {task['arch']}" if arch else "")
        shown = f"{ref} --arch {arch}" if arch else ref
    return _Job(ref, kind, label, src, key, float(timeout), int(memory_mb), task, stored, shown)


def _start(job: _Job, bench: Benchmark, store: RunStore) -> SubmissionResult | Run:
    """Step 3-4's start: the cached result, or the new run (status running)."""
    hit = find_cached(store, job.key)
    if hit is not None:
        return SubmissionResult.from_run(hit, bench, cached=True)
    label = job.label
    if label is None:
        label = default_label(job.ref, kind=job.kind, source=job.source, bench=bench, store=store)
    config = {
        "benchmark": bench.name,
        "benchmark_version": bench.version,
        "benchmark_hash": bench.hash,
        "submission": {
            "kind": job.kind,
            "ref": job.stored,
            "label": label,
            "source_hash": job.source,
        },  # fmt: skip
        "cache_key": job.key,
    }
    # the run exists (running) while the evaluation runs; a parent killed meanwhile leaves it
    # running with a dead owner, which the store marks interrupted (never cached)
    return store.create_run(KIND, f"{bench.name}/{label}", config)


def _evaluating(job: _Job, bench: Benchmark, run: Run) -> str:
    return (
        f"evaluating {job.shown} on {bench.name} v{bench.version} as run {run.id} in a "
        f"separate process (time limit {job.timeout:g} s, memory limit {job.memory_mb} MiB)"
    )


def _record(run: Run, outcome: SandboxOutcome, bench: Benchmark) -> None:
    """Finish or fail ``run`` with the outcome (one summary in the submission format; the
    directions come from the benchmark, not from the child)."""
    if outcome.ok and outcome.result is not None:
        r = outcome.result
        scores = {
            name: {k: s.get(k) for k in ("mean", "lo", "hi", "values")}
            for name, s in r["scores"].items()
        }
        write_json_atomic(run.artifact_path("evaluation.json"),
                          {"details": r.get("details"), "log": outcome.log})  # fmt: skip
        run.add_artifact("evaluation.json")
        run.finish(
            {
                "scores": scores,
                "primary": r["primary"],
                "higher_is_better": {k: bench.metric(k).higher_is_better for k in scores},
                "wall_s": round(outcome.wall_s, 3),
            }
        )
        return
    write_text_atomic(run.artifact_path("sandbox.log"), outcome.log)
    run.add_artifact("sandbox.log")
    run.set_summary({"failure": outcome.failure or "raised", "reason": outcome.reason,
                     "traceback": outcome.traceback})  # fmt: skip
    run.fail(outcome.reason or f"the evaluation failed ({outcome.failure})")
