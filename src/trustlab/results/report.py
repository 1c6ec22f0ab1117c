"""A run's report: one self-contained HTML page for any stored run (``trustlab report RUN``).

:func:`run_report` reads a :class:`~trustlab.results.store.Run` and everything it stored, and
builds a page with :mod:`trustlab.results.html` (inline styles, PNGs as ``data:`` URIs, no
external assets, readable offline); :func:`write_report` writes it atomically, by default to
``report.html`` in the run's folder.

The page, for every kind of run (a kind it does not know gets the same generic sections):

- **header**: kind, name, status, created and ended, attempt, seed, git commit (and whether the
  working tree had uncommitted changes), package versions, the folder; a failed run's error;
- **pages**: links (relative to where the report is written) to the HTML pages the run stored
  as artefacts, e.g. an audit's ``scorecard.html`` with its plots;
- for a **reproduction** (``trustlab reproduce``, ``trustlab bench``): each claim with its
  verdict badge and detail (read from the run's summary, the statement from its ``report.md``),
  the results table as ``report.md`` shows it (``mean [lo, hi]`` over seeds; each cell sorts by
  the stored mean), every seed's row of ``table.json``, and for the backdoor bench the attack x
  defense matrix of its ``matrix.html``;
- **summary**: the summary metrics (nested values as dotted names);
- **training curves**: one figure per metric family (losses, accuracies, time, ...) of every
  metric phase with at least two steps, drawn from :meth:`Run.metrics`;
- **images**: every PNG artefact (and any PNG in the run folder), embedded, its name the caption;
- **metrics**: every logged step of every phase (a reproduction's per-job rows too), in a
  scrolling sortable table;
- **config**, the **artefacts** (name, kind, size, SHA-256) and small JSON artefacts as text.

Numbers are written one way on the whole page (:func:`format_number`: 4 decimals, 4
significant digits for tiny or large values, ``—`` for a missing value); every number's cell
keeps the stored value in ``data-sort``, so sorting is exact and the page can be checked against
the store. Only the stored JSON is read (the results layer never imports the reproductions).

Example:
    >>> from trustlab.results import RunStore
    >>> from trustlab.results.report import write_report
    >>> write_report(RunStore().get(7))  # doctest: +SKIP
    PosixPath('runs/run-000007/report.html')
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from trustlab.errors import InputError
from trustlab.results.html import (
    Cell,
    Raw,
    badge,
    esc,
    figure,
    image,
    key_values,
    nav,
    page,
    paragraph,
    section,
    table,
    write_page,
)
from trustlab.results.store import Run
from trustlab.utils.format import NOT_APPLICABLE, format_interval, format_value

__all__ = [
    "format_number",
    "metric_family",
    "output_path",
    "run_report",
    "training_figures",
    "write_report",
]

#: PNGs larger than this are listed, not embedded (the page stays a size a browser opens)
MAX_IMAGE_BYTES = 8 * 2**20
#: JSON artefacts up to this size are shown as text on the page
MAX_JSON_BYTES = 32 * 2**10
#: a summary string longer than this (or with a line break) is shown as a block, not a cell
LONG_TEXT = 200
#: metric names never drawn as curves (counters, not measurements)
NOT_CURVES = ("step", "phase", "seed", "epoch", "round")
#: families drawn per phase at most (the metrics table has every value)
MAX_FAMILIES = 16

_STYLE = Raw(
    "<style>.tl-scroll{max-height:32rem;overflow:auto;margin:.6rem 0;width:fit-content;"
    "max-width:100%}"
    ".tl-scroll table{margin:0}.tl-scroll thead th{position:sticky;top:0;z-index:1}"
    ".tl-wide{overflow-x:auto}details pre{max-height:28rem}"
    ".tl-page{font-size:1.1rem;font-weight:600}</style>"
)


# -- numbers --------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def format_number(v: Any) -> str:
    """How every value is written on a report: :func:`~trustlab.utils.format.format_value` (floats
    to 4 decimals, 4 significant digits from 10,000 up, ``—`` for None and NaN), and 4
    significant digits below 0.001 (a learning rate of ``1e-05`` is not ``0.0000``).

    Example:
        >>> format_number(0.97123456), format_number(1e-05), format_number(None)
        ('0.9712', '1e-05', '—')
    """
    if isinstance(v, float) and math.isfinite(v) and 0 < abs(v) < 1e-3:
        return f"{v:.4g}"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, bool):
        return "true" if v else "false"
    return format_value(v)


def _sort_key(v: Any) -> float | None:
    """The stored number itself (its ``repr`` round-trips exactly), None for NaN/inf."""
    return v if _is_number(v) and math.isfinite(v) else None


def _value(v: Any) -> Cell | str:
    """A table cell of a stored value: numbers formatted with their raw value in ``data-sort``,
    lists and dicts as compact JSON."""
    if _is_number(v):
        return Cell(format_number(v), _sort_key(v))
    if v is None or isinstance(v, bool):
        return format_number(v)
    if isinstance(v, list | tuple | dict):
        return json.dumps(v, default=str, ensure_ascii=False)
    return str(v)


def _scroll(html_table: str, wide: bool = False) -> str:
    """A table in a box that scrolls (long tables keep their header in view)."""
    cls = "tl-scroll tl-wide" if wide else "tl-scroll"
    return Raw(f'<div class="{cls}">{html_table}</div>')


def _details(title: str, text: str, open_: bool = False) -> str:
    flag = " open" if open_ else ""
    return Raw(f"<details{flag}><summary>{esc(title)}</summary><pre>{esc(text)}</pre></details>")


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted name, value)`` of a nested mapping (an empty mapping is one value)."""
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, name)
        else:
            yield name, value


