"""The leaderboard: one static site built from the results store, and a local server for it.

:func:`build_site` writes five pages with :mod:`trustlab.results.html` (inline styles, sortable
tables, plots embedded as PNGs, relative links between the pages: the folder opens offline and
can be copied anywhere):

- ``index.html``: the overview (how many reproductions pass, the newest backdoor matrix, each
  benchmark's number of submissions and its leader) and links to the other pages;
- ``reproductions.html``: the stored reproductions (the newest finished run of each experiment
  and preset, :func:`trustlab.experiments.results.reproduction_results`), one row per claim:
  the paper's claim, the measured numbers, the verdict, seeds, wall time, date and commit;
- ``backdoor.html``: the attack x defense matrix of the newest finished ``bench-backdoor`` run
  (read from its stored ``table.json``) and the submissions to the ``backdoor-quick``
  benchmark;
- ``robustness.html`` and ``privacy.html``: every submission to the ``robustness-quick`` and
  ``privacy-quick`` benchmarks, ranked by the benchmark's primary metric, each score as
  ``mean [lo, hi]`` (the interval over seeds), with a plot of the scores and their intervals;
  failed submissions are listed separately with the reason.

The site is built in a temporary folder next to ``out_dir`` and swapped into place in one step
(on Linux an atomic exchange of the two folders), so a reader (a browser, :func:`serve`) never
sees a half-built site. A folder that holds anything other than a site built here is never
replaced.

:func:`serve` (and :class:`LeaderboardServer`) serve the folder over HTTP on this machine and
rebuild it when new results land in the store.

Example:
    >>> from trustlab.results import RunStore
    >>> index = build_site(RunStore("runs"), "site")  # doctest: +SKIP
    >>> serve(RunStore("runs"), "site", port=8000)  # Ctrl-C stops  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustlab.errors import InputError
from trustlab.results import Run, RunStore
from trustlab.results.html import (
    Cell,
    Raw,
    badge,
    esc,
    figure,
    key_values,
    nav,
    page,
    paragraph,
    section,
    table,
    write_page,
)
from trustlab.utils.format import NOT_APPLICABLE, format_interval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from trustlab.experiments.results import ReproductionResult

__all__ = [
    "BENCHMARK_PAGES",
    "PAGES",
    "BenchRun",
    "LeaderboardServer",
    "Submission",
    "Leaderboard",
    "bench_run",
    "build_site",
    "leaderboards",
    "serve",
    "submissions",
]

#: the site's pages, in the order of the navigation bar: (file, title)
PAGES = (
    ("index.html", "Overview"),
    ("reproductions.html", "Reproductions"),
    ("backdoor.html", "Backdoor"),
    ("robustness.html", "Robustness"),
    ("privacy.html", "Privacy"),
)
#: which page lists the submissions to each benchmark
BENCHMARK_PAGES = {
    "backdoor-quick": "backdoor.html",
    "robustness-quick": "robustness.html",
    "privacy-quick": "privacy.html",
}
#: how a participant submits to each benchmark (shown where a benchmark has no entry yet)
HOW_TO_SUBMIT = {
    "backdoor-quick": "trustlab submit --defense my_module:MyDefense --benchmark backdoor-quick",
    "robustness-quick": "trustlab submit --model model.safetensors --arch my_net.py:Net "
    "--benchmark robustness-quick",
    "privacy-quick": "trustlab submit --defense my_module:MyDefense --benchmark privacy-quick",
}
BENCH_EXPERIMENT = "bench-backdoor"
SUBMISSION_KIND = "submission"
#: the file that marks a folder as a site built here (only such a folder is ever replaced)
MARKER = ".trustlab-leaderboard"
#: at most this many submissions in a benchmark's plot (the table lists every one)
PLOT_ROWS = 25


# --------------------------------------------------------------------------------------------
# What the site shows, read from the store
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """One submission record of the store (a run of kind ``"submission"``), as the leaderboard
    shows it.

    Attributes:
        run_id: the record's run id.
        benchmark: the benchmark's name (e.g. ``"robustness-quick"``).
        label: the participant's label for the submission.
        kind: ``"defense"`` or ``"model"``.
        ref: what was submitted (e.g. ``"my_module:MyDefense"``).
        version, benchmark_hash: the benchmark's version and the hash of its definition.
        status: ``"finished"``, ``"failed"`` or ``"running"``.
        date: when it ended (ISO 8601, UTC), or when it was last updated.
        scores: ``{metric: {"mean", "lo", "hi", "values"}}`` (finished ones).
        primary: the metric the benchmark ranks by (None when not recorded).
        higher_is_better: ``{metric: bool}``.
        wall_s: the evaluation's wall time in seconds, or None.
        failure, reason, traceback: why a failed one failed (``"raised"``, ``"timeout"``,
            ``"memory"`` or ``"malformed"``; the reason in words; the traceback summary).
        cache_key: the record's cache key ("" when not recorded).
    """

    run_id: int
    benchmark: str
    label: str
    kind: str
    ref: str
    version: str
    benchmark_hash: str
    status: str
    date: str
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    primary: str | None = None
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    wall_s: float | None = None
    failure: str | None = None
    reason: str | None = None
    traceback: str | None = None
    cache_key: str = ""

    @property
    def version_text(self) -> str:
        """``"1.0 (3fa2b1c)"``: the benchmark version and the first 7 hex digits of its hash."""
        short = self.benchmark_hash[:7]
        return f"{self.version} ({short})" if short else self.version

    def mean(self, metric: str) -> float | None:
        """The mean of ``metric`` (None when it has none, or it is not a finite number)."""
        value = (self.scores.get(metric) or {}).get("mean")
        return _number(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any, default: str = "") -> str:
    return default if value is None else str(value)


def _flags(value: Any) -> dict[str, bool]:
    return {str(k): bool(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _as_submission(run: Run) -> Submission:
    """A submission record read defensively: a field missing from a record shows as empty,
    never stops the site from being built."""
    config = run.config if isinstance(run.config, dict) else {}
    sub = config.get("submission") if isinstance(config.get("submission"), dict) else {}
    summary = run.summary if isinstance(run.summary, dict) else {}
    benchmark = _text(config.get("benchmark"), run.name.split("/", 1)[0])
    label = _text(sub.get("label")) or (run.name.split("/", 1)[-1] if "/" in run.name else run.name)
    scores = summary.get("scores") if isinstance(summary.get("scores"), dict) else {}
    higher = summary.get("higher_is_better")
    return Submission(
        run_id=run.id,
        benchmark=benchmark,
        label=label,
        kind=_text(sub.get("kind")),
        ref=_text(sub.get("ref")),
        version=_text(config.get("benchmark_version"), "?"),
        benchmark_hash=_text(config.get("benchmark_hash")),
        status=run.status,
        date=run.ended or run.updated,
        scores={k: v for k, v in scores.items() if isinstance(v, dict)},
        primary=_text(summary.get("primary")) or None,
        higher_is_better=_flags(higher),
        wall_s=_number(summary.get("wall_s")),
        failure=_text(summary.get("failure")) or None,
        reason=_text(summary.get("reason")) or run.error or None,
        traceback=_text(summary.get("traceback")) or None,
        cache_key=_text(config.get("cache_key")),
    )


def submissions(store: RunStore, benchmark: str | None = None) -> list[Submission]:
    """The submission records of ``store`` (newest first), optionally of one ``benchmark``.

    Records with the same cache key (one submission evaluated again on the same benchmark
    version) are shown once: the newest finished one, else the newest. Interrupted evaluations
    are left out (they have no result and no failure to report).

    Args:
        store: the results store.
        benchmark: only this benchmark's submissions (default None: all).

    Example:
        >>> [s.label for s in submissions(RunStore("runs"), "robustness-quick")]  # doctest: +SKIP
        ['my-resnet', 'baseline']
    """
    if SUBMISSION_KIND not in store.kinds():
        return []
    records = [_as_submission(r) for r in store.list(kind=SUBMISSION_KIND)]
    records = [
        s for s in records
        if s.status in ("finished", "failed", "running")
        and (benchmark is None or s.benchmark == benchmark)
    ]  # fmt: skip
    chosen: dict[str, Submission] = {}
    out: list[Submission] = []
    for s in records:  # newest first
        if not s.cache_key:
            out.append(s)
            continue
        kept = chosen.get(s.cache_key)
        if kept is None or (kept.status != "finished" and s.status == "finished"):
            chosen[s.cache_key] = s
    out.extend(chosen.values())
    return sorted(out, key=lambda s: -s.run_id)


def _ranked_by(s: Submission) -> str | None:
    """The metric a finished submission is ranked by: its record's primary (a benchmark may
    rank by another metric for another kind of submission, e.g. detectors by AUROC), else its
    first score."""
    return s.primary or next(iter(s.scores), None)


@dataclass(frozen=True)
class Leaderboard:
    """The finished submissions to one benchmark that are ranked by one metric, best first.

    Attributes:
        benchmark: the benchmark's name.
        primary: the metric they are ranked by (None: no submission has a score).
        higher_is_better: the metric's direction.
        ranked: the submissions, best first (one without the metric last; ties: the earlier).
    """

    benchmark: str
    primary: str | None
    higher_is_better: bool
    ranked: list[Submission]

    @property
    def metrics(self) -> list[str]:
        """Every metric of the ranked submissions, the primary one first, then in order of
        appearance."""
        seen = dict.fromkeys([self.primary] if self.primary else [])
        for s in self.ranked:
            seen.update(dict.fromkeys(s.scores))
        return list(seen)


def leaderboards(subs: Sequence[Submission]) -> list[Leaderboard]:
    """The finished submissions of one benchmark (``subs``, from :func:`submissions`) ranked:
    one :class:`Leaderboard` per metric they are ranked by (usually one; the largest first).
    The direction of a metric is the records' ``higher_is_better``.

    Example:
        >>> (board,) = leaderboards(submissions(store, "privacy-quick"))  # doctest: +SKIP
        >>> board.primary, board.ranked[0].label
        ('advantage', 'jem')
    """
    groups: dict[str | None, list[Submission]] = {}
    for s in subs:
        if s.status == "finished":
            groups.setdefault(_ranked_by(s), []).append(s)
    out = []
    for metric, group in groups.items():
        higher = next(
            (s.higher_is_better[metric] for s in group if metric in s.higher_is_better), True
        )

        def key(s: Submission, metric: str | None = metric, higher: bool = higher) -> tuple:
            value = s.mean(metric) if metric else None
            if value is None:
                return (1, 0.0, s.date)
            return (0, -value if higher else value, s.date)

        benchmark = group[0].benchmark
        out.append(Leaderboard(benchmark, metric, higher, sorted(group, key=key)))
    return sorted(out, key=lambda b: (-len(b.ranked), b.primary or ""))


@dataclass(frozen=True)
class BenchRun:
    """The newest finished ``bench-backdoor`` run: its stored table and where it came from.

    Attributes:
        run_id, preset, dataset, model, seeds: the run and its preset.
        rows: the rows of its stored ``table.json`` (one per attack, defense and seed).
        date, commit: when it ended and the git commit (7 hex digits) it was made with.
        problem: why its table could not be read (None when it was).
    """

    run_id: int
    preset: str
    dataset: str
    model: str
    seeds: int
    rows: list[dict[str, Any]]
    date: str
    commit: str
    problem: str | None = None


def bench_run(store: RunStore) -> BenchRun | None:
    """The newest finished ``bench-backdoor`` run of ``store`` with its stored table (None:
    there is none). A table that cannot be read is reported in ``problem``.

    Example:
        >>> bench_run(RunStore("runs")).rows[0]["attack"]  # doctest: +SKIP
        'badnets'
    """
    for run in store.list(status="finished", kind="reproduce"):
        if run.config.get("experiment") != BENCH_EXPERIMENT:
            continue
        preset = run.config.get("preset") or {}
        rows: list[dict[str, Any]] = []
        problem = None
        try:
            stored = json.loads((run.dir / "table.json").read_text())
            rows = [r for r in stored.get("rows", []) if isinstance(r, dict)]
        except (OSError, ValueError, AttributeError) as exc:
            problem = f"its table {run.dir / 'table.json'} cannot be read ({exc})"
        return BenchRun(
            run_id=run.id,
            preset=str(preset.get("name", "?")),
            dataset=str(preset.get("dataset", "?")),
            model=str(preset.get("model", "?")),
            seeds=int(preset.get("seeds", 0) or 0),
            rows=rows,
            date=run.ended or run.updated,
            commit=(run.git_commit or "")[:7],
            problem=problem,
        )
    return None


# --------------------------------------------------------------------------------------------
# Pieces of the pages
# --------------------------------------------------------------------------------------------


def _when(stamp: str | None) -> Cell:
    """A UTC time as ``2026-12-02 12:38``, sorted by its ISO text."""
    if not stamp:
        return Cell(NOT_APPLICABLE)
    try:
        shown = datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        shown = stamp
    return Cell(shown, stamp)


#: decimals of a score: what :func:`~trustlab.utils.format.format_value` writes (``trustlab
#: submit``, the run report), so one number reads the same in every view
SCORE_DIGITS = 4


def _score(score: dict[str, Any] | None) -> Cell:
    """``mean [lo, hi]`` (the mean alone for one seed) with the project's formatter, sorted by
    the stored mean itself."""
    score = score or {}
    mean = _number(score.get("mean"))
    if mean is None:
        return Cell(NOT_APPLICABLE)
    lo, hi = _number(score.get("lo")), _number(score.get("hi"))
    return Cell(format_interval(mean, lo, hi, digits=SCORE_DIGITS), mean)


def _seconds(wall_s: float | None) -> Cell:
    if wall_s is None:
        return Cell(NOT_APPLICABLE)
    minutes, seconds = divmod(int(round(wall_s)), 60)
    return Cell(f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s", wall_s)


def _details(summary: str, body: str | None) -> str:
    """A collapsed block (``<details>``): ``summary`` shown, ``body`` (preformatted) on click."""
    if not body:
        return summary
    return Raw(f"<details><summary>{esc(summary)}</summary><pre>{esc(body)}</pre></details>")


def _nothing(what: str, how: Iterable[str]) -> str:
    """The note of an empty section: what is missing and the commands that add it."""
    cmds = "".join(f"<pre>{esc(c)}</pre>" for c in how)
    return Raw(f'<p class="note">{esc(what)}</p>{cmds}')


def _scores_figure(ranked: Sequence[Submission], metrics: Sequence[str]) -> Figure:
    """One panel per metric: each submission's mean with its interval as an error bar, the
    best (by the primary metric) at the top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from trustlab.results.plots import COLOURS, DPI

    shown = list(ranked[:PLOT_ROWS])
    n = len(shown)
    fig = Figure(figsize=(3.4 * len(metrics) + 1.6, 0.32 * n + 1.3), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    ys = list(range(n - 1, -1, -1))
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=True)):
        colour = tuple(c / 255 for c in COLOURS[i % len(COLOURS)])
        for y, s in zip(ys, shown, strict=True):
            score = s.scores.get(metric) or {}
            mean = _number(score.get("mean"))
            if mean is None:
                continue
            lo, hi = _number(score.get("lo")), _number(score.get("hi"))
            err = [[mean - lo if lo is not None else 0.0], [hi - mean if hi is not None else 0.0]]
            ax.errorbar([mean], [y], xerr=err, fmt="o", color=colour, capsize=3, markersize=4)
        higher = next((s.higher_is_better[metric] for s in shown
                       if metric in s.higher_is_better), True)  # fmt: skip
        ax.set_title(f"{metric} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.set_xlabel("mean and 95% interval over seeds", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    labels = [s.label if len(s.label) <= 28 else s.label[:27] + "…" for s in shown]
    axes[0].set_yticks(ys, labels)
    axes[0].set_ylim(-0.7, n - 0.3)
    fig.tight_layout()
    return fig


def _current(benchmark: str) -> Any:
    """The registered benchmark ``benchmark`` (its current definition), or None."""
    from trustlab.platform.benchmarks import get_benchmark

    try:
        return get_benchmark(benchmark)
    except InputError:
        return None


def _version(s: Submission, current: Any) -> Cell:
    """The benchmark version a submission was scored on, marked when it is not the current
    definition (its scores then compare with the others' only loosely)."""
    text = s.version_text
    if current is not None and s.benchmark_hash and s.benchmark_hash != current.hash:
        text += " (earlier)"
    return Cell(text, s.version)


def _definition(current: Any) -> str:
    """The benchmark's current definition in a few lines."""
    metrics = ", ".join(
        f"{m.name} ({'higher' if m.higher_is_better else 'lower'} is better)"
        for m in current.metrics
    )
    return key_values(
        [("benchmark", f"{current.name}: {current.description}"),
         ("version", f"{current.version} ({current.hash[:7]})"),
         ("takes", current.takes), ("seeds", ", ".join(map(str, current.seeds))),
         ("scores", metrics)]
    )  # fmt: skip


def _board_part(board: Leaderboard, table_id: str, several: bool) -> str:
    """One ranked table with its plot."""
    metrics = board.metrics
    direction = "higher" if board.higher_is_better else "lower"
    header = ["rank", "submission", "kind", *metrics, "seeds", "wall time", "date",
              "benchmark version", "run"]  # fmt: skip
    current = _current(board.benchmark)
    rows = []
    for position, s in enumerate(board.ranked, 1):
        seeds = max((len((s.scores.get(m) or {}).get("values") or []) for m in metrics),
                    default=0)  # fmt: skip
        rows.append(
            [position, Cell(s.label, s.label.lower()), s.kind or NOT_APPLICABLE,
             *(_score(s.scores.get(m)) for m in metrics), seeds, _seconds(s.wall_s),
             _when(s.date), _version(s, current), s.run_id]
        )  # fmt: skip
    n = len(board.ranked)
    plot = figure(
        _scores_figure(board.ranked, metrics),
        f"{board.benchmark} scores ranked by {board.primary}",
        "Each submission's scores with their 95% intervals"
        + (f" (the best {PLOT_ROWS} by {board.primary})" if n > PLOT_ROWS else ""),
    )
    ranked_by = f"Ranked by {board.primary} ({direction} is better)."
    if several:
        return section(
            f"Ranked by {board.primary}", table(header, rows, table_id=table_id), plot,
            note=f"{ranked_by} Submissions of this kind report {board.primary} as their "
            "primary score.",
        )  # fmt: skip
    return Raw(paragraph(ranked_by) + table(header, rows, table_id=table_id) + plot)


def _benchmark_section(benchmark: str, subs: Sequence[Submission]) -> str:
    """A benchmark's leaderboard: the ranked table, the plot, the failed submissions."""
    ident = benchmark.replace("_", "-")
    title = f"{benchmark} submissions"
    current = _current(benchmark)
    about = [_definition(current)] if current is not None else []
    if not subs:
        return section(
            title,
            *about,
            _nothing(
                f"No submission to {benchmark} yet. Submit one, then rebuild the site:",
                [
                    HOW_TO_SUBMIT.get(benchmark, f"trustlab submit --benchmark {benchmark}"),
                    "trustlab leaderboard --out site/",
                ],
            ),  # fmt: skip
            section_id=ident,
        )
    boards = leaderboards(subs)
    failed = [s for s in subs if s.status == "failed"]
    running = [s for s in subs if s.status == "running"]
    parts: list[str] = [*about]
    note = (
        "Each score is the mean over the benchmark's seeds with its 95% interval in brackets. "
        "Scores compare within one benchmark version (its hash covers the attacks, data, seeds "
        "and budget)."
    )
    for board in boards:
        table_id = f"{ident}-leaderboard"
        if len(boards) > 1:
            table_id += f"-{board.primary}"
        parts.append(_board_part(board, table_id, several=len(boards) > 1))
    if not boards:
        parts.append(paragraph("No submission has finished yet."))
    if running:
        parts.append(paragraph(f"{len(running)} submission(s) being evaluated now."))
    if failed:
        rows = [
            [Cell(s.label, s.label.lower()), s.kind or NOT_APPLICABLE,
             s.failure or NOT_APPLICABLE, _details(s.reason or "no reason recorded", s.traceback),
             _when(s.date), _version(s, current), s.run_id]
            for s in failed
        ]  # fmt: skip
        parts.append(
            section(
                f"{benchmark}: failed submissions",
                table(
                    ["submission", "kind", "failure", "reason", "date", "benchmark version", "run"],
                    rows,
                    table_id=f"{ident}-failed",
                ),  # fmt: skip
                note="Recorded with the reason (click it for the traceback summary); they are "
                "not ranked.",
            )
        )
    return section(title, *parts, section_id=ident, note=note)


def _claim_texts(experiment: str) -> dict[str, str]:
    """``{claim name: the claim in words}`` of a registered experiment ({} when unknown)."""
    from trustlab.experiments.base import get_experiment

    try:
        return {c.name: c.text for c in get_experiment(experiment).claims}
    except (InputError, KeyError, AttributeError):
        return {}


def _papers(experiments: Iterable[str]) -> list[tuple[str, str, str]]:
    from trustlab.experiments.base import get_experiment

    out = []
    for name in experiments:
        try:
            exp = get_experiment(name)
        except (InputError, KeyError):
            continue
        out.append((name, exp.title, exp.paper))
    return out


# --------------------------------------------------------------------------------------------
# The pages
# --------------------------------------------------------------------------------------------


def _page(file: str, title: str, *parts: str, subtitle: str = "") -> str:
    links = [(f, t if f != file else f"[{t}]") for f, t in PAGES]
    return page(f"trustlab leaderboard: {title}", nav(links), *parts, subtitle=subtitle)


#: what a smoke preset is for (said wherever one may be taken for a result)
SMOKE_NOTE = (
    "smoke presets only check that the pipeline runs; they use a fraction of the claim's "
    "data and training, so their verdicts do not test the claim"
)
SMOKE_MARK = "pipeline check"


def _smoke(results: Iterable[ReproductionResult]) -> list[ReproductionResult]:
    """The reproductions made with a smoke preset."""
    return [r for r in results if r.preset == "smoke"]


def _preset(r: ReproductionResult) -> Cell:
    """``quick (digits, cnn-small)``, a smoke preset marked as a pipeline check; sorted by the
    preset's name."""
    text = f"{r.preset} ({r.dataset}, {r.model})"
    if r.preset == "smoke":
        text += f": {SMOKE_MARK}"
    return Cell(text, r.preset)


def _reproductions_page(results: Sequence[ReproductionResult]) -> str:
    if not results:
        body = section(
            "Reproductions",
            _nothing(
                "No finished reproduction in the store yet. Reproduce a paper's claim with a "
                "quick preset (sce: about 4 minutes on 2 CPU cores; advtrojan: about 3), then "
                f"rebuild the site. Note: {SMOKE_NOTE}.",
                ["trustlab reproduce sce --preset quick", "trustlab leaderboard --out site/"],
            ),
            section_id="reproductions",
        )
        return _page("reproductions.html", "reproductions", body)
    rows = []
    for r in results:
        texts = _claim_texts(r.experiment)
        for c in r.claims:
            rows.append(
                [r.experiment, _preset(r),
                 texts.get(c.claim, c.text), Cell(badge(c.verdict), c.verdict), c.detail,
                 r.seeds, Cell(r.wall, r.wall_s), _when(r.ended), r.commit or "?", r.run_id]
            )  # fmt: skip
    header = ["experiment", "preset", "paper claim", "verdict", "measured", "seeds",
              "wall time", "date", "commit", "run"]  # fmt: skip
    body = section(
        "Reproductions",
        table(header, rows, table_id="reproductions-table"),
        section_id="reproductions",
        note="The newest finished run of each experiment and preset; one row per claim. "
        "INCONCLUSIVE: the 95% interval straddles the claim's threshold."
        + (f" Rows marked {SMOKE_MARK!r}: {SMOKE_NOTE}." if _smoke(results) else ""),
    )
    papers = _papers(dict.fromkeys(r.experiment for r in results))
    refs = section(
        "Papers",
        table(["experiment", "title", "paper"], papers, sortable=False, table_id="papers-table"),
        section_id="papers",
    )
    return _page("reproductions.html", "reproductions", body, refs)


def _matrix_cell(text: str) -> Cell:
    """A matrix cell sorted by its number ("97.8%" by 97.8; "—" has none)."""
    try:
        return Cell(text, float(text.rstrip("%")))
    except ValueError:
        return Cell(text)


def _backdoor_page(bench: BenchRun | None, subs: Sequence[Submission]) -> str:
    if bench is None:
        matrix_part = section(
            "Attack x defense matrix",
            _nothing(
                "No finished backdoor bench in the store yet. Run it (smoke: seconds; quick: "
                "minutes on 2 cores), then rebuild the site:",
                ["trustlab bench backdoor --preset quick", "trustlab leaderboard --out site/"],
            ),
            section_id="matrix",
        )
    else:
        where = (
            f"run {bench.run_id}: preset {bench.preset} ({bench.dataset}, {bench.model}, "
            f"{bench.seeds} seed(s)), {_when(bench.date).text} UTC, commit {bench.commit or '?'}"
        )
        if bench.problem or not bench.rows:
            parts = [paragraph(f"Run {bench.run_id}: {bench.problem or 'its table is empty'}.",
                               cls="warning")]  # fmt: skip
        else:
            from trustlab.experiments.bench_backdoor import matrix

            header, lines = matrix(bench.rows)
            rows = [[line[0], *(_matrix_cell(c) for c in line[1:])] for line in lines]
            parts = [
                table(header, rows, table_id="backdoor-matrix", row_headers=True),
                paragraph(
                    "Attacks down, defenses across; each cell is the defense's headline number "
                    "(the mean over seeds). C-Acc and ASR are the attacked model's on the "
                    "evaluation half of the test split; every number of every cell is in the "
                    "run's table.json and report.md."
                ),
            ]
        matrix_part = section(
            "Attack x defense matrix", *parts, section_id="matrix", note=f"The newest: {where}."
        )
    return _page("backdoor.html", "backdoor", matrix_part,
                 _benchmark_section("backdoor-quick", subs))  # fmt: skip


def _benchmark_page(file: str, title: str, benchmark: str, subs: Sequence[Submission]) -> str:
    return _page(file, title, _benchmark_section(benchmark, subs))


def _index_page(
    results: Sequence[ReproductionResult],
    bench: BenchRun | None,
    by_benchmark: dict[str, list[Submission]],
    built: str,
) -> str:
    claims = [c for r in results for c in r.claims]
    counts = {v: sum(c.verdict == v for c in claims) for v in ("PASS", "FAIL", "INCONCLUSIVE")}
    smoke = sum(len(r.claims) for r in _smoke(results))
    smoke_note = (
        [paragraph(f"{smoke} of these claims come from smoke presets: {SMOKE_NOTE}.")]
        if smoke
        else []
    )
    repro = section(
        "Reproductions",
        key_values(
            [("experiments and presets", len(results)), ("claims", len(claims)),
             *((Raw(badge(v)), n) for v, n in counts.items())]
        ) if results else paragraph("No reproduction yet."),
        *smoke_note,
        Raw('<p><a href="reproductions.html">Every claim with its measured numbers</a></p>'),
        section_id="reproductions",
        note="Each paper's headline claim reproduced: the paper's claim next to the measured "
        "numbers, with a verdict.",
    )  # fmt: skip
    if bench is None:
        bench_text = paragraph("No backdoor bench yet.")
    else:
        attacks = len(dict.fromkeys(r.get("attack") for r in bench.rows))
        defenses = len(dict.fromkeys(r.get("defense") for r in bench.rows))
        bench_text = key_values(
            [("run", bench.run_id), ("preset", f"{bench.preset} ({bench.dataset}, {bench.model})"),
             ("attacks x defenses", f"{attacks} x {defenses}"),
             ("date", _when(bench.date).text)]
        )  # fmt: skip
    backdoor = section(
        "Backdoor attacks x defenses",
        bench_text,
        Raw('<p><a href="backdoor.html">The matrix and the backdoor-quick submissions</a></p>'),
        section_id="backdoor",
    )
    rows = []
    for benchmark, file in BENCHMARK_PAGES.items():
        subs = by_benchmark.get(benchmark, [])
        link = Raw(f'<a href="{esc(file)}#{esc(benchmark)}">{esc(benchmark)}</a>')
        failed = sum(s.status == "failed" for s in subs)
        boards_of = leaderboards(subs) or [Leaderboard(benchmark, None, True, [])]
        for i, board in enumerate(boards_of):
            leader = board.ranked[0] if board.ranked else None
            rows.append(  # the failed ones counted once, on the benchmark's first row
                [link, len(board.ranked), failed if i == 0 else "",
                 leader.label if leader else NOT_APPLICABLE,
                 board.primary or NOT_APPLICABLE,
                 _score(leader.scores.get(board.primary)) if leader and board.primary
                 else NOT_APPLICABLE]
            )  # fmt: skip
    boards = section(
        "Benchmarks",
        table(
            ["benchmark", "ranked", "failed", "leader", "primary metric", "leader's score"],
            rows,
            table_id="benchmarks-table",
            sortable=False,
        ),  # fmt: skip
        paragraph(
            "A benchmark whose submissions are ranked by different metrics (e.g. repairers by "
            "DER, detectors by AUROC) has one row per metric; its failed submissions are "
            "counted once, on its first row."
        ),
        paragraph(
            "A submission (a defense or a model) is evaluated against a fixed, versioned "
            "benchmark in a separate process with a time and memory limit; failures are "
            "recorded with their reason."
        ),
        section_id="benchmarks",
    )
    return _page("index.html", "overview", repro, backdoor, boards,
                 subtitle=f"Built from the results store at {built} UTC.")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Building the site: into a temporary folder, then swapped into place
# --------------------------------------------------------------------------------------------


def _check_out_dir(out: Path) -> None:
    for parent in reversed(out.parents):  # e.g. --out notes.txt/site
        if parent.exists() and not parent.is_dir():
            raise InputError(
                f"{parent} is a file, so the site folder {out} cannot be made inside it; pass "
                "a folder whose parent is a folder (e.g. --out site/)."
            )
    if out.is_symlink():
        raise InputError(f"{out} is a symbolic link; pass the folder itself as the site folder.")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder; pass a folder for the site.")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()):
        raise InputError(
            f"{out} already holds files that are not a leaderboard site built by trustlab; "
            "the build replaces the whole folder, so pass a new or empty folder (e.g. "
            "--out site/)."
        )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_into_place(built: Path, out: Path) -> None:
    """Put the folder ``built`` at ``out``; an old site there is removed afterwards."""
    if not out.exists():
        with contextlib.suppress(OSError):  # another build may have just made it: swap then
            os.rename(built, out)
            return
    if _exchange(built, out):
        shutil.rmtree(built, ignore_errors=True)  # the old site, now at the temporary name
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)  # the site is missing for an instant, never half-built
    os.rename(built, out)
    shutil.rmtree(old, ignore_errors=True)


