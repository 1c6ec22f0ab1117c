"""Run independent jobs on this machine's process pool or on a Ray cluster, behind one interface.

A **job** is a picklable top-level callable with its arguments and the resources it needs
(:class:`Task`, :class:`Resources`). An :class:`Executor` runs a batch of them and hands each
result back to the caller (the *driver*) as soon as it is ready, so whatever records results
(the results store, artefacts, caches) does it in the driver process, the same way whichever
executor ran the jobs. The first job that fails stops the batch: the jobs that have not started
are cancelled, the results that finished meanwhile are still handed back, then the error is
raised (Ctrl-C included), so a caller that records every result it receives loses no finished
job.

- :class:`LocalExecutor` (``"local"``, the default): spawned, single-threaded worker processes
  on this machine, each ended by the kernel when the driver dies (:func:`die_with_parent`);
  with one worker, or one job, the jobs run in the calling process.
- :class:`RayExecutor` (``"ray"``, ``pip install "trustlab[ray]"``): tasks on a Ray cluster,
  the one at ``address`` (``--ray-address``, else ``$TRUSTLAB_RAY_ADDRESS``) or a local Ray
  started on demand. Each job asks Ray for its CPUs and GPUs; a job whose worker process or node
  dies is retried by Ray (``max_retries``); an exception the job raises is not retried and
  reaches the driver as itself. The driver's ``TRUSTLAB_HOME``, ``TRUSTLAB_CACHE`` and
  ``TRUSTLAB_DATA`` are set in the worker while the job runs, so on several machines those
  paths must be on a shared file system (see ``docs/scaling.md``).

:func:`make_executor` builds one from its name (``--executor local|ray``).

Example::

    from operator import pow

    with make_executor("local", workers=2) as ex:
        squares = ex.map(pow, [1, 2, 3], args=(2,))  # [1, 4, 9], in the order of the items
        for key, value in ex.as_completed([Task(pow, (k, 2), key=k) for k in range(4)]):
            print(key, value)  # in the order they finish
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trustlab.errors import InputError, TrustlabError

__all__ = [
    "EXECUTORS",
    "FORWARDED_ENV",
    "RAY_ADDRESS_ENV",
    "RAY_INSTALL",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "Resources",
    "Task",
    "WorkerLost",
    "die_with_parent",
    "make_executor",
]

#: the executors :func:`make_executor` knows, by name
EXECUTORS = ("local", "ray")
#: the environment variable naming an existing Ray cluster (``ray.init(address=...)``)
RAY_ADDRESS_ENV = "TRUSTLAB_RAY_ADDRESS"
#: how to install the Ray executor
RAY_INSTALL = 'pip install "trustlab[ray]"'
#: the driver's environment that a job sees wherever it runs (where the store, caches, data are)
FORWARDED_ENV = ("TRUSTLAB_HOME", "TRUSTLAB_CACHE", "TRUSTLAB_DATA")


class WorkerLost(TrustlabError, RuntimeError):
    """The process (or machine) running a job died before the job returned: killed, out of
    memory, or a Ray node lost, after Ray's retries.

    The results handed back before it are kept; run the rest again (a reproduction:
    ``trustlab resume RUN``).

    Args:
        message: what died and why, in words.
        key: the key of the job that was running (:attr:`Task.key`; None when unknown).

    Example:
        >>> WorkerLost("the worker died", key=3).key
        3
    """

    def __init__(self, message: str, key: Hashable = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Resources:
    """What one job needs while it runs: CPU cores and GPUs (fractions allowed, as in Ray).

    The Ray executor reserves them on the cluster (a job waits until they are free); the local
    pool runs ``workers`` jobs at once and gives each ``cpus`` torch threads.

    Args:
        cpus: CPU cores (default 1).
        gpus: GPUs (default 0).

    Example:
        >>> Resources.for_device("cuda")
        Resources(cpus=1.0, gpus=1.0)
    """

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"Resources.{name} must be a number, got {value!r}.")
            if not math.isfinite(value) or value < 0:
                raise InputError(f"Resources.{name} must be finite and >= 0, got {value!r}.")
            object.__setattr__(self, name, float(value))

    @classmethod
    def for_device(cls, device: Any) -> Resources:
        """One CPU, and one GPU when ``device`` (a name or a ``torch.device``) is CUDA."""
        kind = getattr(device, "type", None) or str(device).split(":")[0]
        return cls(cpus=1.0, gpus=1.0 if kind == "cuda" else 0.0)

    @property
    def threads(self) -> int:
        """The torch threads a job gets: its CPUs, at least one."""
        return max(1, int(self.cpus))


@dataclass(frozen=True)
class Task:
    """One job: ``fn(*args, **kwargs)`` with the resources it needs.

    Args:
        fn: a picklable callable defined at the top level of an importable module (a worker
            imports it by name).
        args: positional arguments, picklable (default none). A value from
            :meth:`Executor.share` is replaced by the shared object in the worker.
        kwargs: keyword arguments, picklable (default none).
        key: what :meth:`Executor.as_completed` pairs the result with (default None).
        resources: what the job needs (default one CPU).

    Example:
        >>> from operator import add
        >>> Task(add, (1, 2), key="three").key
        'three'
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    key: Hashable = None
    resources: Resources = field(default_factory=Resources)