# -- stored files ---------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def _markdown_table(text: str) -> tuple[list[str], list[list[str]]] | None:
    """The first markdown table of ``text``: ``(header, rows)`` of cell texts."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None or start + 1 >= len(lines):
        return None

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    header = cells(lines[start])
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return header, rows


def _claim_statements(report_md: str | None, claims: Mapping[str, Any]) -> dict[str, str]:
    """Each claim's statement, read from ``report.md``'s ``- **VERDICT** statement: detail``."""
    out: dict[str, str] = {}
    if not report_md:
        return out
    lines = [line for line in report_md.splitlines() if line.startswith("- **")]
    for name, claim in claims.items():
        if not isinstance(claim, Mapping):
            continue
        head = f"- **{claim.get('verdict', '')}** "
        tail = f": {claim.get('detail', '')}"
        for line in lines:
            if line.startswith(head) and line.endswith(tail) and len(line) > len(head + tail):
                out[name] = line[len(head) : -len(tail)]
                break
    return out


class _TableReader(HTMLParser):
    """The cell texts of the first ``<table>`` of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._state = "before"  # before -> in -> after
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and self._state == "before":
            self._state = "in"
        elif self._state == "in" and tag == "tr":
            self.rows.append([])
        elif self._state == "in" and tag in ("td", "th") and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if self._state != "in":
            return
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._state = "after"

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _html_table(text: str) -> tuple[list[str], list[list[str]]] | None:
    reader = _TableReader()
    reader.feed(text)
    rows = [r for r in reader.rows if r]
    return (rows[0], rows[1:]) if len(rows) >= 1 else None


_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?(e[-+]?\d+)?%?$", re.IGNORECASE)


def _text_cell(text: str) -> Cell | str:
    """A cell of a table read from a stored page: numbers (``97.5%``, ``0.85``) sort as numbers."""
    head = text.split(" ", 1)[0]
    if _NUMBER.match(head):
        return Cell(text, float(head.rstrip("%")))
    return text


