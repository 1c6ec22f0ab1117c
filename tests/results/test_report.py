"""A run's report (trustlab.results.report): one self-contained page for any kind of run, whose
numbers are the store's, written atomically; and the ``trustlab report`` command."""

from __future__ import annotations

import base64
import json
import math
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.results import Run, RunStore, run_report, write_report
from trustlab.results.plots import curves_png
from trustlab.results.report import format_number, metric_family, training_figures

runner = CliRunner()


# -- reading a page back --------------------------------------------------------------------------
class _Page(HTMLParser):
    """Tables by id (cells as ``(text, data-sort)``), images' src/alt, sections, pre blocks."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.images: list[dict[str, str | None]] = []
        self.sections: list[str] = []
        self.pres: list[str] = []
        self.warnings: list[str] = []
        self.ids: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._sort: str | None = None
        self._pre: list[str] | None = None
        self._warn: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell, self._sort = [], a.get("data-sort")
        elif tag == "img":
            self.images.append(a)
        elif tag == "section":
            self.sections.append(a.get("id") or "")
        elif tag == "pre":
            self._pre = []
        elif tag == "p" and a.get("class") == "warning":
            self._warn = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(("".join(self._cell).strip(), self._sort))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None
        elif tag == "p" and self._warn is not None:
            self.warnings.append("".join(self._warn))
            self._warn = None

    def handle_data(self, data: str) -> None:
        for buf in (self._cell, self._pre, self._warn):
            if buf is not None:
                buf.append(data)


def _cells(page: _Page, table_id: str) -> dict[str, tuple[str, str | None]]:
    """A two-column table as ``{name: (shown text, data-sort)}``."""
    return {row[0][0]: row[1] for row in page.tables[table_id][1:]}


def _check_self_contained(text: str, page: _Page) -> None:
    assert page.images, "no image on the page"
    for img in page.images:
        assert (img.get("src") or "").startswith("data:image/png;base64,"), img.get("alt")
    low = text.lower()
    assert "http://" not in low and "https://" not in low
    assert "<link" not in low and "<script src" not in low and "url(" not in low
    assert len(page.ids) == len(set(page.ids)), "an id is used twice"


def _assert_numbers_equal(cells: dict[str, tuple[str, str | None]], stored: dict) -> None:
    for name, value in stored.items():
        shown, sort = cells[name]
        assert shown == format_number(value), name
        if isinstance(value, float) and math.isfinite(value):
            assert float(sort) == value, name  # the exact stored value, not a rounded one


# -- runs of several kinds ------------------------------------------------------------------------
EPOCHS = [
    {"train_loss": 2.301, "test_loss": 2.25, "train_accuracy": 0.11, "test_accuracy": 0.15},
    {"train_loss": 1.402, "test_loss": 1.3, "train_accuracy": 0.55, "test_accuracy": 0.61},
    {"train_loss": 0.713, "test_loss": 0.9, "train_accuracy": 0.81, "test_accuracy": 0.7777777},
]


def _train_run(store: RunStore, png: bool = True) -> Run:
    run = store.create_run("train", "mlp-digits", {"model": "mlp", "lr": 0.1, "sched": {}}, 3)
    for epoch, m in enumerate(EPOCHS, start=1):
        run.log_metrics(epoch, {"epoch": epoch, "lr": 0.1 / epoch, **m})
    if png:
        curves_png(run.artifact_path("roc.png"), {"scores": ([0, 0.2, 1], [0, 0.8, 1])})
        run.add_artifact("roc.png", kind="plot")
    run.finish({"test_accuracy": 0.7777777, "test_loss": 0.9, "epochs": 3, "delta": 1e-05})
    return run


def test_train_run_report_has_the_stored_numbers_curves_and_images(tmp_path: Path) -> None:
    run = _train_run(RunStore(tmp_path / "home"))
    path = write_report(run)
    assert path == run.dir / "report.html"
    text = path.read_text(encoding="utf-8")
    page = _Page(text)
    _check_self_contained(text, page)
    _assert_numbers_equal(_cells(page, "summary-table"), run.summary)
    assert _cells(page, "summary-table")["delta"][0] == "1e-05"  # small values keep their digits
    # the metrics table: every epoch, every value as the store has it
    rows = page.tables["metrics-epoch-table"]
    header = [c[0] for c in rows[0]]
    for row, stored in zip(rows[1:], run.metrics(), strict=True):
        for name, (shown, sort) in zip(header, row, strict=True):
            assert shown == format_number(stored[name])
            assert float(sort) == stored[name]
    # the PNG artefact embedded byte for byte, its name as the caption
    roc = next(i for i in page.images if i["alt"] == "roc.png")
    assert base64.b64decode(roc["src"].split(",", 1)[1]) == (run.dir / "roc.png").read_bytes()
    assert "<figcaption>roc.png</figcaption>" in text
    # header facts and config
    run_facts = _cells(page, "table0")
    assert run_facts["kind"][0] == "train" and run_facts["seed"][0] == "3"
    assert run_facts["status"][0] == "finished"
    assert run_facts["git commit"][0].startswith(run.git_commit or "not recorded")
    assert _cells(page, "config-table")["lr"][0] == "0.1"
    assert {"run", "summary", "curves", "images", "metrics-epoch", "config"} <= set(page.sections)


def test_training_curves_are_drawn_at_the_stored_steps(tmp_path: Path) -> None:
    run = _train_run(RunStore(tmp_path / "home"), png=False)
    figs = {family: fig for phase, family, fig in training_figures(run) if phase == "epoch"}
    assert list(figs) == ["learning rate", "loss", "accuracy"]  # "epoch" is the step counter
    lines = {line.get_label(): line for line in figs["accuracy"].axes[0].lines}
    assert set(lines) == {"train_accuracy", "test_accuracy"}
    assert list(lines["test_accuracy"].get_xdata()) == [1, 2, 3]
    assert list(lines["test_accuracy"].get_ydata()) == [m["test_accuracy"] for m in EPOCHS]
    # one logged step is a table, not a curve
    one = RunStore(tmp_path / "one").create_run("train", "x", {})
    one.log_metrics(1, {"train_loss": 1.0})
    assert training_figures(one) == []


def test_failed_run_shows_its_error_escaped(tmp_path: Path) -> None:
    run = RunStore(tmp_path / "home").create_run("attack", "pgd", {"eps": 0.03})
    run.log_metrics(1, {"robust_accuracy": 0.5})
    run.fail(ValueError("model returned <script>alert(1)</script> instead of logits"))
    text = run_report(run)
    page = _Page(text)
    assert page.warnings == [f"failed: {run.error}"]
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
    assert _cells(page, "table0")["status"][0] == "failed"
    assert page.tables["metrics-epoch-table"][1] == [("1", "1"), ("0.5000", "0.5")]


def test_unknown_kind_gets_config_summary_metrics_and_artefacts(tmp_path: Path) -> None:
    run = RunStore(tmp_path / "home").create_run(
        "my-sweep", "sweep", {"grid": {"lr": [0.1, 0.01]}, "note": "x"}
    )
    for step in range(3):
        run.log_metrics(step, {"score": step / 3, "energy_data": -step}, phase="round")
    (run.artifact_path("found.json")).write_text(json.dumps({"best": {"lr": 0.01}}))
    run.add_artifact("found.json")
    curves_png(run.dir / "extra.png", {"a": ([0, 1], [0, 1])})  # a PNG not recorded as artefact
    trace = "Traceback (most recent call last):\n  File 'x.py', line 1\nValueError: bad"
    scores = {"acc": {"best": 0.5, "lo": None, "values": [0.4, 0.6]}}
    run.finish({"scores": scores, "traceback": trace, "empty": {}})
    text = run_report(run)
    page = _Page(text)
    config = _cells(page, "config-table")
    assert config["grid.lr"][0] == "[0.1, 0.01]" and config["note"][0] == "x"
    summary = _cells(page, "summary-table")
    assert summary["scores.acc.best"] == ("0.5000", "0.5")
    assert summary["scores.acc.lo"][0] == "—" and summary["empty"][0] == "{}"
    assert summary["scores.acc.values"][0] == "[0.4, 0.6]"
    assert summary["traceback"][0] == "(shown below)" and trace in page.pres
    assert any('"best"' in pre for pre in page.pres)  # the small JSON artefact, as text
    assert [i["alt"] for i in page.images][-1] == "extra.png"
    assert [row[0][0] for row in page.tables["metrics-round-table"][1:]] == ["0", "1", "2"]
    assert {f for _, f, _ in training_figures(run)} == {"score", "data"}


def test_submission_scores_and_failure(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "home")
    config = {"benchmark": "robustness-quick", "benchmark_version": "1",
              "submission": {"kind": "model", "ref": "m.py:Net", "label": "mine"}}  # fmt: skip
    run = store.create_run("submission", "robustness-quick/mine", config)
    scores = {
        "clean_accuracy": {"mean": 0.93, "lo": 0.9, "hi": 0.95, "values": [0.92, 0.93, 0.94]},
        "robust_accuracy": {"mean": 0.4125, "lo": None, "hi": None, "values": [0.4125]},
    }
    better = {"clean_accuracy": True, "robust_accuracy": True}
    run.finish({"scores": scores, "primary": "robust_accuracy", "higher_is_better": better})
    page = _Page(run_report(run))
    rows = {r[0][0]: r for r in page.tables["scores-table"][1:]}
    assert rows["robust_accuracy (primary)"][1:4] == [("0.4125", "0.4125"), ("—", None),
                                                      ("—", None)]  # fmt: skip
    assert rows["clean_accuracy"][4][0] == "0.9200, 0.9300, 0.9400"
    assert rows["clean_accuracy"][5][0] == "higher"
    assert "scores.clean_accuracy.mean" not in _cells(page, "summary-table")  # not twice
    failed = store.create_run("submission", "robustness-quick/slow", config)
    trace = "Traceback (most recent call last):\n  ...\nTimeoutError: over 60 s"
    failed.set_summary({"failure": "timeout", "reason": "over 60 s", "traceback": trace})
    failed.fail("timeout: over 60 s")
    page = _Page(run_report(failed))
    assert page.warnings == ["failed: timeout: over 60 s"]
    assert _cells(page, "summary-table")["failure"][0] == "timeout" and trace in page.pres


def test_running_and_interrupted_runs_say_so(tmp_path: Path) -> None:
    run = RunStore(tmp_path / "home").create_run("train", "live", {})
    assert "still running" in run_report(run)
    run.mark_interrupted()
    assert f"trustlab resume {run.id}" in run_report(run)


# -- reproductions --------------------------------------------------------------------------------
def sce_smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A finished ``sce`` reproduction at the smoke preset, in a store made once per test
    session and worker (about 20 s single-threaded; the browser test reuses it)."""
    from trustlab.experiments.base import reproduce

    store = RunStore(tmp_path_factory.getbasetemp() / "sce-smoke-store")
    done = store.list(status="finished") if (store.root / "trustlab.db").is_file() else []
    if not done:
        reproduce("sce", "smoke", device="cpu", workers=1, progress=False, store=store)
        done = store.list(status="finished")
    return done[0]