def die_with_parent(parent: int | None, sig: int = signal.SIGTERM) -> None:
    """In a child process: on Linux, ask the kernel to send ``sig`` to this process when the
    process that started it dies (a killed driver otherwise leaves its workers running), and
    end at once if ``parent`` (its pid) already died while this one was starting. Elsewhere
    nothing. The local pool's worker initializer; the submission sandbox's child calls it too.

    Example::

        ProcessPoolExecutor(initializer=die_with_parent, initargs=(os.getpid(),))
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # no usable libc (e.g. a static build): nothing
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _call_in_worker(
    fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any], threads: int
) -> Any:
    """A local pool worker runs a job: ``threads`` torch threads (the numbers of a CPU job do
    not depend on how many ran at once)."""
    _set_threads(threads)
    return fn(*args, **kwargs)


class Executor(ABC):
    """Runs independent jobs and hands their results back to the driver as they finish.

    Subclasses: :class:`LocalExecutor`, :class:`RayExecutor`; :func:`make_executor` builds one by
    name. Use it as a context manager (or call :meth:`close`): an executor that started a Ray
    instance shuts it down.

    Example::

        with make_executor("ray") as ex:
            results = ex.map(train_one, seeds, resources=Resources(cpus=1, gpus=1))
    """

    name: ClassVar[str] = ""

    def start(self) -> None:  # noqa: B027 - most executors have nothing to start
        """Connect to or start what runs the jobs, so that a wrong address fails before any
        work (called by the first batch when not called before)."""

    @property
    @abstractmethod
    def workers(self) -> int:
        """How many one-CPU jobs run at once (the local pool's processes, the cluster's CPUs)."""

    def job_device(self, device: Any) -> str:
        """The device name a job should use for ``device`` (``"cuda:1"`` on the driver)."""
        return str(device)

    def share(self, obj: Any) -> Any:
        """``obj`` to pass to many tasks of one batch (e.g. a dataset): on Ray it is stored once
        in the object store instead of once per task; pass the returned value as a top-level
        element of :attr:`Task.args` or a value of :attr:`Task.kwargs`."""
        return obj

    @abstractmethod
    def as_completed(self, tasks: Iterable[Task]) -> Iterator[tuple[Hashable, Any]]:
        """Run every task; yield ``(task.key, result)`` as each finishes.

        The first failure (an exception of a job, a lost worker: :class:`WorkerLost`, or Ctrl-C
        in the driver) cancels the jobs not started, yields the results that finished
        meanwhile, then raises. Stopping the iteration early cancels what has not started.
        """

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        resources: Resources | None = None,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """``[fn(item, *args, **kwargs) for item in items]``, run by the executor, in the items'
        order (``resources``: each job's, default one CPU)."""
        res = resources or Resources()
        tasks = [
            Task(fn, (item, *args), dict(kwargs or {}), key=i, resources=res)
            for i, item in enumerate(items)
        ]
        out: dict[Hashable, Any] = {}
        with contextlib.closing(self.as_completed(tasks)) as results:
            for key, value in results:
                out[key] = value
        return [out[i] for i in range(len(tasks))]

    def close(self) -> None:  # noqa: B027 - most executors hold nothing
        """Release what :meth:`start` acquired."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """This machine's process pool: spawned worker processes, ``cpus`` torch threads per job.

    The workers are spawned (fork is unsafe with torch's thread pools) for each batch and end
    with it; each dies with the driver (:func:`die_with_parent`). With one worker, or a batch of
    one job, the jobs run in the calling process (nothing is pickled; the caller's thread count
    is left alone). A worker process that dies mid-job (killed, out of memory) raises
    :class:`WorkerLost`; nothing is retried.

    Args:
        workers: processes at once (default: the CPU cores, at most the batch's jobs).

    Example::

        with LocalExecutor(workers=2) as ex:
            ex.map(math.sqrt, [1.0, 4.0, 9.0])  # [1.0, 2.0, 3.0]
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        from trustlab.utils.validate import check_int

        self._workers = None if workers is None else check_int("--workers", workers, minimum=1)

    @property
    def workers(self) -> int:
        return self._workers if self._workers is not None else max(1, os.cpu_count() or 1)

    def as_completed(self, tasks: Iterable[Task]) -> Iterator[tuple[Hashable, Any]]:
        batch = list(tasks)
        n = min(self.workers, len(batch))
        if n <= 1:
            for task in batch:
                yield task.key, task.fn(*task.args, **task.kwargs)
            return
        yield from self._pool(batch, n)

    def _pool(self, batch: list[Task], n: int) -> Iterator[tuple[Hashable, Any]]:
        pool = ProcessPoolExecutor(
            max_workers=n,
            mp_context=mp.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        futures: dict[Any, Hashable] = {}
        handed: set[Any] = set()
        try:
            for task in batch:
                args = (task.fn, task.args, dict(task.kwargs), task.resources.threads)
                futures[pool.submit(_call_in_worker, *args)] = task.key
            for fut in as_completed(futures):
                result = fut.result()
                handed.add(fut)
                yield futures[fut], result
        except GeneratorExit:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        except BaseException as exc:
            # stop at the first failure: cancel what has not started, hand back what finished
            pool.shutdown(wait=False, cancel_futures=True)
            for fut, key in futures.items():
                if fut in handed or not fut.done() or fut.cancelled():
                    continue
                if fut.exception() is None:
                    yield key, fut.result()
            if isinstance(exc, BrokenProcessPool):
                raise WorkerLost(
                    "a local worker process died while running a job (killed, out of memory, "
                    "or, when called from a script, the script lacks `if __name__ == "
                    '"__main__":`, which spawned workers need); the results it had finished '
                    "are kept."
                ) from exc
            raise
        pool.shutdown(wait=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(
            f"the Ray executor needs Ray, which is not installed: {RAY_INSTALL} "
            "(or use --executor local)."
        ) from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at a
    ``HOST:PORT`` cluster address (``auto`` and ``ray://`` addresses are left to Ray)."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}). Start one with "
            f"`ray start --head --port {port}` on {host}, fix --ray-address / "
            f"${RAY_ADDRESS_ENV}, or use --executor local."
        ) from None


def _ray_task(
    env: Mapping[str, str], threads: int, fn: Callable[..., Any], args: tuple, kwargs: Mapping
) -> Any:
    """What a Ray worker runs: the driver's trustlab paths in the environment while the job
    runs, ``threads`` torch threads, shared objects (``ray.put``) resolved, then the job."""
    import ray

    def resolve(value: Any) -> Any:
        return ray.get(value) if isinstance(value, ray.ObjectRef) else value

    args = tuple(resolve(a) for a in args)
    kwargs = {k: resolve(v) for k, v in kwargs.items()}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        _set_threads(threads)
        return fn(*args, **kwargs)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RayExecutor(Executor):
    """Jobs as Ray tasks, on an existing cluster or on a local Ray started on demand.

    Every job is one task that reserves its :class:`Resources` (``num_cpus``, ``num_gpus``; Ray
    sets ``CUDA_VISIBLE_DEVICES`` for a GPU job, so its device is ``"cuda"``). A task whose
    worker process or node dies is retried up to ``max_retries`` times, then
    :class:`WorkerLost` is raised; an exception the job raises is not retried and is re-raised
    in the driver as itself. Results travel back to the driver, which records them; the driver's
    ``TRUSTLAB_HOME``, ``TRUSTLAB_CACHE`` and ``TRUSTLAB_DATA`` are set in the worker while a
    job runs (on several machines they must name a shared file system). Every node needs the
    same trustlab (and torch) installed as the driver.

    Connecting: when Ray is already initialised in this process it is used as it is (and left
    running); otherwise ``ray.init(address=address)`` with ``address`` or
    ``$TRUSTLAB_RAY_ADDRESS`` (``"HEAD:6379"`` from a machine of the cluster, ``"auto"``; or
    ``"ray://HEAD:10001"`` through Ray Client, which needs ``ray[client]``), or, with
    neither, a local Ray with ``num_cpus``/``num_gpus`` (default: all of this machine's), shut
    down again by :meth:`close`.

    Args:
        address: the cluster to join (default: ``$TRUSTLAB_RAY_ADDRESS``, else a local Ray).
        num_cpus: CPUs of a local Ray started here (default: all); not with ``address``.
        num_gpus: GPUs of a local Ray started here (default: all); not with ``address``.
        max_retries: how often Ray reruns a job whose worker or node died (default 3).
        runtime_env: Ray's ``runtime_env`` for the connection (e.g. ``{"pip": [...]}``);
            default none.

    Example::

        with RayExecutor(num_cpus=2) as ex:  # a local Ray with 2 CPUs
            ex.map(math.sqrt, [1.0, 4.0])
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        max_retries: int = 3,
        runtime_env: Mapping[str, Any] | None = None,
    ) -> None:
        from trustlab.utils.validate import check_int

        self._ray = _import_ray()
        self.address = address or os.environ.get(RAY_ADDRESS_ENV) or None
        if self.address is not None and (num_cpus is not None or num_gpus is not None):
            raise InputError(
                "num_cpus/num_gpus size a local Ray; a cluster at an address has its own "
                "resources. Pass one or the other."
            )
        self.num_cpus = None if num_cpus is None else check_int("num_cpus", num_cpus, 1)
        self.num_gpus = None if num_gpus is None else check_int("num_gpus", num_gpus, 0)
        self.max_retries = check_int("max_retries", max_retries, 0)
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self._owns = False
        self._remote: Any = None

    def start(self) -> None:
        ray = self._ray
        if self._remote is not None:
            return
        if not ray.is_initialized():
            import logging

            kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
            if self.runtime_env:
                kwargs["runtime_env"] = self.runtime_env
            if self.address is None:
                kwargs.update(num_cpus=self.num_cpus, num_gpus=self.num_gpus)
                kwargs["include_dashboard"] = False
            if self.address is not None:
                _check_reachable(self.address)
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, TimeoutError, ValueError) as exc:
                where = self.address or "a local Ray"
                raise InputError(
                    f"could not start or reach the Ray cluster at {where} ({exc}). Check "
                    f"--ray-address / ${RAY_ADDRESS_ENV} (e.g. HEAD:6379, from a machine of the "
                    "cluster; `ray status` on the head prints it), or use --executor local."
                ) from None
            self._owns = True
        self._remote = ray.remote(_ray_task)

    @property
    def workers(self) -> int:
        self.start()
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def job_device(self, device: Any) -> str:
        text = str(device)
        return "cuda" if text.startswith("cuda") else text

    def share(self, obj: Any) -> Any:
        self.start()
        return self._ray.put(obj)

    def _check_fits(self, batch: list[Task]) -> None:
        total = self._ray.cluster_resources()
        for what, need in (
            ("CPU", max(t.resources.cpus for t in batch)),
            ("GPU", max(t.resources.gpus for t in batch)),
        ):
            have = float(total.get(what, 0.0))
            if need > have:
                fix = "use --device cpu, or a cluster with GPUs" if what == "GPU" else ""
                raise InputError(
                    f"a job needs {need:g} {what}(s) but the Ray cluster has {have:g} in all; "
                    f"it would wait forever. {fix}".rstrip()
                )

    def as_completed(self, tasks: Iterable[Task]) -> Iterator[tuple[Hashable, Any]]:
        batch = list(tasks)
        if not batch:
            return
        self.start()
        ray = self._ray
        self._check_fits(batch)
        env = _forwarded_env()
        keys: dict[Any, Hashable] = {}
        for task in batch:
            remote = self._remote.options(
                num_cpus=task.resources.cpus,
                num_gpus=task.resources.gpus,
                max_retries=self.max_retries,
                retry_exceptions=False,
            )
            ref = remote.remote(env, task.resources.threads, task.fn, task.args, task.kwargs)
            keys[ref] = task.key
        pending = list(keys)
        current: Hashable = None
        try:
            while pending:
                current = None
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    current = keys[ref]
                    value = ray.get(ref)
                    yield current, value
        except GeneratorExit:
            self._cancel(pending)
            raise
        except BaseException as exc:
            done, rest = [], []
            if pending:
                done, rest = ray.wait(pending, num_returns=len(pending), timeout=0)
            self._cancel(rest)
            for ref in done:  # finished while the failure was found: hand them back
                try:
                    value = ray.get(ref, timeout=0)
                except Exception:  # noqa: BLE001 - a second failure: the first is raised
                    continue
                yield keys[ref], value
            translated = self._translate(exc, current)
            if translated is exc:
                raise
            raise translated from exc

    def _cancel(self, refs: list[Any]) -> None:
        for ref in refs:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=False)

    def _translate(self, exc: BaseException, key: Hashable) -> BaseException:
        errors = self._ray.exceptions
        if isinstance(exc, errors.RayTaskError):
            cause = getattr(exc, "cause", None)
            return cause if isinstance(cause, BaseException) else exc
        if isinstance(exc, errors.RayError):
            first = str(exc).splitlines()[0] if str(exc) else ""
            return WorkerLost(
                f"job {key!r}: its Ray worker or node died and {self.max_retries} "
                f"retr{'y' if self.max_retries == 1 else 'ies'} did not finish it "
                f"({type(exc).__name__}: {first}); the results handed back before it are kept.",
                key=key,
            )
        return exc

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False
        self._remote = None


def make_executor(
    name: str = "local",
    *,
    workers: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    max_retries: int = 3,
) -> Executor:
    """The executor called ``name`` (``--executor``): ``"local"`` or ``"ray"``.

    Args:
        name: ``"local"`` (the process pool; default) or ``"ray"``.
        workers: the local pool's processes (default: the CPU cores); an error with Ray, whose
            cluster decides.
        address: the Ray cluster (``--ray-address``; default ``$TRUSTLAB_RAY_ADDRESS``, else a
            local Ray started on demand); only with ``"ray"``.
        num_cpus: the CPUs of a local Ray started here (default: all); only with ``"ray"``.
        max_retries: Ray's retries of a job whose worker or node died (default 3).

    Raises:
        InputError: an unknown name; Ray asked for but not installed (naming
            ``pip install "trustlab[ray]"``); Ray options with the local executor.

    Example::

        with make_executor("ray", address="head:6379") as ex:
            ex.map(fn, items)
    """
    key = (name or "").strip().lower()
    if key == "local":
        if address is not None:
            raise InputError("--ray-address goes with --executor ray, not local.")
        if num_cpus is not None:
            raise InputError("num_cpus sizes a local Ray; use it with --executor ray.")
        return LocalExecutor(workers)
    if key == "ray":
        if workers is not None:
            raise InputError(
                "--workers sizes the local pool; with --executor ray the cluster's free CPUs "
                "decide: drop --workers."
            )
        return RayExecutor(address, num_cpus=num_cpus, max_retries=max_retries)
    raise InputError(f"unknown executor {name!r}; use one of: {', '.join(EXECUTORS)}.")