# -- sections -------------------------------------------------------------------------------------
def _header(run: Run) -> tuple[str, list[str]]:
    meta = _read_json(run.dir / "meta.json") or {}
    git = meta.get("git") if isinstance(meta, Mapping) else None
    commit = run.git_commit or "not recorded"
    if isinstance(git, Mapping) and git.get("dirty"):
        commit += " (with uncommitted changes)"
    versions = run.versions or {}
    items: list[tuple[str, Any]] = [
        ("run", str(run.id)),
        ("kind", run.kind),
        ("name", run.name),
        ("status", badge(run.status)),
        ("created", run.created),
        ("ended", run.ended or "—"),
        ("attempt", str(run.attempt)),
        ("seed", "—" if run.seed is None else str(run.seed)),
        ("git commit", commit),
        *((f"{k} version", str(v)) for k, v in versions.items() if k != "platform"),
        ("platform", str(versions.get("platform", "—"))),
        ("folder", str(run.dir)),
    ]
    parts = []
    if run.status == "failed":
        parts.append(paragraph(f"failed: {run.error or 'no error recorded'}", "warning"))
    elif run.status == "running":
        parts.append(paragraph("still running: this page shows what was stored so far.", "note"))
    elif run.status == "interrupted":
        parts.append(
            paragraph(
                f"interrupted: resume it with `trustlab resume {run.id}`; this page shows what "
                "was stored before it stopped.",
                "warning",
            )
        )
    parts.append(key_values(items))
    return "Run", parts


def _claims_section(run: Run, report_md: str | None) -> str | None:
    claims = (run.summary or {}).get("claims")
    if not isinstance(claims, Mapping) or not claims:
        return None
    statements = _claim_statements(report_md, claims)
    rows = []
    for name, claim in claims.items():
        claim = claim if isinstance(claim, Mapping) else {"detail": claim}
        verdict = str(claim.get("verdict") or ("PASS" if claim.get("passed") else "FAIL"))
        rows.append(
            [
                name,
                Cell(badge(verdict), verdict),
                statements.get(name, ""),
                str(claim.get("detail", "")),
            ]
        )
    passed = run.summary.get("passed")
    note = ""
    if isinstance(passed, bool):
        note = "every claim passed" if passed else "not every claim passed"
    body = table(["claim", "verdict", "statement", "measured"], rows, table_id="claims-table")
    return section("Claims", body, section_id="claims", note=note)


def _results_sections(run: Run, report_md: str | None) -> list[str]:
    """The reproduction's table (as report.md shows it) and every seed's row (table.json)."""
    stored = _read_json(run.dir / "table.json")
    if not isinstance(stored, Mapping) or not isinstance(stored.get("rows"), list):
        return []
    keys = [str(k) for k in stored.get("keys", [])]
    metrics = [str(m) for m in stored.get("metrics", [])]
    out = []
    summary = stored.get("summary")
    if isinstance(summary, list) and summary:
        header = [*keys, *metrics, "seeds"]
        shown = _markdown_table(report_md) if report_md else None
        usable = (
            shown is not None
            and shown[0] == header
            and len(shown[1]) == len(summary)
            and all(
                len(cells) == len(header)
                and all(cells[i] == str(e.get(k)) for i, k in enumerate(keys))
                for cells, e in zip(shown[1], summary, strict=True)
            )
        )
        rows = []
        for n, e in enumerate(summary):
            cells: list[Any] = [str(e.get(k)) for k in keys]
            for j, m in enumerate(metrics):
                mean = e.get(m)
                text = (
                    shown[1][n][len(keys) + j]
                    if usable and shown is not None
                    else format_interval(
                        _float(mean), _float(e.get(m + "_lo")), _float(e.get(m + "_hi"))
                    )
                )
                cells.append(Cell(text, _sort_key(mean)))
            cells.append(e.get("seeds", ""))
            rows.append(cells)
        note = "mean over seeds [95% bootstrap interval]" + (
            ", as report.md shows it; each cell sorts by its stored mean"
            if usable
            else "; each cell sorts by its stored mean"
        )
        body = _scroll(table(header, rows, table_id="results-table"), wide=True)
        out.append(section("Results", body, section_id="results", note=note))
    seed_rows = stored["rows"]
    if seed_rows:
        extra = [k for r in seed_rows for k in r if k not in (*keys, "seed", *metrics)]
        columns = [*keys, "seed", *metrics, *dict.fromkeys(extra)]
        rows = [[_value(r[c]) if c in r else NOT_APPLICABLE for c in columns] for r in seed_rows]
        body = _scroll(table(columns, rows, table_id="seeds-table"), wide=True)
        note = f"{len(seed_rows)} rows of table.json: every seed's values"
        out.append(section("Every seed", body, section_id="seeds", note=note))
    return out


