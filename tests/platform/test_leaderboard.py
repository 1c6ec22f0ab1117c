"""The leaderboard site (trustlab.platform.leaderboard): built from a store with a real smoke
reproduction, a real backdoor-bench smoke run and submission records; the numbers on the pages
are the store's; an empty store; rebuilding; serving; the command."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustlab.cli import app
from trustlab.errors import InputError
from trustlab.experiments.base import Preset
from trustlab.experiments.bench_backdoor import matrix, matrix_html
from trustlab.experiments.results import reproduction_results
from trustlab.platform.benchmarks import get_benchmark
from trustlab.platform.leaderboard import (
    MARKER,
    PAGES,
    LeaderboardServer,
    build_site,
    leaderboards,
    serve,
    submissions,
)
from trustlab.results import RunStore
from trustlab.utils.format import format_interval, format_value

from .leaderboard_data import add_submission, filled_store, stored_scores


class _Page(HTMLParser):
    """The tables (by id: rows of ``(text, data-sort)``), images and links of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.sources: list[str] = []
        self.ids: list[str] = []
        self._table: str | None = None
        self._cell: list[Any] | None = None
        self._depth = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "table":
            self._depth += 1
            if self._depth == 1:
                self._table = a.get("id") or f"table-{len(self.tables)}"
                self.tables[self._table] = []
        elif tag == "tr" and self._table and self._depth == 1:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table and self._depth == 1:
            self._cell = ["", a.get("data-sort")]
        elif tag == "img":
            self.images.append({k: v or "" for k, v in a.items()})
        elif tag == "a":
            self.links.append(a.get("href") or "")
        if tag in ("script", "link", "iframe") and (a.get("src") or a.get("href")):
            self.sources.append(a.get("src") or a.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._depth -= 1
            if self._depth == 0:
                self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0] += data

    def rows(self, table_id: str) -> list[dict[str, tuple[str, str | None]]]:
        """The body rows of a table as ``{header: (text, data-sort)}``."""
        head, *body = self.tables[table_id]
        return [dict(zip([h for h, _ in head], row, strict=True)) for row in body]


def _read(site: Path, name: str) -> _Page:
    return _Page((site / name).read_text())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    return filled_store(tmp_path_factory.mktemp("leaderboard") / "store")