@pytest.fixture(scope="module")
def sce_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return sce_smoke_run(tmp_path_factory)


@pytest.mark.slow
def test_reproduction_report_has_claims_table_and_every_seed(sce_run: Run, tmp_path) -> None:
    run = sce_run
    path = write_report(run, tmp_path / "out" / "sce.html")
    assert path.is_file() and not (run.dir / "report.html").exists()
    page = _Page(path.read_text(encoding="utf-8"))
    assert len(page.ids) == len(set(page.ids))
    # claims: verdict badge and detail as the summary stores them, statement from report.md
    claims = {row[0][0]: row for row in page.tables["claims-table"][1:]}
    assert set(claims) == set(run.summary["claims"])
    report_md = (run.dir / "report.md").read_text()
    for name, claim in run.summary["claims"].items():
        _, verdict, statement, detail = claims[name]
        assert verdict == (claim["verdict"], claim["verdict"])
        assert detail[0] == claim["detail"]
        assert f"- **{claim['verdict']}** {statement[0]}: {claim['detail']}" in report_md
    # the results table: cells as report.md shows them, sorting by the stored means
    stored = json.loads((run.dir / "table.json").read_text())
    shown = [line for line in report_md.splitlines() if line.startswith("|")]
    md_rows = [[c.strip() for c in line.strip("|").split("|")] for line in shown[2:]]
    results = page.tables["results-table"]
    assert [c[0] for c in results[0]] == [*stored["keys"], *stored["metrics"], "seeds"]
    assert [[c[0] for c in row] for row in results[1:]] == md_rows
    for row, entry in zip(results[1:], stored["summary"], strict=True):
        for j, metric in enumerate(stored["metrics"]):
            assert float(row[len(stored["keys"]) + j][1]) == entry[metric]
    # every seed's row of table.json, each number exact in data-sort
    seeds = page.tables["seeds-table"]
    header = [c[0] for c in seeds[0]]
    assert len(seeds) - 1 == len(stored["rows"])
    for row, rec in zip(seeds[1:], stored["rows"], strict=True):
        for name, (text, sort) in zip(header, row, strict=True):
            assert text == format_number(rec[name])
            if isinstance(rec[name], float):
                assert float(sort) == rec[name]
    # every logged step is shown: the job rows as logged, one per job
    assert "metrics-row" in page.sections
    assert len(page.tables["metrics-row-table"]) - 1 == len(run.metrics(phase="row"))
    assert _cells(page, "summary-table")["wall_s"][0] == format_number(run.summary["wall_s"])