def _float(v: Any) -> float:
    return float(v) if _is_number(v) else math.nan


def _matrix_section(run: Run) -> str | None:
    text = _read_text(run.dir / "matrix.html")
    if text is None:
        return None
    parsed = _html_table(text)
    if parsed is None:
        return None
    header, rows = parsed
    width = len(header)
    cells = [[_text_cell(c) for c in r] + [""] * (width - len(r)) for r in rows]
    body = _scroll(table(header, cells, table_id="matrix-table", row_headers=True), wide=True)
    note = "the run's matrix.html: attacks down, each defense's headline number across"
    return section("Attack x defense matrix", body, section_id="matrix", note=note)


def _scores(run: Run) -> dict[str, Mapping[str, Any]]:
    """The summary's ``scores`` (``{metric: {"mean", "lo", "hi", "values"}}``, as an evaluated
    submission stores them), or {}."""
    scores = (run.summary or {}).get("scores")
    if not isinstance(scores, Mapping) or not scores:
        return {}
    if not all(isinstance(v, Mapping) and "mean" in v for v in scores.values()):
        return {}
    return dict(scores)


def _scores_section(run: Run) -> str | None:
    scores = _scores(run)
    if not scores:
        return None
    primary = run.summary.get("primary")
    better = run.summary.get("higher_is_better")
    better = better if isinstance(better, Mapping) else {}
    rows = []
    for metric, s in scores.items():
        values = s.get("values")
        per_seed = ", ".join(format_number(v) for v in values) if isinstance(values, list) else "—"
        direction = better.get(metric)
        rows.append(
            [
                metric + (" (primary)" if metric == primary else ""),
                _value(s.get("mean")),
                _value(s.get("lo")),
                _value(s.get("hi")),
                per_seed,
                "—" if direction is None else ("higher" if direction else "lower"),
            ]
        )
    header = ["metric", "mean", "lo", "hi", "per seed", "better"]
    note = "mean over seeds with its 95% interval (lo, hi)"
    return section("Scores", table(header, rows, table_id="scores-table"), section_id="scores",
                   note=note)  # fmt: skip


def _summary_section(run: Run) -> str | None:
    summary = dict(run.summary or {})
    if run.kind == "reproduce" or isinstance(summary.get("claims"), Mapping):
        summary.pop("claims", None)
    if _scores(run):  # the scores' own table shows them
        summary.pop("scores", None)
    if not summary:
        return None
    rows, blocks = [], []
    for name, value in _flatten(summary):
        if isinstance(value, str) and (len(value) > LONG_TEXT or "\n" in value):
            blocks.append(_details(name, value, open_=True))
            rows.append([name, "(shown below)"])
        else:
            rows.append([name, _value(value)])
    body = _scroll(table(["metric", "value"], rows, table_id="summary-table"))
    return section("Summary", body, *blocks, section_id="summary")


def metric_family(name: str) -> str:
    """The family a metric's curve is drawn with: ``loss`` (any name with "loss"),
    ``accuracy`` ("acc"), ``time (s)`` (seconds), ``learning rate`` (``lr``), else the name's
    last ``_`` part (``party0_credibility`` -> ``credibility``, ``test_psnr`` -> ``psnr``).

    Example:
        >>> [metric_family(n) for n in ("train_loss", "test_accuracy", "epoch_seconds")]
        ['loss', 'accuracy', 'time (s)']
    """
    n = name.lower()
    if "loss" in n:
        return "loss"
    if "acc" in n:
        return "accuracy"
    if n.endswith(("seconds", "_s", "_time")) or n in ("seconds", "time"):
        return "time (s)"
    if n == "lr" or n.endswith(("_lr", "learning_rate")):
        return "learning rate"
    return n.rsplit("_", 1)[-1] or n


