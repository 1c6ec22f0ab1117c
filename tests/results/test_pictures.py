"""The pictures the workflows store say what they show: the membership-inference ROC
(``roc.png`` of ``trustlab mia``) and Neural Cleanse's reversed triggers (``triggers.png`` of
``trustlab defend --defense nc``), drawn here from synthetic numbers (no training)."""

from __future__ import annotations

import pytest
import torch

from trustlab.defenses.backdoor.neural_cleanse import NCReport, anomaly_index
from trustlab.metrics.privacy import membership_metrics
from trustlab.results.plots import curves_figure, figure_texts


def _report(k: int = 4, flagged: tuple[int, ...] = (1,), classes=None) -> NCReport:
    masks = torch.full((k, 6, 6), 0.5)
    for c in flagged:
        masks[c] = 0.05
    norms = masks.flatten(1).sum(1)
    extra = {"classes": classes} if classes is not None else {}
    return NCReport(
        norms, anomaly_index(norms).float(), list(flagged), masks, torch.rand(k, 3, 6, 6),
        torch.ones(k), 5, 2.0, extra,
    )  # fmt: skip


def test_triggers_figure_labels_classes_rows_and_flags() -> None:
    from matplotlib.patches import Rectangle

    from trustlab.workflows.defend import triggers_figure

    fig = triggers_figure(_report(), ["plane", "car", "bird", "cat"])
    texts = figure_texts(fig)
    assert {"mask", "mask x pattern", "0: plane", "1: car\nflagged", "2: bird", "3: cat"} <= set(
        texts
    )
    title = next(t for t in texts if t.startswith("Neural Cleanse"))
    assert "flagged as backdoor target: 1: car (anomaly index" in title
    assert any(t.startswith("L1 ") for t in texts) and any(t.startswith("anomaly ") for t in texts)
    assert sum(isinstance(p, Rectangle) for p in fig.axes[0].patches) == 1
    # digit classes named by their number, a scan of some classes only, nothing flagged
    texts = figure_texts(triggers_figure(_report(3, (), classes=[2, 5, 7]), list("0123456789")))
    assert {"class 2", "class 5", "class 7"} <= set(texts)
    assert any("no class flagged" in t for t in texts)


def test_triggers_png_writes_a_png(tmp_path) -> None:
    from trustlab.workflows.defend import triggers_png

    path = triggers_png(tmp_path / "triggers.png", _report(), None)
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5_000


def test_mia_roc_has_log_axes_legend_with_auc_and_tpr_at_1pct_fpr(tmp_path, monkeypatch) -> None:
    from trustlab.workflows import mia

    calls = []
    real = mia.curves_png

    def spy(path, curves, **kw):
        calls.append((curves, kw))
        return real(path, curves, **kw)

    monkeypatch.setattr(mia, "curves_png", spy)
    g = torch.Generator().manual_seed(0)
    n = 200
    member = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    strong = torch.randn(2 * n, generator=g) + member.float()
    weak = torch.randn(2 * n, generator=g) + 0.2 * member.float()
    metrics = membership_metrics(strong, member)
    legend = mia._roc_png(
        tmp_path / "roc.png", {"lira": (strong, member), "loss": (weak, member)}, n,
        {"lira": metrics}, "membership inference on run 3: lira",
    )  # fmt: skip
    assert set(legend) == {"lira", "loss"} and (tmp_path / "roc.png").stat().st_size > 10_000
    curves, kw = calls[0]
    fig = curves_figure(curves, **kw)
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    texts = figure_texts(fig)
    assert "membership inference on run 3: lira" in texts
    assert "false positive rate (log scale)" in texts and "true positive rate (log scale)" in texts
    entries = [t.get_text() for t in ax.get_legend().get_texts()]
    assert entries[0] == (
        f"lira: AUC {metrics['auc']:.3f}, TPR {metrics['tpr_at_1fpr']:.1%} at 1% FPR"
    )
    weak_m = membership_metrics(weak, member)  # computed when the caller passes no metrics
    assert entries[1] == f"loss: AUC {weak_m['auc']:.3f}, TPR {weak_m['tpr_at_1fpr']:.1%} at 1% FPR"
    assert entries[2] == "chance (y = x)"
    assert ax.get_xlim()[0] == pytest.approx(min(1e-3, 1 / n))


def test_triggers_figure_of_a_report_with_only_masks_and_patterns() -> None:
    from types import SimpleNamespace

    from trustlab.workflows.defend import triggers_figure

    bare = SimpleNamespace(masks=torch.rand(3, 6, 6), patterns=torch.rand(3, 1, 6, 6))
    texts = figure_texts(triggers_figure(bare))
    assert {"mask", "mask x pattern", "class 0", "class 1", "class 2"} <= set(texts)
    assert any("no class flagged" in t for t in texts)
