"""The reproduction machinery shared by every paper: presets, jobs, the results table, claims.

An :class:`Experiment` declares

- ``presets``: ``smoke`` (seconds, part of the test suite), ``quick`` (minutes on 2 CPU cores, what
  a new user runs first), ``full`` (the paper's protocol, for a GPU and the real dataset) and,
  where it fits, ``real`` (real Fashion-MNIST, sized for under 30 minutes on 2 CPU cores);
- ``jobs(preset)``: the independent trainings/evaluations the table needs, each a plain dict of
  the row's keys (e.g. ``{"loss": "sce", "noise": "sym:0.4"}``), run once per seed;
- ``run_job(preset, job, seed, device)``: runs one job and returns its metrics;
- ``claims``: the paper's qualitative headline written as predicates over the table;
- optionally ``summarize(preset, rows, device)``: a second stage in the main process that turns
  the job rows into the table's rows, e.g. attacks across models that separate jobs trained. Jobs
  leave such files in ``self.workdir`` (the run folder's ``work/``, set before every job and
  before ``summarize``; kept, so a resumed reproduction reuses what its finished jobs wrote).

:func:`reproduce` runs the jobs through an executor (:mod:`trustlab.utils.executor`: this
machine's worker processes, ``local``, or a Ray cluster, ``ray``; each job single-threaded on CPU,
so the numbers do not depend on how many workers ran them or where), aggregates them into a
:class:`ResultTable` (mean and std over seeds), checks the claims and stores everything as one
``reproduce`` run: one stored row per finished job, recorded by this process as each job returns
(so an interrupted or failed reproduction resumes where it stopped, with either executor), the
table as an artefact, and the claims in the summary.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import InputError
from trustlab.metrics.stats import VERDICTS, bootstrap_ci
from trustlab.registry import EXPERIMENTS
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.utils.device import resolve_device, single_threaded
from trustlab.utils.executor import Executor, Resources, Task, WorkerLost, make_executor
from trustlab.utils.format import format_interval
from trustlab.utils.io import write_json_atomic, write_text_atomic
from trustlab.utils.progress import progress_bar

PRESETS = ("smoke", "quick", "real", "full")


@dataclass(frozen=True)
class Preset:
    """One scale of an experiment. ``options`` holds the experiment's own knobs.

    Example::

        pre = get_experiment("blind").preset("smoke").with_overrides(seeds=2)
        train = pre.load("train")
    """

    name: str
    dataset: str
    model: str
    seeds: int
    train: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def with_overrides(
        self, dataset: str | None = None, seeds: int | None = None, data_root: str | None = None
    ) -> Preset:
        out = self
        if dataset is not None:
            out = replace(out, dataset=dataset)
        if data_root is not None:
            root = str(Path(data_root).expanduser().resolve())
            out = replace(out, options={**out.options, "data_root": root})
        if seeds is not None:
            if seeds < 1:
                raise InputError(f"--seeds must be >= 1, got {seeds}.")
            out = replace(out, seeds=seeds)
        return out

    def load(self, split: str) -> Any:
        """Split ``split`` of the preset's dataset (from ``options["data_root"]`` if set).

        ``options["train_size"]`` / ``options["test_size"]`` take a fixed class-stratified
        subset of that split (:meth:`~trustlab.data.ArrayDataset.stratified`, seed 0: the same
        samples for every seed of a run, so the interval measures training, not sampling).
        """
        from trustlab.data import load_dataset

        data = load_dataset(self.dataset, split, root=self.options.get("data_root"))
        size = self.options.get(f"{split}_size")
        return data if size is None else data.stratified(int(size), seed=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model,
            "seeds": self.seeds,
            "train": self.train,
            "options": self.options,
        }


@dataclass(frozen=True)
class ClaimResult:
    """One claim checked against a reproduction's table (what :meth:`Claim.evaluate` returns).

    Attributes:
        claim: the claim's name (its :class:`Claim`'s ``name``, e.g. ``"asr-and-accuracy"``).
        text: the claim in words.
        passed: whether the table satisfies it (``verdict == "PASS"``).
        detail: the numbers it was decided on, in words.
        verdict: ``"PASS"``, ``"FAIL"`` or ``"INCONCLUSIVE"`` (the 95% interval straddles the
            claim's threshold); default: ``PASS``/``FAIL`` from ``passed``.

    Example::

        result = claim.evaluate(table)
        print(result.verdict, result.text, result.detail)
    """

    claim: str
    text: str
    passed: bool
    detail: str
    verdict: str = ""

    def __post_init__(self) -> None:
        if not self.verdict:
            object.__setattr__(self, "verdict", "PASS" if self.passed else "FAIL")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        object.__setattr__(self, "passed", self.verdict == "PASS")


@dataclass(frozen=True)
class Claim:
    """A paper's headline as a predicate: ``check(table) -> (outcome, detail with the numbers)``,
    the outcome a bool (PASS/FAIL) or a verdict string (``"PASS"``, ``"FAIL"``,
    ``"INCONCLUSIVE"``, e.g. from :func:`interval_check`).

    Example::

        claim = Claim("asr", "ASR >= 95%", lambda t: (t.mean("asr") >= 0.95, "the ASR"))
        claim.evaluate(table).verdict
    """

    name: str
    text: str
    check: Callable[[ResultTable], tuple[bool | str, str]]

    def evaluate(self, table: ResultTable) -> ClaimResult:
        outcome, detail = self.check(table)
        if isinstance(outcome, str):
            return ClaimResult(self.name, self.text, outcome == "PASS", detail, outcome)
        return ClaimResult(self.name, self.text, bool(outcome), detail)


def paired(
    a: dict[int, float],
    b: dict[int, float],
    fn: Callable[[float, float], float] = lambda x, y: x - y,
) -> dict[int, float]:
    """``{seed: fn(a[seed], b[seed])}`` for the seeds both have (default: the difference
    ``a - b``): a method against its baseline on the same seed."""
    return {k: fn(a[k], b[k]) for k in sorted(set(a) & set(b))}


def noted(
    check: Callable[[ResultTable], tuple[bool | str, str]],
    note: Callable[[ResultTable], str],
    before: bool = False,
) -> Callable[[ResultTable], tuple[bool | str, str]]:
    """``check`` with ``note(table)`` (numbers that inform but do not decide) after its detail
    (``before``: in front of it)."""

    def with_note(table: ResultTable) -> tuple[bool | str, str]:
        outcome, detail = check(table)
        text = note(table)
        return outcome, f"{text}; {detail}" if before else f"{detail}; {text}"

    return with_note


def all_of(
    *checks: Callable[[ResultTable], tuple[bool | str, str]],
) -> Callable[[ResultTable], tuple[str, str]]:
    """A check that holds when every part does: FAIL if any part fails, PASS if all pass,
    INCONCLUSIVE otherwise; the details joined with ``"; "``.

    Example::

        Claim("both", "ASR >= 90% and C-Acc drop <= 2", all_of(asr_check, acc_check))
    """

    def check(table: ResultTable) -> tuple[str, str]:
        outcomes, details = [], []
        for part in checks:
            outcome, detail = part(table)
            if not isinstance(outcome, str):
                outcome = "PASS" if outcome else "FAIL"
            outcomes.append(outcome)
            details.append(detail)
        if "FAIL" in outcomes:
            result = "FAIL"
        elif all(o == "PASS" for o in outcomes):
            result = "PASS"
        else:
            result = "INCONCLUSIVE"
        return result, "; ".join(details)

    return check


def interval_check(
    values: Callable[[ResultTable], dict[int, float]],
    op: str,
    threshold: float,
    *,
    what: str,
    scale: float = 1.0,
    unit: str = "",
    digits: int = 2,
    examples: Callable[[ResultTable], dict[int, float]] | None = None,
) -> Callable[[ResultTable], tuple[str, str]]:
    """A claim's check on the mean over seeds of one number per seed, with its 95% bootstrap
    interval (:func:`~trustlab.metrics.stats.bootstrap_ci`) and the three-way verdict
    (:func:`~trustlab.metrics.stats.verdict`): ``values(table) -> {seed: value}`` (e.g. a paired
    difference), judged as ``mean OP threshold``; ``what`` names the number in the detail,
    ``scale``/``unit``/``digits`` format it. One seed gives no interval and the detail says so.

    ``examples(table) -> {seed: n}``: each value is a rate on ``n`` test examples (an attack
    success rate, an accuracy), and the interval covers the test set as well as the seeds (two
    levels; with one seed, the rate's Jeffreys interval). A table without a count for every
    seed (stored before the counts were kept) is judged over the seeds alone.

    Example::

        Claim("gain", "B beats A", interval_check(lambda t: diffs(t), ">", 0.0, what="B - A"))
        Claim("asr", "ASR >= 90%", interval_check(
            lambda t: t.per_seed("asr"), ">=", 0.9, what="ASR",
            examples=lambda t: t.per_seed("n_asr")))
    """
    from trustlab.metrics.stats import bootstrap_ci, verdict

    sign = "+" if threshold == 0 else ""  # a difference shows its sign

    def fmt(v: float) -> str:
        return f"{v * scale:{sign}.{digits}f}{unit}"

    def check(table: ResultTable) -> tuple[str, str]:
        per_seed = values(table)
        if not per_seed:
            return "INCONCLUSIVE", f"{what}: no values"
        order = sorted(per_seed)
        n = sum(1 for v in per_seed.values() if math.isfinite(v))  # NaNs are not seeds of it
        counts = examples(table) if examples is not None else {}
        if any(k not in counts for k in order):  # e.g. a table stored before counts were kept
            mean, lo, hi = bootstrap_ci([per_seed[k] for k in order])
            over = f"over {n} seeds" if n > 1 else ""
        else:
            mean, lo, hi = bootstrap_ci(
                [per_seed[k] for k in order], counts=[counts[k] for k in order]
            )
            sizes = sorted({int(counts[k]) for k in order})
            examples_text = f"{'/'.join(map(str, sizes))} test examples"
            over = f"over {n} seeds and {examples_text}" if n > 1 else f"over {examples_text}"
        outcome = verdict(lo, hi, op, threshold)
        seeds = "/".join(fmt(per_seed[k]) for k in order)
        where = f"95% interval [{fmt(lo)}, {fmt(hi)}] {over}" if over else "1 seed: no interval"
        return outcome, (
            f"{what} {fmt(mean)} ({where}; per seed {seeds}), needs {op} {fmt(threshold)}"
        )

    return check


class ResultTable:
    """Rows of per-seed metrics grouped by ``keys``; :meth:`summary` gives mean/std over seeds.

    Example::

        table = ResultTable(("model",), ("asr",), [{"model": "badnets", "seed": 0, "asr": 1.0}])
        table.mean("asr", model="badnets")
    """

    def __init__(self, keys: Sequence[str], metrics: Sequence[str], rows: Iterable[dict]) -> None:
        self.keys = tuple(keys)
        self.metrics = tuple(metrics)
        self.rows = [dict(r) for r in rows]

    def _groups(self) -> dict[tuple, list[dict]]:
        groups: dict[tuple, list[dict]] = {}
        for row in self.rows:
            groups.setdefault(tuple(row[k] for k in self.keys), []).append(row)
        return groups

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for key, rows in self._groups().items():
            entry: dict[str, Any] = dict(zip(self.keys, key, strict=True))
            entry["seeds"] = len(rows)
            for m in self.metrics:
                vals = [float(r[m]) for r in rows if m in r]
                entry[m] = statistics.fmean(vals) if vals else math.nan
                if len(vals) < 2:
                    entry[f"{m}_std"] = 0.0
                elif all(math.isfinite(v) for v in vals):
                    entry[f"{m}_std"] = statistics.pstdev(vals)
                else:  # statistics.pstdev fails on inf and NaN instead of returning NaN
                    entry[f"{m}_std"] = math.nan
                _, entry[f"{m}_lo"], entry[f"{m}_hi"] = bootstrap_ci(vals)
            out.append(entry)
        return out

    def mean(self, metric: str, **where: Any) -> float:
        """The mean over seeds of ``metric`` for the group matching ``where``."""
        rows = [r for r in self.rows if all(r.get(k) == v for k, v in where.items())]
        if not rows:
            raise KeyError(f"no rows match {where}")
        return statistics.fmean(float(r[metric]) for r in rows)

    def per_seed(self, metric: str, **where: Any) -> dict[int, float]:
        """``{seed: metric}`` of the rows matching ``where`` that have ``metric`` (what a claim
        judged per seed reads, e.g. ``table.per_seed("asr", model="badnets")``)."""
        return {
            int(r.get("seed", 0)): float(r[metric])
            for r in self.rows
            if metric in r and all(r.get(k) == v for k, v in where.items())
        }

    def has(self, **where: Any) -> bool:
        return any(all(r.get(k) == v for k, v in where.items()) for r in self.rows)

    def formatted(
        self, digits: int = 2, percent: Sequence[str] = ()
    ) -> tuple[list[str], list[list[str]]]:
        """``(columns, rows)`` of strings, as every table of a reproduction shows them: the keys,
        each metric as ``mean [lo, hi]``, the 95% bootstrap interval over seeds (just ``mean``
        for one seed; ``percent`` metrics times 100), the seed count; ``—`` where a metric does
        not apply to a row (no value, or NaN)."""
        cols = [*self.keys, *self.metrics, "seeds"]
        rows = []
        for e in self.summary():
            cells = [str(e[k]) for k in self.keys]
            for m in self.metrics:
                scale = 100.0 if m in percent else 1.0
                cells.append(format_interval(e[m], e[m + "_lo"], e[m + "_hi"], scale, digits))
            cells.append(str(e["seeds"]))
            rows.append(cells)
        return cols, rows

    def to_markdown(self, digits: int = 2, percent: Sequence[str] = ()) -> str:
        cols, rows = self.formatted(digits, percent)
        lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "metrics": self.metrics,
            "rows": self.rows,
            "summary": self.summary(),
        }


class Experiment:
    """Base class of a reproduction; subclasses set the class attributes and two methods.

    Example::

        exp = get_experiment("blind")  # a fresh instance of the registered subclass
        jobs = exp.jobs(exp.preset("smoke"))
    """

    name: str = ""
    title: str = ""
    paper: str = ""
    keys: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    percent: tuple[str, ...] = ()  # metrics shown as percentages
    presets: dict[str, Preset] = {}
    claims: tuple[Claim, ...] = ()
    workdir: Path | None = None  # the run folder's work/ while jobs and summarize run

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        raise NotImplementedError

    def summarize(
        self, preset: Preset, rows: list[dict[str, Any]], device: torch.device
    ) -> list[dict[str, Any]]:
        """The table's rows from the job rows (each with its job's keys, ``seed`` and metrics);
        by default the job rows themselves."""
        return rows

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        raise NotImplementedError

    def check(self, preset: Preset) -> None:
        """Fail fast, before a run is stored, on input the jobs would reject (by default: the
        preset's dataset must load, e.g. its files must be present, and the preset's model
        must fit it)."""
        from trustlab.models.spec import ModelSpec
        from trustlab.train.trainer import check_model_fits

        train = preset.load("train")
        test = preset.load("test")
        check_model_fits(ModelSpec.for_data(preset.model, train).build(), train, test)

    def work_path(self, name: str) -> Path:
        """``<run folder>/work/<name>``: where a job leaves what ``summarize`` reads."""
        if self.workdir is None:
            raise RuntimeError(
                f"the {self.name} reproduction runs through trustlab.experiments.reproduce, "
                "which sets its work folder."
            )
        return self.workdir / name

    def describe(self, preset: Preset) -> dict[str, Any]:
        """Extra facts recorded in the run's config (e.g. the loss weights actually used)."""
        return {}

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise InputError(
                f"experiment {self.name!r} has no preset {name!r}; use one of "
                f"{', '.join(self.presets)}."
            )
        return self.presets[name]

    def check_claims(self, table: ResultTable) -> list[ClaimResult]:
        return [c.evaluate(table) for c in self.claims]


@dataclass
class Reproduction:
    """What :func:`reproduce` returns: one preset of an experiment, run and checked.

    Attributes:
        experiment: the experiment's registered name (e.g. ``"blind"``).
        preset: the preset that ran, with the overrides applied (dataset, seeds, data root,
            options).
        table: the table of per-seed rows (:class:`ResultTable`).
        claims: each of the experiment's claims checked against the table
            (:class:`ClaimResult`).
        run: the stored ``reproduce`` run (:func:`reproduce` always sets it; ``None`` for one
            built by hand).

    :attr:`passed` is True when every claim passed (also when the experiment has none).

    Example::

        rep = reproduce("blind", "smoke")
        rep.passed
    """

    experiment: str
    preset: Preset
    table: ResultTable
    claims: list[ClaimResult]
    run: Run | None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.claims)