def _phases(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r["phase"]), []).append(r)
    return out


def _curve_phases(run: Run) -> dict[str, list[dict[str, Any]]]:
    phases = _phases(run.metrics())
    if run.kind == "reproduce":  # per-job rows, not a time series (the seeds' table shows them)
        phases.pop("row", None)
    return {p: rows for p, rows in phases.items() if len({r["step"] for r in rows}) >= 2}


def training_figures(run: Run) -> list[tuple[str, str, Any]]:
    """``(phase, family, matplotlib Figure)`` for every metric family of every phase of
    ``run.metrics()`` with at least two steps: each figure draws the family's metrics against
    the stored steps (NaN and missing steps leave gaps). A reproduction's per-job ``row``
    phase is a table, not a curve.

    Example:
        >>> [(p, f) for p, f, _ in training_figures(run)]  # doctest: +SKIP
        [('epoch', 'loss'), ('epoch', 'accuracy'), ('epoch', 'learning rate'), ...]
    """
    from trustlab.results.plots import rounds_figure

    out = []
    for phase, rows in _curve_phases(run).items():
        steps = [r["step"] for r in rows]
        names = list(dict.fromkeys(k for r in rows for k in r if k not in NOT_CURVES))
        families: dict[str, list[str]] = {}
        for name in names:
            values = [r.get(name) for r in rows]
            if not all(v is None or _is_number(v) for v in values):
                continue
            if values == steps:  # a copy of the step counter
                continue
            families.setdefault(metric_family(name), []).append(name)
        for family, members in list(families.items())[:MAX_FAMILIES]:
            series = {m: [_float(r.get(m)) for r in rows] for m in members}
            fig = rounds_figure({family: series}, xlabel=phase)
            ax = fig.axes[0]
            for line in ax.lines:  # rounds_figure draws at 1..n: put each point at its step
                line.set_xdata(steps)
            ax.relim()
            ax.autoscale_view()
            out.append((phase, family, fig))
    return out


def _curves_section(run: Run) -> str | None:
    figs = training_figures(run)
    if not figs:
        return None
    parts = []
    for phase, family, fig in figs:
        names = [line.get_label() for line in fig.axes[0].lines]
        alt = f"{family} per {phase}"
        parts.append(figure(fig, alt, f"{alt}: {', '.join(names)}"))
    return section("Training curves", *parts, section_id="curves", note="from run.metrics()")


def _pngs(run: Run) -> list[tuple[str, Path, str]]:
    """``(name, path, kind)`` of the PNG artefacts, then of other PNGs in the run folder."""
    seen: set[str] = set()
    out = []
    for art in run.artifacts():
        path = Path(art["path"])
        if art["name"].lower().endswith(".png") and path.is_file():
            out.append((art["name"], path, str(art["kind"])))
            seen.add(art["name"])
    if run.dir.is_dir():
        for path in sorted(run.dir.glob("*.png")):
            if path.name not in seen and path.is_file():
                out.append((path.name, path, "file in the run folder"))
    return out


def _images_section(run: Run) -> str | None:
    pngs = _pngs(run)
    if not pngs:
        return None
    parts = []
    for name, path, _kind in pngs:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            parts.append(paragraph(f"{name}: {size:,} bytes, too large to embed (see {path}).")
            )  # fmt: skip
            continue
        parts.append(image(path, name, name))
    return section("Images", *parts, section_id="images")


def _metrics_sections(run: Run) -> list[str]:
    out = []
    for phase, rows in _phases(run.metrics()).items():
        ident = re.sub(r"[^A-Za-z0-9_-]+", "-", phase)
        columns = ["step", *dict.fromkeys(k for r in rows for k in r if k not in ("step", "phase"))]
        cells = [[_value(r[c]) if c in r else NOT_APPLICABLE for c in columns] for r in rows]
        body = _scroll(table(columns, cells, table_id=f"metrics-{ident}-table"), wide=True)
        note = f"{len(rows)} logged step(s) of phase {phase!r}"
        if run.kind == "reproduce" and phase == "row":
            note += " (step: the job's index; the every-seed table adds each job's keys)"
        out.append(section(f"Metrics: {phase}", body, section_id=f"metrics-{ident}", note=note))
    return out


