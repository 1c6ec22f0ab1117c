"""The stored reproductions as one results table: claim, verdict, measured numbers with their
interval, seeds and wall time, per experiment and preset.

:func:`reproduction_results` reads the ``reproduce`` runs of a results store (the newest finished
run of each experiment and preset by default); :func:`results_markdown` renders them as the
table ``docs/reproductions.md`` carries (one row per claim). ``trustlab reproductions`` prints
the same table (``--markdown`` for the docs).

Example::

    from trustlab.experiments.results import reproduction_results, results_markdown
    print(results_markdown(reproduction_results()))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from trustlab.errors import InputError
from trustlab.experiments.base import ClaimResult
from trustlab.results import Run, RunStore

__all__ = ["ReproductionResult", "reproduction_results", "results_markdown"]


@dataclass(frozen=True)
class ReproductionResult:
    """One stored reproduction run, as the results table shows it.

    Attributes:
        run_id: the run's id in the store.
        experiment, preset: what was reproduced (``trustlab reproduce EXPERIMENT --preset P``).
        dataset, model, seeds: the preset's data, model and number of seeds.
        claims: the claims with their verdicts and details (numbers, intervals, per seed).
        wall_s: wall time of the run's last invocation in seconds (``None`` for runs stored
            before it was recorded); ``resumed`` says whether that invocation resumed it.
        workers: worker processes of that invocation (``None`` when not recorded).
        commit: the git commit the run was made with (its first 7 hex digits).
        ended: when it finished (ISO 8601).
        rejudged: the claims were checked again, by today's code, on the run's stored table
            (``table.json``), instead of read from its summary.
    """

    run_id: int
    experiment: str
    preset: str
    dataset: str
    model: str
    seeds: int
    claims: tuple[ClaimResult, ...]
    wall_s: float | None
    resumed: bool
    workers: int | None
    commit: str
    ended: str
    rejudged: bool = False

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.claims)

    @property
    def wall(self) -> str:
        """The wall time as ``12m05s`` (``?`` when not recorded)."""
        if self.wall_s is None:
            return "?"
        minutes, seconds = divmod(int(round(self.wall_s)), 60)
        text = f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
        return text + (" (resumed)" if self.resumed else "")


def _rejudge(run: Run) -> tuple[ClaimResult, ...] | None:
    """The experiment's current claims checked on the run's stored table (None: no table, or
    an experiment that no longer exists). A claim added after the run, whose metrics its table
    does not hold, is left out: the run did not measure it."""
    from trustlab.experiments.base import ResultTable, get_experiment

    path = run.dir / "table.json"
    name = run.config.get("experiment")
    if not path.is_file() or name is None:
        return None
    try:
        exp = get_experiment(str(name))
    except InputError:
        return None
    stored = json.loads(path.read_text())
    table = ResultTable(exp.keys, exp.metrics, stored.get("rows", []))
    judged = []
    for claim in exp.claims:
        try:
            c = claim.evaluate(table)
        except KeyError:  # a metric this run's table does not have
            continue
        judged.append(ClaimResult(c.claim, c.text, c.passed, c.detail, c.verdict))
    return tuple(judged)


def _result(run: Run, rejudge: bool = False) -> ReproductionResult:
    preset = run.config.get("preset", {})
    summary = run.summary
    claims = _rejudge(run) if rejudge else None
    rejudged = claims is not None
    if claims is None:
        claims = tuple(
            ClaimResult(
                name,
                name,
                bool(c.get("passed")),
                str(c.get("detail", "")),
                str(c.get("verdict", "")),
            )
            for name, c in summary.get("claims", {}).items()
        )
    commit = (run.git_commit or "")[:7]
    return ReproductionResult(
        run_id=run.id,
        experiment=str(run.config.get("experiment", run.name)),
        preset=str(preset.get("name", "?")),
        dataset=str(preset.get("dataset", "?")),
        model=str(preset.get("model", "?")),
        seeds=int(preset.get("seeds", 0)),
        claims=claims,
        wall_s=summary.get("wall_s"),
        resumed=bool(summary.get("resumed", False)),
        workers=summary.get("workers"),
        commit=commit,
        ended=run.ended or run.updated,
        rejudged=rejudged,
    )


def reproduction_results(
    store: RunStore | None = None,
    *,
    latest: bool = True,
    presets: Sequence[str] | None = None,
    rejudge: bool = False,
) -> list[ReproductionResult]:
    """The finished ``reproduce`` runs of ``store`` (default: ``$TRUSTLAB_HOME``), sorted by
    experiment and preset; ``latest`` keeps only the newest run of each experiment and preset;
    ``presets`` keeps only those presets (e.g. ``("quick", "real")``); ``rejudge`` checks the
    claims again with today's code on each run's stored table (when the way a claim is judged
    changed after the run; the numbers are the run's)."""
    store = store or RunStore()
    runs = store.list(status="finished", kind="reproduce") if "reproduce" in store.kinds() else []
    results, seen = [], set()
    for run in runs:  # newest first
        r = _result(run, rejudge)
        if presets is not None and r.preset not in presets:
            continue
        if latest and (r.experiment, r.preset) in seen:
            continue
        seen.add((r.experiment, r.preset))
        results.append(r)
    order = {"smoke": 0, "quick": 1, "real": 2, "full": 3}
    return sorted(results, key=lambda r: (r.experiment, order.get(r.preset, 9), -r.run_id))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_markdown(results: Sequence[ReproductionResult]) -> str:
    """A markdown table, one row per claim: experiment, preset (data, model), seeds, claim,
    verdict, the measured numbers (mean, 95% interval, per seed), wall time, run and date."""
    lines = [
        "| experiment | preset | seeds | claim | verdict | measured | wall time | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        day = _day(r.ended) + (", re-judged" if r.rejudged else "")
        where = f"`{r.preset}` ({r.dataset}, {r.model})"
        run = f"{r.wall} | {r.run_id} ({r.commit or '?'}, {day})"
        if not r.claims:  # a measurement without claims (the bench): nothing to pass or fail
            lines.append(
                f"| `{r.experiment}` | {where} | {r.seeds} | — | — | no claims: measurements "
                f"(the run's report) | {run} |"
            )
        for c in r.claims:
            lines.append(
                f"| `{r.experiment}` | {where} | {r.seeds} | {_cell(c.claim)} | **{c.verdict}** "
                f"| {_cell(c.detail)} | {run} |"
            )
    return "\n".join(lines) + "\n"


def _day(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp).date().isoformat()
    except (TypeError, ValueError):
        return "?"