def _remove_abandoned_builds(out: Path) -> None:
    """Delete temporary build folders next to ``out`` whose process is gone (killed builds)."""
    for tmp in out.parent.glob(f".{out.name}.build-*"):
        try:
            pid = int(tmp.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def build_site(store: RunStore | None = None, out_dir: str | os.PathLike[str] = "site") -> Path:
    """Build the leaderboard site from ``store`` into ``out_dir``; returns ``out_dir/index.html``.

    The pages (see the module) are written into a temporary folder next to ``out_dir``, which
    then replaces ``out_dir`` in one step; an empty store still gives every page, each saying
    what is missing and the command that adds it. The store is only read.

    Args:
        store: the results store (default None: ``$TRUSTLAB_HOME``, else ``./runs``).
        out_dir: the site's folder (default ``"site"``); created if missing. An existing folder
            must be empty or a site built here: anything else is refused, never replaced.

    Raises:
        InputError: ``out_dir`` is a file, a link, or a folder with other files in it; or the
            store's database is damaged.

    Example:
        >>> index = build_site(RunStore("runs"), "site")  # doctest: +SKIP
        >>> index.name
        'index.html'
    """
    from trustlab.experiments.results import reproduction_results

    store = store if store is not None else RunStore()
    out = Path(out_dir).expanduser().absolute()
    _check_out_dir(out)
    results = [r for r in reproduction_results(store) if r.claims]
    bench = bench_run(store)
    subs = submissions(store)
    by_benchmark: dict[str, list[Submission]] = {}
    for s in subs:
        by_benchmark.setdefault(s.benchmark, []).append(s)
    built = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    pages = {
        "index.html": _index_page(results, bench, by_benchmark, built),
        "reproductions.html": _reproductions_page(results),
        "backdoor.html": _backdoor_page(bench, by_benchmark.get("backdoor-quick", [])),
        "robustness.html": _benchmark_page(
            "robustness.html", "robustness", "robustness-quick",
            by_benchmark.get("robustness-quick", []),
        ),
        "privacy.html": _benchmark_page(
            "privacy.html", "privacy", "privacy-quick", by_benchmark.get("privacy-quick", [])
        ),
    }  # fmt: skip
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot make the folder {out.parent} for the site ({exc.strerror or exc}); pass "
            "another --out folder."
        ) from exc
    _remove_abandoned_builds(out)
    tmp = out.with_name(f".{out.name}.build-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        for name, text in pages.items():
            write_page(tmp / name, text).chmod(0o644)  # readable by a web server
        (tmp / MARKER).write_text(f"a trustlab leaderboard site, built {built} UTC\n")
        tmp.chmod(0o755)
        _check_out_dir(out)  # again: something may have appeared there meanwhile
        _swap_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / "index.html"


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    """Serves the site folder only; quiet; no caching (a rebuilt page shows on reload)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?", 1)[0] == "/favicon.ico":  # none: no 404 in the console
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


def _files_state(store: RunStore) -> tuple[Any, ...]:
    """The store database's files' modification times and sizes (cheap to read every poll)."""
    out = []
    for suffix in ("", "-wal"):
        path = Path(f"{store.db_path}{suffix}")
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _runs_state(store: RunStore) -> tuple[Any, ...]:
    """Every run's id, status and last update: what changes when a result lands."""
    return tuple((r.id, r.status, r.updated) for r in store.list())


class LeaderboardServer:
    """The site served over HTTP from ``out_dir`` (only that folder), rebuilt by
    :meth:`refresh` when the store changed. :func:`serve` runs one until Ctrl-C.

    Args:
        store: the results store (default None: ``$TRUSTLAB_HOME``, else ``./runs``).
        out_dir: the site's folder (default ``"site"``).
        host: the address to listen on (default ``"127.0.0.1"``: this machine only).
        port: the port (default 8000; 0 picks a free one).

    Example:
        >>> with LeaderboardServer(RunStore("runs"), "site", port=0) as site:  # doctest: +SKIP
        ...     print(site.url)
        ...     site.refresh()  # rebuilds if a run changed since the last build
    """

    def __init__(
        self,
        store: RunStore | None = None,
        out_dir: str | os.PathLike[str] = "site",
        host: str = "127.0.0.1",
        port: int = 8000,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InputError(f"port must be a number from 0 to 65535, got {port!r}.")
        self.store = store if store is not None else RunStore()
        self.out = Path(out_dir).expanduser().absolute()
        self.host = host
        self.port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._files: tuple[Any, ...] | None = None
        self._runs: tuple[Any, ...] | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` (the actual port once started)."""
        port = self._httpd.server_address[1] if self._httpd else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/"

    def build(self) -> Path:
        """Build the site now (and remember the store's state it was built from)."""
        self._files = _files_state(self.store)
        self._runs = _runs_state(self.store)
        return build_site(self.store, self.out)

    def refresh(self) -> bool:
        """Rebuild the site if a run was added or changed since the last build; True if it
        was rebuilt."""
        files = _files_state(self.store)
        if files == self._files:
            return False
        self._files = files
        runs = _runs_state(self.store)
        if runs == self._runs:
            return False
        self._runs = runs
        build_site(self.store, self.out)
        return True

    def start(self) -> str:
        """Take the address, build the site and start serving it on a background thread;
        returns the URL. The address is taken first: when it cannot be used nothing is built.

        Raises:
            InputError: the address cannot be used (e.g. the port is taken), or the site folder
                is refused by :func:`build_site`.
        """
        handler = functools.partial(_Handler, directory=str(self.out))
        try:
            httpd = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise InputError(
                f"cannot serve on {self.host}:{self.port} ({exc.strerror or exc}); pass another "
                "port (--port 8001, or --port 0 for any free one)."
            ) from exc
        try:
            self.build()
        except BaseException:
            httpd.server_close()
            raise
        self._httpd = httpd
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
            name="trustlab-leaderboard", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving (the site folder stays)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> LeaderboardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    store: RunStore | None = None,
    out_dir: str | os.PathLike[str] = "site",
    host: str = "127.0.0.1",
    port: int = 8000,
    poll_s: float = 2.0,
    *,
    on_ready: Callable[[str], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Build the site, serve it at ``http://host:port/`` and rebuild it whenever new results
    land in the store (checked every ``poll_s`` seconds), until Ctrl-C (or ``stop`` is set).

    A rebuild that fails (e.g. a run folder being deleted meanwhile) keeps the previous site
    and is reported through ``on_event``; the next change tries again.

    Args:
        store: the results store (default None: ``$TRUSTLAB_HOME``, else ``./runs``).
        out_dir: the site's folder (default ``"site"``).
        host: the address (default ``"127.0.0.1"``: this machine only).
        port: the port (default 8000; 0 picks a free one).
        poll_s: seconds between checks of the store (default 2.0).
        on_ready: called with the URL once the site is served (default None).
        on_event: called with a line when the site was rebuilt or a rebuild failed.
        stop: an event that ends serving when set (default None: only Ctrl-C does).

    Raises:
        InputError: a bad ``poll_s``, an unusable address, or ``out_dir`` refused by
            :func:`build_site`.

    Example:
        >>> serve(RunStore("runs"), "site", port=8000, on_ready=print)  # doctest: +SKIP
        http://127.0.0.1:8000/
    """
    if isinstance(poll_s, bool) or not isinstance(poll_s, int | float) or not poll_s > 0:
        raise InputError(f"poll_s must be a positive number of seconds, got {poll_s!r}.")
    stop = stop if stop is not None else threading.Event()
    site = LeaderboardServer(store, out_dir, host, port)
    url = site.start()
    try:
        if on_ready is not None:
            on_ready(url)
        while not stop.wait(poll_s):
            try:
                rebuilt = site.refresh()
            except (InputError, OSError, ValueError) as exc:
                site._files = None  # try again at the next poll
                if on_event is not None:
                    on_event(f"rebuild failed, the previous site is kept: {exc}")
                continue
            if rebuilt and on_event is not None:
                stamp = datetime.now(UTC).strftime("%H:%M:%S")
                on_event(f"{stamp} UTC: new results, site rebuilt")
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