def _pages_section(run: Run, folder: Path) -> str | None:
    """Links to the run's own HTML pages (an audit's ``scorecard.html``, a bench's
    ``matrix.html``), relative to ``folder`` (where the report is written)."""
    pages = [
        (a["name"], Path(a["path"]))
        for a in run.artifacts()
        if a["name"].lower().endswith(".html") and a["name"] != "report.html"
    ]
    if not pages:
        return None
    parts = []
    for name, path in pages:
        href = quote(Path(os.path.relpath(path, folder)).as_posix())
        what = _PAGE_TEXT.get(name, "a page this run stored")
        parts.append(
            Raw(f'<p class="tl-page"><a href="{esc(href)}">{esc(name)}</a>: {esc(what)}</p>')
        )
    return section("Pages", *parts, section_id="pages", note="in the run's folder")


#: what a run's own page holds (the link's text on the report)
_PAGE_TEXT = {
    "scorecard.html": "the audit's scorecard: every check's numbers, budget, warnings and plots "
    "(ROC curves, reversed triggers, adversarial examples)",
    "matrix.html": "the attack x defense matrix",
}


def _config_section(run: Run) -> str | None:
    if not run.config:
        return None
    rows = [
        [name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)]
        for name, value in _flatten(run.config)
    ]
    body = _scroll(table(["setting", "value"], rows, table_id="config-table"))
    return section("Config", body, section_id="config", note="config.json, nested keys dotted")


def _artifacts_section(run: Run, shown: Iterable[str]) -> str | None:
    arts = run.artifacts()
    if not arts:
        return None
    rows = [
        [a["name"], a["kind"], _value(a["size"]), (a["sha256"] or "")[:16], a["created"]]
        for a in arts
    ]
    parts = [table(["name", "kind", "bytes", "sha256 (first 16)", "added"], rows)]
    skip = set(shown)
    for a in arts:
        path = Path(a["path"])
        if not a["name"].lower().endswith(".json") or a["name"] in skip or not path.is_file():
            continue
        if path.stat().st_size > MAX_JSON_BYTES:
            continue
        data = _read_json(path)
        if data is not None:
            parts.append(_details(a["name"], json.dumps(data, indent=2, ensure_ascii=False)))
    return section("Artefacts", *parts, section_id="artefacts", note=f"in {run.dir}")


# -- the page -------------------------------------------------------------------------------------
def run_report(run: Run, folder: str | os.PathLike[str] | None = None) -> str:
    """The HTML page of ``run``: header, links to the run's own pages (an audit's scorecard),
    claims and results (a reproduction), summary, training curves, embedded images, metrics,
    config and artefacts (see the module). Self-contained: inline styles and script, PNGs as
    ``data:`` URIs.

    Args:
        run: a stored run (any kind and status), e.g. ``RunStore().get(7)``.
        folder: where the page will be written; the links to the run's pages are relative to
            it (default None: the run's folder).

    Returns:
        The page's HTML text.

    Example:
        >>> html_text = run_report(RunStore().get(7))  # doctest: +SKIP
        >>> "<h1>run 7:" in html_text  # doctest: +SKIP
        True
    """
    if not isinstance(run, Run):
        raise InputError(
            f"run_report needs a stored run (RunStore().get(ID)), got {type(run).__name__}."
        )
    run = run.refresh()
    report_md = _read_text(run.dir / "report.md")
    title, head = _header(run)
    sections: list[tuple[str, str | None]] = [("run", section(title, *head, section_id="run"))]
    sections.append(("pages", _pages_section(run, Path(folder) if folder else run.dir)))
    sections.append(("claims", _claims_section(run, report_md)))
    sections.append(("matrix", _matrix_section(run)))
    results = _results_sections(run, report_md)
    for part in results:
        sections.append((_section_id(part), part))
    sections.append(("scores", _scores_section(run)))
    sections.append(("summary", _summary_section(run)))
    sections.append(("curves", _curves_section(run)))
    sections.append(("images", _images_section(run)))
    for part in _metrics_sections(run):
        sections.append((_section_id(part), part))
    sections.append(("config", _config_section(run)))
    sections.append(("artefacts", _artifacts_section(run, shown=("table.json",))))
    present = [(ident, part) for ident, part in sections if part]
    links = [(f"#{ident}", _LABELS.get(ident, ident.replace("-", ": ", 1))) for ident, _ in present]
    subtitle = f"{run.kind} run · {run.status} · created {run.created}"
    claims = run.summary.get("claims")
    if isinstance(claims, Mapping) and claims and isinstance(run.summary.get("passed"), bool):
        subtitle += " · claims " + ("passed" if run.summary["passed"] else "not all passed")
    return page(
        f"run {run.id}: {run.name}",
        _STYLE,
        nav(links),
        *(part for _, part in present),
        subtitle=subtitle,
    )