def train_model(
    preset: Preset,
    model_name: str,
    train: Any,
    seed: int,
    device: torch.device,
    *labels: object,
    test: Any = None,
    epochs: int | None = None,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """``(model, TrainResult)``: build ``model_name`` sized for ``train`` (initial weights from
    ``(seed, "init", *labels)``) and train it with ``preset.train`` (``epochs`` overrides its
    epochs; batch order from ``(seed, "train", *labels)``), evaluating on ``test`` if given."""
    from trustlab.models.spec import ModelSpec
    from trustlab.train import Trainer, TrainSettings
    from trustlab.utils.seed import derive_seed

    torch.manual_seed(derive_seed(seed, "init", *labels))
    model = ModelSpec.for_data(model_name, train, **model_kwargs).build()
    extra = {} if epochs is None else {"epochs": epochs}
    settings = TrainSettings(
        **{**preset.train, **extra, "seed": derive_seed(seed, "train", *labels)}
    )
    result = Trainer(model, settings, device=device, progress=False).fit(train, test)
    return model, result


def train_and_save(
    preset: Preset,
    model_name: str,
    train: Any,
    test: Any,
    seed: int,
    device: torch.device,
    path: Path,
    *labels: object,
    **model_kwargs: Any,
) -> float:
    """The usual job of a multi-stage reproduction: :func:`train_model`, then save the model
    with its spec to ``path``; returns the final test accuracy."""
    from trustlab.train.checkpoint import save_model

    model, result = train_model(
        preset, model_name, train, seed, device, *labels, test=test, **model_kwargs
    )
    save_model(model, path)
    return float(result.final["test_accuracy"])


# -- running jobs --------------------------------------------------------------------------------
def _experiment_job(
    exp: Experiment, preset: Preset, job: dict, seed: int, device: str
) -> dict[str, float]:
    """One job of a reproduction, wherever an executor runs it (this process, a local worker, a
    Ray worker): ``exp`` arrives with its work folder set; single-threaded on a CPU."""
    dev = torch.device(device)
    with single_threaded(dev):
        return exp.run_job(preset, job, seed, dev)


def default_workers(device: torch.device, n_jobs: int) -> int:
    if device.type != "cpu":
        return 1
    return max(1, min(n_jobs, os.cpu_count() or 1))


def register_experiment(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: register a reproduction in :data:`~trustlab.registry.EXPERIMENTS` under
    its ``name``, with its ``title`` as the card's description and its ``paper``."""
    if not cls.name or not cls.paper:
        raise ValueError(f"{cls.__name__} needs a name and a paper to be registered")
    presets = ", ".join(cls.presets)
    EXPERIMENTS.register(cls.name, cls.title, paper=cls.paper, threat="", presets=presets)(cls)
    return cls


def get_experiment(name: str) -> Experiment:
    """A fresh instance of the registered reproduction ``name``."""
    return EXPERIMENTS.get(name).factory()


def reproduce(
    name: str,
    preset: str = "quick",
    dataset: str | None = None,
    seeds: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    store: RunStore | None = None,
    progress: bool = True,
    seed: int = 0,
    resume: Run | None = None,
    data_root: str | None = None,
    options: dict[str, Any] | None = None,
    executor: str | Executor = "local",
) -> Reproduction:
    """Run an experiment's preset, check its claims, store the run; see the module docstring.

    Seeds ``seed, seed + 1, ...`` (``preset.seeds`` of them, or ``seeds``). ``resume`` continues
    a stored, reopened run of the same experiment and preset, skipping the jobs it finished.
    ``options`` overrides entries of the preset's options (e.g. the bench's attacks).
    ``executor`` runs the jobs: ``"local"`` (this machine's pool of ``workers`` processes),
    ``"ray"`` (a Ray cluster: ``$TRUSTLAB_RAY_ADDRESS``, else a local Ray; ``workers`` does not
    apply) or an :class:`~trustlab.utils.executor.Executor` (left open for its owner to close).
    Each job asks for one CPU, and one GPU on a CUDA device. The run records the executor.
    """
    exp = get_experiment(name)
    pre = exp.preset(preset).with_overrides(dataset, seeds, data_root)
    if options:
        pre = replace(pre, options={**pre.options, **options})
    dev = resolve_device(device)
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}.")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}.")
    jobs = [(job, seed + k) for job in exp.jobs(pre) for k in range(pre.seeds)]
    exp.check(pre)  # everything a job would reject, before anything is stored
    with contextlib.ExitStack() as owned:
        if isinstance(executor, Executor):
            if executor.name != "local" and workers is not None:
                raise InputError(
                    f"--workers sizes the local pool; with --executor {executor.name} the "
                    "cluster's free CPUs decide: drop --workers."
                )
            ex = executor
        else:
            local = str(executor).strip().lower() == "local"
            n_local = workers if workers is not None else default_workers(dev, len(jobs))
            ex = owned.enter_context(make_executor(executor, workers=n_local if local else workers))
        ex.start()  # a wrong cluster address fails here, before a run is stored
        return _reproduce_with(
            exp, pre, jobs, dev, ex, workers, store, progress, seed, resume, options
        )