def test_report_md_missing_falls_back_to_the_stored_intervals(tmp_path: Path) -> None:
    run = RunStore(tmp_path / "home").create_run("reproduce", "toy-smoke", {"experiment": "toy"})
    rows = [{"arm": "a", "seed": s, "score": 0.5 + s / 10} for s in range(3)]
    summary = [{"arm": "a", "seeds": 3, "score": 0.6, "score_lo": 0.5, "score_hi": 0.7}]
    table = {"keys": ["arm"], "metrics": ["score"], "rows": rows, "summary": summary}
    run.artifact_path("table.json").write_text(json.dumps(table))
    claims = {"a-wins": {"passed": False, "verdict": "INCONCLUSIVE", "detail": "a 0.60"}}
    run.finish({"passed": False, "claims": claims})
    page = _Page(run_report(run))
    assert page.tables["results-table"][1] == [
        ("a", None),
        ("0.60 [0.50, 0.70]", "0.6"),
        ("3", "3"),
    ]
    assert page.tables["claims-table"][1][1] == ("INCONCLUSIVE", "INCONCLUSIVE")
    assert page.tables["claims-table"][1][2] == ("", None)  # no report.md: no statement


def test_bench_backdoor_report_shows_its_matrix(tmp_path: Path) -> None:
    from trustlab.experiments.bench_backdoor import BackdoorBench, matrix, matrix_html

    rows = [
        {"attack": "badnets", "defense": "strip", "seed": 0, "clean_acc": 0.9, "asr": 0.95,
         "auroc": 0.812},
        {"attack": "blind", "defense": "strip", "seed": 0, "clean_acc": 0.88, "asr": 0.5,
         "auroc": 0.61},
    ]  # fmt: skip
    run = RunStore(tmp_path / "home").create_run(
        "reproduce", "bench-backdoor-smoke", {"experiment": "bench-backdoor"}
    )
    preset = BackdoorBench.presets["smoke"]
    (run.dir / "matrix.html").write_text(matrix_html(rows, preset))
    run.finish({"passed": True, "claims": {}})
    page = _Page(run_report(run))
    header, lines = matrix(rows)
    table = page.tables["matrix-table"]
    assert [c[0] for c in table[0]] == header
    assert [[c[0] for c in row] for row in table[1:]] == lines
    assert table[1][2] == ("95.0%", "95.0")  # sorts as a number