_LABELS = {
    "run": "run",
    "pages": "pages",
    "claims": "claims",
    "results": "results",
    "seeds": "every seed",
    "matrix": "matrix",
    "scores": "scores",
    "summary": "summary",
    "curves": "training curves",
    "images": "images",
    "config": "config",
    "artefacts": "artefacts",
}


def _section_id(part: str) -> str:
    match = re.match(r'<section id="([^"]+)"', part)
    return match.group(1) if match else "section"


def output_path(out: str | os.PathLike[str], filename: str) -> Path:
    """Where ``--out`` writes a page: a folder (one that exists, or a string ending in ``/``)
    gets ``filename`` inside it, anything else is the file itself. Checked before any work:
    a path under a file, or in a folder that cannot be written, is one :class:`InputError`.
    Nothing is created.

    Args:
        out: the ``--out`` value as given (a ``str`` keeps its trailing ``/``; ``Path`` drops it).
        filename: the page's name inside a folder, e.g. ``"report.html"``.

    Returns:
        The file to write.

    Raises:
        InputError: ``out`` is empty, lies under a file, or its folder cannot be written.

    Example:
        >>> output_path("site/", "report.html"), output_path("site/r.html", "report.html")
        (PosixPath('site/report.html'), PosixPath('site/r.html'))
    """
    text = os.fspath(out)
    if not str(text).strip():
        raise InputError("--out is empty; pass a file (page.html) or a folder (site/).")
    path = Path(text)
    if str(text).endswith(("/", os.sep)) or path.is_dir():
        path = path / filename
    # the nearest existing ancestor must be a folder this process can write
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(
            f"cannot write {path}: {parent} is a file, not a folder. Pass --out a file in a "
            "folder (site/page.html) or a folder (site/)."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot write {path}: the folder {parent} is not writable. Pass --out a place you "
            "can write."
        )
    return path


def write_report(run: Run, out: str | os.PathLike[str] | None = None) -> Path:
    """Write :func:`run_report` of ``run`` atomically (a reader never sees half a page).

    Args:
        run: a stored run.
        out: the file to write (default None: ``report.html`` in the run's folder); a folder
            (one that exists, or a string ending in ``/``) gets ``report.html`` inside it;
            missing parent folders are created (:func:`output_path`).

    Returns:
        The path written.

    Raises:
        InputError: the place cannot be written (the message names it and the fix).

    Example:
        >>> write_report(RunStore().get(7), "site/run-7.html")  # doctest: +SKIP
        PosixPath('site/run-7.html')
        >>> write_report(RunStore().get(7), "site/")  # doctest: +SKIP
        PosixPath('site/report.html')
    """
    path = run.dir / "report.html" if out is None else output_path(out, "report.html")
    text = run_report(run, folder=path.parent.absolute())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_page(path, text)
    except OSError as exc:
        raise InputError(
            f"cannot write the report to {path}: {exc.strerror or exc}. Pass --out FILE (or "
            "out=...) in a folder you can write."
        ) from exc