def _reproduce_with(
    exp: Experiment,
    pre: Preset,
    jobs: list[tuple[dict[str, Any], int]],
    dev: torch.device,
    ex: Executor,
    workers: int | None,
    store: RunStore | None,
    progress: bool,
    seed: int,
    resume: Run | None,
    options: dict[str, Any] | None,
) -> Reproduction:
    name = exp.name
    started = time.perf_counter()
    config = {"experiment": name, "preset": pre.to_dict(), "seed": seed, **exp.describe(pre)}
    if options:
        config["overrides"] = dict(options)
    run = resume
    if run is None:
        store = store or RunStore()
        run = store.create_run(
            "reproduce",
            f"{name}-{pre.name}",
            {**config, "device": str(dev), "executor": ex.name},
            seed=seed,
        )
    else:
        stored = {k: run.config.get(k) for k in config}
        if json.dumps(stored, sort_keys=True, default=str) != json.dumps(
            json.loads(json.dumps(config, default=str)), sort_keys=True
        ):
            raise InputError(
                f"run {run.id} was made with another experiment, preset or seed than this "
                "code defines now; its rows cannot be reused. Start a new reproduction."
            )
        run.reopen()
    # a stored row is (job index -> metrics); the job's keys come from the preset, which a
    # resumed run shares, so only numbers go to the store
    rows: dict[int, dict] = {}
    for r in run.metrics(phase="row"):
        i = int(r["step"])
        if i < len(jobs):
            metrics = {k: v for k, v in r.items() if k not in ("step", "phase", "seed")}
            rows[i] = {**jobs[i][0], "seed": jobs[i][1], **metrics}
    todo = [i for i in range(len(jobs)) if i not in rows]

    def record(i: int, metrics: dict) -> None:
        job, seed = jobs[i]
        rows[i] = {**job, "seed": seed, **metrics}
        run.log_metrics(i, {"seed": seed, **metrics}, phase="row")

    with recording_outcome(run):
        exp.workdir = run.dir / "work"
        exp.workdir.mkdir(exist_ok=True)
        try:
            _run_jobs(exp, pre, jobs, todo, dev, ex, progress, record)
        except WorkerLost as exc:
            what = ""
            if isinstance(exc.key, int) and 0 <= exc.key < len(jobs):
                job, job_seed = jobs[exc.key]
                what = f"The lost job: {json.dumps(job, default=str)}, seed {job_seed}. "
            raise WorkerLost(
                f"{exc} {what}The finished jobs are stored: trustlab resume {run.id}",
                key=exc.key,
            ) from exc
        with single_threaded(dev):
            table_rows = exp.summarize(pre, [rows[i] for i in sorted(rows)], dev)
        table = ResultTable(exp.keys, exp.metrics, table_rows)
        claims = exp.check_claims(table)
        write_json_atomic(run.artifact_path("table.json"), table.to_json())
        run.add_artifact("table.json", kind="table")
        text = render_markdown(exp, pre, table, claims)
        write_text_atomic(run.artifact_path("report.md"), text)
        run.add_artifact("report.md", kind="report")
        if ex.name == "local":
            n_workers = workers if workers is not None else default_workers(dev, len(todo))
        else:
            n_workers = ex.workers
        run.finish(
            {
                "passed": all(c.passed for c in claims),
                # this invocation's wall time (a resumed run: only what was left), its workers
                "wall_s": round(time.perf_counter() - started, 1),
                "workers": n_workers,
                "executor": ex.name,
                "resumed": resume is not None,
                "claims": {
                    c.claim: {"passed": c.passed, "verdict": c.verdict, "detail": c.detail}
                    for c in claims
                },
            }
        )
    return Reproduction(name, pre, table, claims, run)