# -- writing --------------------------------------------------------------------------------------
def test_write_report_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _train_run(RunStore(tmp_path / "home"), png=False)
    target = run.dir / "report.html"
    target.write_text("old page")

    def refuse(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", refuse)
        with pytest.raises(InputError, match="cannot write the report to .*No space left"):
            write_report(run)
    assert target.read_text() == "old page"  # the old page intact, no temporary file left
    assert sorted(p.name for p in run.dir.iterdir() if p.name.startswith(".")) == []
    (tmp_path / "site").mkdir()  # a folder gets report.html inside it
    assert write_report(run, tmp_path / "site") == tmp_path / "site" / "report.html"


def test_run_report_refuses_what_is_not_a_run() -> None:
    with pytest.raises(InputError, match="needs a stored run"):
        run_report({"id": 1})  # type: ignore[arg-type]


def test_numbers_and_families() -> None:
    assert [format_number(v) for v in (0.5, 1e-05, 12345.678, None, math.nan, True, 7)] == [
        "0.5000", "1e-05", "1.235e+04", "—", "—", "true", "7",
    ]  # fmt: skip
    assert format_number(math.inf) == "inf" and format_number(-math.inf) == "-inf"
    names = ("d_loss", "test_acc", "epoch_seconds", "lr", "party0_credibility", "psnr")
    assert [metric_family(n) for n in names] == [
        "loss", "accuracy", "time (s)", "learning rate", "credibility", "psnr",
    ]  # fmt: skip


# -- the command ----------------------------------------------------------------------------------
def test_cli_report(_isolated_home: Path, tmp_path: Path) -> None:
    run = _train_run(RunStore(_isolated_home))
    out = runner.invoke(app, ["report", str(run.id)])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == str(run.dir / "report.html")
    assert (run.dir / "report.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    target = tmp_path / "pages" / "r.html"
    out = runner.invoke(app, ["report", f"run-{run.id:06d}", "--out", str(target)])
    assert out.exit_code == 0 and out.output.strip() == str(target) and target.is_file()
    out = runner.invoke(app, ["report", "99"])
    assert out.exit_code == 2
    assert out.output.startswith("error: no run 99 in the results store")
    out = runner.invoke(app, ["report", "seven"])
    assert out.exit_code == 2 and "is not a run id" in out.output


# -- --out folders, `latest`, an audit's scorecard, a reproduction's logged rows ------------------
def test_out_with_a_trailing_slash_is_a_folder(_isolated_home: Path, tmp_path: Path) -> None:
    run = _train_run(RunStore(_isolated_home), png=False)
    new = tmp_path / "newdir"
    out = runner.invoke(app, ["report", str(run.id), "--out", f"{new}/"])
    assert out.exit_code == 0, out.output
    assert new.is_dir() and out.output.strip() == str(new / "report.html")
    assert (new / "report.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert write_report(run, f"{tmp_path / 'py'}/") == tmp_path / "py" / "report.html"
    (tmp_path / "afile").write_text("x")
    out = runner.invoke(app, ["report", str(run.id), "--out", str(tmp_path / "afile" / "r.html")])
    assert out.exit_code == 2 and "is a file, not a folder" in out.output


def test_output_path_refuses_an_unwritable_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trustlab.results.report import output_path

    monkeypatch.setattr(os, "access", lambda *_: False)
    with pytest.raises(InputError, match="is not writable"):
        output_path(tmp_path / "r.html", "report.html")


def test_report_latest_is_the_newest_finished_run(_isolated_home: Path) -> None:
    out = runner.invoke(app, ["report", "latest"])
    assert out.exit_code == 2 and "holds none" in out.output and "trustlab runs" in out.output
    store = RunStore(_isolated_home)
    _train_run(store, png=False)
    newest = store.create_run("audit", "audit-x", {})
    newest.finish({"clean.accuracy": 0.5})
    store.create_run("train", "still-running", {})  # not finished: not `latest`
    out = runner.invoke(app, ["report", "latest"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == str(newest.dir / "report.html")


def _audit_run(store: RunStore) -> Run:
    run = store.create_run("audit", "audit-tiny", {"checks": ["clean"]})
    run.artifact_path("scorecard.html").write_text("<!doctype html><title>card</title>")
    run.add_artifact("scorecard.html", kind="report")
    run.artifact_path("scorecard.json").write_text(json.dumps({"summary": {}}))
    run.add_artifact("scorecard.json", kind="scorecard")
    run.finish({"clean.accuracy": 0.9, "warnings": 0})
    return run


class _Links(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href and not href.startswith("#"):
            self.hrefs.append(href)


def test_audit_report_links_its_scorecard_relative_to_the_page(tmp_path: Path) -> None:
    run = _audit_run(RunStore(tmp_path / "home"))
    for out in (None, tmp_path / "site" / "a" / "r.html"):
        path = write_report(run, out)
        text = path.read_text(encoding="utf-8")
        page = _Page(text)
        assert page.sections[:2] == ["run", "pages"]  # right under the header
        hrefs = _Links(text).hrefs
        assert len(hrefs) == 1 and not hrefs[0].startswith(("/", "http"))
        assert (path.parent / hrefs[0]).resolve() == (run.dir / "scorecard.html").resolve()
    assert _Links(run_report(run)).hrefs == ["scorecard.html"]


def test_reproduction_logged_rows_are_shown(tmp_path: Path) -> None:
    run = RunStore(tmp_path / "home").create_run("reproduce", "toy-smoke", {"experiment": "toy"})
    rows = [{"arm": "a", "seed": s, "score": 0.5 + s / 10} for s in range(2)]
    for i, r in enumerate(rows):
        run.log_metrics(i, {"seed": r["seed"], "score": r["score"]}, phase="row")
    summary = [{"arm": "a", "seeds": 2, "score": 0.55, "score_lo": 0.5, "score_hi": 0.6}]
    table = {"keys": ["arm"], "metrics": ["score"], "rows": rows, "summary": summary}
    run.artifact_path("table.json").write_text(json.dumps(table))
    run.finish({"passed": True, "claims": {}})
    page = _Page(run_report(run))
    assert "metrics-row" in page.sections
    logged = page.tables["metrics-row-table"]
    assert [c[0] for c in logged[0]] == ["step", "seed", "score"]
    assert [[c[1] for c in row] for row in logged[1:]] == [["0", "0", "0.5"], ["1", "1", "0.6"]]


def test_store_latest_is_the_newest_finished_run(tmp_path) -> None:
    from trustlab.errors import InputError
    from trustlab.results import RunStore

    store = RunStore(tmp_path / "runs")
    with pytest.raises(InputError, match="holds none"):
        store.latest()
    with store.create_run("train", "a", {}) as first:
        pass
    with store.create_run("audit", "b", {}) as second:
        pass
    store.create_run("train", "still running", {})
    assert store.latest().id == second.id
    assert store.latest("train").id == first.id
    with pytest.raises(InputError, match="finished mia run"):
        store.latest("mia")