@pytest.fixture(scope="module")
def site(store: RunStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = build_site(store, tmp_path_factory.mktemp("site") / "site")
    assert index.name == "index.html"
    return index.parent


def test_every_page_is_self_contained(site: Path) -> None:
    names = [name for name, _ in PAGES]
    assert sorted(p.name for p in site.iterdir()) == sorted([*names, MARKER])
    for name in names:
        page = _read(site, name)
        assert page.sources == []  # no script, style sheet or frame from elsewhere
        assert len(page.ids) == len(set(page.ids)), page.ids  # each id names one element
        for href in page.links:  # relative links to the site's own pages
            assert "://" not in href and (site / href.split("#")[0]).is_file(), href
        for img in page.images:
            assert img["src"].startswith("data:image/png;base64,") and img["alt"]
            png = base64.b64decode(img["src"].split(",", 1)[1])
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
        text = (site / name).read_text()
        assert "http://" not in text and "https://" not in text


def test_reproductions_page_shows_the_stored_claims(store: RunStore, site: Path) -> None:
    # the bench is stored as a reproduction without claims: it has its own page
    (result,) = [r for r in reproduction_results(store) if r.claims]
    assert result.experiment == "sce"
    rows = _read(site, "reproductions.html").rows("reproductions-table")
    assert len(rows) == len(result.claims)
    run = store.get(result.run_id)
    for row, claim in zip(rows, result.claims, strict=True):
        stored = run.summary["claims"][claim.claim]
        assert row["experiment"][0] == "sce"
        assert row["verdict"] == (stored["verdict"], stored["verdict"])
        assert row["measured"][0] == stored["detail"]
        assert float(row["wall time"][1]) == run.summary["wall_s"]
        assert row["seeds"][0] == str(run.config["preset"]["seeds"])
        assert row["commit"][0] == run.git_commit[:7]
        assert row["run"][0] == str(run.id)
        assert row["date"][1] == run.ended
    texts = [r["paper claim"][0] for r in rows]
    assert "without noise every loss is within 3 points of CE" in texts


def test_backdoor_page_shows_the_stored_matrix(store: RunStore, site: Path) -> None:
    (bench,) = [r for r in store.list(kind="reproduce") if r.name == "bench-backdoor-smoke"]
    stored = json.loads((bench.dir / "table.json").read_text())["rows"]
    page = _read(site, "backdoor.html")
    head, *body = page.tables["backdoor-matrix"]
    header, lines = matrix(stored)
    assert [h for h, _ in head] == header
    assert [[t for t, _ in row] for row in body] == lines
    strip = next(r for r in stored if r["defense"] == "strip")
    (row,) = page.rows("backdoor-matrix")
    assert row["ASR"] == (f"{100 * strip['asr']:.1f}%", f"{100 * strip['asr']:.1f}")
    assert row["strip: AUROC"][0] == f"{strip['auroc']:.2f}"
    # backdoor-quick: repairers ranked by DER, detectors by AUROC, each in its own table
    der = page.rows("backdoor-quick-leaderboard-der")
    auroc = page.rows("backdoor-quick-leaderboard-auroc")
    assert [r["submission"][0] for r in der] == ["prune-it"]
    # one interval-less score: the mean alone, as the CLI and the run report write it
    assert der[0]["der"] == (format_value(0.61), "0.61") == ("0.6100", "0.61")
    assert [r["submission"][0] for r in auroc] == ["strip-like"]


@pytest.mark.parametrize(
    ("page_name", "benchmark", "primary", "order"),
    [
        ("robustness.html", "robustness-quick", "robust_accuracy", ["trades", "Madry-AT", "plain"]),
        ("privacy.html", "privacy-quick", "advantage", ["jem", "undefended"]),  # lower: better
    ],
)
def test_benchmark_pages_rank_the_stored_scores(
    store: RunStore, site: Path, page_name: str, benchmark: str, primary: str, order: list[str]
) -> None:
    page = _read(site, page_name)
    rows = page.rows(f"{benchmark}-leaderboard")
    assert [r["submission"][0] for r in rows] == order
    assert [r["rank"][0] for r in rows] == [str(i + 1) for i in range(len(order))]
    scores = stored_scores(store, benchmark)
    header = [h for h, _ in page.tables[f"{benchmark}-leaderboard"][0]]
    assert header[3] == primary  # the primary metric first
    for row in rows:
        for metric, score in scores[row["submission"][0]].items():
            text, sort = row[metric]
            assert text == format_interval(score["mean"], score["lo"], score["hi"], digits=4)
            # the mean reads as `trustlab submit` and the run report write it (format_value)
            assert text.split(" [")[0] == format_value(score["mean"])
            assert float(sort) == score["mean"]  # exactly the stored mean
        assert row["seeds"][0] == "3"
        record = next(r for r in store.list(kind="submission") if r.id == int(row["run"][0]))
        shown = f"{record.config['benchmark_version']} ({record.config['benchmark_hash'][:7]})"
        if record.config["benchmark_hash"] != get_benchmark(benchmark).hash:
            shown += " (earlier)"  # scored on an earlier definition of the benchmark
        assert row["benchmark version"][0] == shown
    assert (
        "(earlier)" in str(rows) if benchmark == "privacy-quick" else "(earlier)" not in str(rows)
    )
    current = get_benchmark(benchmark)
    definition = dict((k, v) for k, v in (tuple(t for t, _ in r) for r in page.tables["table-0"]))
    assert definition["version"] == f"{current.version} ({current.hash[:7]})"
    (failed,) = page.rows(f"{benchmark}-failed")
    (record,) = [r for r in store.list(kind="submission", status="failed")
                 if r.config["benchmark"] == benchmark]  # fmt: skip
    assert failed["submission"][0] == record.config["submission"]["label"]
    assert failed["failure"][0] == record.summary["failure"]
    assert failed["reason"][0].startswith(record.summary["reason"])  # the traceback folds out
    assert len(page.images) == 1 and benchmark in page.images[0]["alt"]


def test_index_summarises_every_page(store: RunStore, site: Path) -> None:
    page = _read(site, "index.html")
    rows = {(r["benchmark"][0], r["primary metric"][0]): r for r in page.rows("benchmarks-table")}
    robust = rows[("robustness-quick", "robust_accuracy")]
    assert (robust["ranked"][0], robust["failed"][0], robust["leader"][0]) == ("3", "1", "trades")
    assert robust["leader's score"] == ("0.4550 [0.3900, 0.5200]", "0.455")
    assert rows[("privacy-quick", "advantage")]["leader"][0] == "jem"
    assert {"der", "auroc"} <= {metric for bench, metric in rows if bench == "backdoor-quick"}
    (result,) = [r for r in reproduction_results(store) if r.claims]
    counts = dict((k, v) for k, v in (tuple(t for t, _ in r) for r in page.tables["table-0"]))
    assert counts["claims"] == str(len(result.claims))
    assert counts["PASS"] == str(sum(c.verdict == "PASS" for c in result.claims))


def test_smoke_reproductions_are_marked_as_pipeline_checks(store: RunStore, site: Path) -> None:
    (result,) = [r for r in reproduction_results(store) if r.claims]
    rows = _read(site, "reproductions.html").rows("reproductions-table")
    shown = f"smoke ({result.dataset}, {result.model}): pipeline check"
    assert rows and all(r["preset"] == (shown, "smoke") for r in rows)  # sorts by the name
    text = (site / "reproductions.html").read_text()
    assert "smoke presets only check that the pipeline runs" in text
    # their verdicts are shown as stored, not re-judged or hidden
    assert [r["verdict"][0] for r in rows] == [c.verdict for c in result.claims]
    index = (site / "index.html").read_text()
    assert f"{len(result.claims)} of these claims come from smoke presets" in index


def test_index_counts_failures_once_per_benchmark(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    add_submission(store, "backdoor-quick", "prune-it", {"der": (0.61, None, None)})
    add_submission(store, "backdoor-quick", "strip-like", {"auroc": (0.88, 0.8, 0.95)})
    for label in ("bad-1", "bad-2"):
        add_submission(store, "backdoor-quick", label, failure=("raised", "ValueError: no"))
    site = build_site(store, tmp_path / "site").parent
    rows = [r for r in _read(site, "index.html").rows("benchmarks-table")
            if r["benchmark"][0] == "backdoor-quick"]  # fmt: skip
    assert [r["primary metric"][0] for r in rows] == ["auroc", "der"]  # two ranked boards
    failed = [r["failed"][0] for r in rows]
    assert sum(int(f) for f in failed if f.isdigit()) == 2  # not 2 per board
    assert failed[0] == "2"


def test_command_refuses_an_out_folder_under_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTLAB_HOME", str(tmp_path / "home"))
    (tmp_path / "afile").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = CliRunner().invoke(app, ["leaderboard", "--out", str(tmp_path / "afile" / "site")])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert lines[0].startswith("error:") and "afile" in lines[0] and "is a file" in lines[0]
    assert "Traceback" not in out.output and "FileExistsError" not in out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert (tmp_path / "afile").read_text() == "x"
    with pytest.raises(InputError, match="is a file"):
        build_site(RunStore(tmp_path / "home"), tmp_path / "afile" / "deeper" / "site")


def test_command_serve_checks_the_port_before_writing_the_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTLAB_HOME", str(tmp_path / "home"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = CliRunner().invoke(
            app, ["leaderboard", "--serve", "--port", str(port), "--out", str(tmp_path / "site")]
        )
    assert out.exit_code == 2, out.output
    assert out.output.strip().startswith("error:") and "another port" in out.output
    assert not (tmp_path / "site").exists()  # nothing built before the port was checked
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_submissions_show_a_cached_evaluation_once(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    add_submission(store, "privacy-quick", "again", failure=("timeout", "too slow"),
                   cache_key="k1")  # fmt: skip
    add_submission(store, "privacy-quick", "again", {"advantage": (0.1, 0.0, 0.2)},
                   cache_key="k1")  # fmt: skip
    add_submission(store, "privacy-quick", "again", failure=("timeout", "too slow"),
                   cache_key="k1")  # fmt: skip
    (only,) = submissions(store, "privacy-quick")
    assert only.status == "finished" and only.mean("advantage") == 0.1
    (board,) = leaderboards([only])
    assert board.primary == "advantage" and board.ranked == [only]


def test_empty_store_builds_pages_that_say_how_to_add_results(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "no-store")
    index = build_site(store, tmp_path / "site")
    assert not (tmp_path / "no-store").exists()  # only read
    texts = {name: (index.parent / name).read_text() for name, _ in PAGES}
    assert "No finished reproduction" in texts["reproductions.html"]
    # the first command suggested gives a meaningful verdict (a smoke preset would read FAIL)
    assert "trustlab reproduce sce --preset quick" in texts["reproductions.html"]
    assert "--preset smoke" not in texts["reproductions.html"]
    assert "only check that the pipeline runs" in texts["reproductions.html"]
    assert "trustlab bench backdoor --preset quick" in texts["backdoor.html"]
    assert (
        "trustlab submit --defense my_module:MyDefense --benchmark backdoor-quick"
        in (texts["backdoor.html"])
    )
    assert "No submission to robustness-quick yet" in texts["robustness.html"]
    assert "--benchmark privacy-quick" in texts["privacy.html"]
    assert "No reproduction yet" in texts["index.html"]


def test_rebuild_picks_up_a_new_run_and_swaps_the_whole_site(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    add_submission(store, "robustness-quick", "first", {"robust_accuracy": (0.3, 0.2, 0.4)})
    server = LeaderboardServer(store, tmp_path / "site", port=0)
    server.build()
    site = tmp_path / "site"
    old = (site / "robustness.html").stat().st_ino
    assert server.refresh() is False  # nothing new
    add_submission(store, "robustness-quick", "second", {"robust_accuracy": (0.5, 0.4, 0.6)})
    assert server.refresh() is True
    rows = _read(site, "robustness.html").rows("robustness-quick-leaderboard")
    assert [r["submission"][0] for r in rows] == ["second", "first"]
    assert (site / "robustness.html").stat().st_ino != old  # a new file, not one rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "store"]  # no build left over
    assert server.refresh() is False


def test_swap_without_an_atomic_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trustlab.platform.leaderboard as lb

    store = RunStore(tmp_path / "store")
    build_site(store, tmp_path / "site")
    monkeypatch.setattr(lb, "_exchange", lambda a, b: False)  # e.g. not Linux: two renames
    add_submission(store, "privacy-quick", "swapped", {"advantage": (0.1, 0.0, 0.2)})
    build_site(store, tmp_path / "site")
    assert "swapped" in (tmp_path / "site" / "privacy.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "store"]


def test_refuses_a_folder_that_is_not_a_site(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a leaderboard site"):
        build_site(RunStore(tmp_path / "store"), mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        build_site(RunStore(tmp_path / "store"), tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_site(RunStore(tmp_path / "store"), empty).is_file()  # an empty folder is fine


def _until(condition: Callable[[], Any], timeout: float = 60.0) -> bool:
    """Wait until ``condition()`` is true (True), or ``timeout`` seconds passed (False)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_serve_answers_and_rebuilds_when_results_land(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    ready: list[str] = []
    events: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(store, tmp_path / "site", "127.0.0.1", 0, 0.05),
        kwargs={"on_ready": ready.append, "on_event": events.append, "stop": stop},
    )  # fmt: skip
    thread.start()
    try:
        assert _until(lambda: ready or not thread.is_alive())
        (url,) = ready
        status, text = _get(url + "index.html")
        assert status == 200 and "trustlab leaderboard: overview" in text
        assert _get(url)[0] == 200  # the folder's index
        with urllib.request.urlopen(url + "favicon.ico", timeout=10) as response:
            assert response.status == 204  # no 404 in a browser's console
        with pytest.raises(urllib.error.HTTPError):
            _get(url + "../store/trustlab.db")  # only the site folder is served
        add_submission(store, "privacy-quick", "late", {"advantage": (0.05, 0.0, 0.1)})
        assert _until(lambda: "late" in _get(url + "privacy.html")[1])
        assert _until(lambda: any("rebuilt" in e for e in events))  # reported after the swap
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(urllib.error.URLError):
        _get(url + "index.html")  # stopped


def test_serve_reports_a_taken_port(tmp_path: Path) -> None:
    with LeaderboardServer(RunStore(tmp_path / "store"), tmp_path / "site", port=0) as first:
        port = int(first.url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(InputError, match="another port"):
            LeaderboardServer(RunStore(tmp_path / "store"), tmp_path / "site", port=port).start()
    with pytest.raises(InputError, match="poll_s"):
        serve(RunStore(tmp_path / "store"), tmp_path / "site", poll_s=0)


def test_command_builds_the_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    add_submission(RunStore(home), "robustness-quick", "cli", {"robust_accuracy": (0.3, 0.2, 0.4)})
    monkeypatch.setenv("TRUSTLAB_HOME", str(home))
    out = CliRunner().invoke(app, ["leaderboard", "--out", str(tmp_path / "site")])
    assert out.exit_code == 0, out.output
    assert str(tmp_path / "site" / "index.html") in out.output
    assert "cli" in (tmp_path / "site" / "robustness.html").read_text()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "a.txt").write_text("a")
    out = CliRunner().invoke(app, ["leaderboard", "--out", str(tmp_path / "taken")])
    assert out.exit_code == 2 and "error:" in out.output and "not a leaderboard site" in out.output


def test_matrix_html_uses_the_shared_page() -> None:
    rows = [
        {"attack": "badnets", "defense": "strip", "seed": 0, "clean_acc": 0.9, "asr": 0.8,
         "auroc": 0.75},
        {"attack": "badnets", "defense": "strip", "seed": 1, "clean_acc": 0.8, "asr": 0.6,
         "auroc": 0.65},
    ]  # fmt: skip
    text = matrix_html(rows, Preset("smoke", "digits", "cnn-small", seeds=2))
    page = _Page(text)
    (table,) = page.tables.values()
    assert [[t for t, _ in r] for r in table] == [matrix(rows)[0], *matrix(rows)[1]]
    assert table[1][1][0] == "85.0%" and table[1][3][0] == "0.70"  # means over the seeds
    assert "<table>" in text and "<style>" in text and page.sources == []
    assert "trustlab bench backdoor: digits, cnn-small (smoke)" in text