def _run_jobs(
    exp: Experiment,
    pre: Preset,
    jobs: list,
    todo: list[int],
    dev: torch.device,
    ex: Executor,
    progress: bool,
    record: Callable[[int, dict], None],
) -> None:
    """Every job of ``todo`` through ``ex``, each row recorded here as its job returns; the
    first failure stops the rest, keeping every row that finished (the executor's contract)."""
    need = Resources.for_device(dev)
    device = ex.job_device(dev)
    tasks = [
        Task(_experiment_job, (exp, pre, jobs[i][0], jobs[i][1], device), key=i, resources=need)
        for i in todo
    ]
    with (
        progress_bar(f"{exp.name} ({pre.name})", len(todo), progress) as bar,
        contextlib.closing(ex.as_completed(tasks)) as results,
    ):
        for i, metrics in results:
            record(i, metrics)
            bar.advance()


def render_markdown(
    exp: Experiment, pre: Preset, table: ResultTable, claims: list[ClaimResult]
) -> str:
    lines = [
        f"# {exp.title} ({exp.name}, preset {pre.name})",
        "",
        exp.paper,
        "",
        f"dataset `{pre.dataset}`, model `{pre.model}`, {pre.seeds} seed(s), "
        f"training {json.dumps(pre.train, sort_keys=True)}",
        "",
        table.to_markdown(percent=exp.percent),
        "",
        "## Claims",
        "",
    ]
    for c in claims:
        lines.append(f"- **{c.verdict}** {c.text}: {c.detail}")
    return "\n".join(lines) + "\n"


def resume_reproduction(
    run: Run,
    device: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    executor: str | Executor | None = None,
) -> Reproduction:
    """Finish an interrupted or failed ``reproduce`` run: the jobs it stored are kept, the rest
    run, with ``executor`` (default: the one the run was made with; either works)."""
    cfg = run.config
    pre = cfg["preset"]
    return reproduce(  # checks everything, then reopens the run
        cfg["experiment"],
        pre["name"],
        dataset=pre["dataset"],
        seeds=pre["seeds"],
        device=device or cfg.get("device", "auto"),
        workers=workers,
        progress=progress,
        seed=int(cfg.get("seed", 0)),
        resume=run,
        data_root=pre.get("options", {}).get("data_root"),
        options=cfg.get("overrides"),
        executor=executor if executor is not None else cfg.get("executor", "local"),
    )


def list_experiments() -> list[dict[str, Any]]:
    out = []
    for entry in sorted(EXPERIMENTS, key=lambda c: c.name):
        exp = entry.factory()
        out.append(
            {
                "name": exp.name,
                "title": exp.title,
                "paper": exp.paper,
                "presets": {k: p.description for k, p in exp.presets.items()},
                "claims": [c.text for c in exp.claims],
            }
        )
    return out
