"""The training loop: schedules, determinism, exact resume, loss hooks, callbacks, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from trustlab.data import ArrayDataset
from trustlab.errors import CheckpointError, InputError
from trustlab.train import Callback, Trainer, TrainSettings, fit
from trustlab.train.trainer import CHECKPOINT_NAME, collapse, epoch_line


def blobs(n: int = 96, seed: int = 0, k: int = 3) -> ArrayDataset:
    """Three separable blobs of 1x4x4 'images' in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centres = torch.linspace(0.2, 0.8, k)[y]
    x = (centres.view(-1, 1, 1, 1) + 0.05 * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)
    return ArrayDataset(x, y, [f"c{i}" for i in range(k)])


def tiny(k: int = 3, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, k)
    )


def weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_schedules() -> None:
    s = TrainSettings(epochs=10, lr=0.1, schedule="cosine")
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(5) == pytest.approx(0.05)
    assert s.lr_at(9) == pytest.approx(0.05 * (1 + math.cos(math.pi * 9 / 10)))
    floor = TrainSettings(epochs=10, lr=0.01, min_lr=0.001)  # CosineAnnealingLR's eta_min
    assert floor.lr_at(0) == pytest.approx(0.01) and floor.lr_at(5) == pytest.approx(0.0055)
    st = TrainSettings(epochs=8, lr=1.0, schedule="step", gamma=0.1)
    assert [st.lr_at(e) for e in (0, 3, 4, 5, 6, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    st = TrainSettings(epochs=8, lr=1.0, schedule="step", milestones=[2], gamma=0.5)
    assert st.lr_at(1) == 1.0 and st.lr_at(2) == 0.5
    w = TrainSettings(epochs=10, lr=0.3, schedule="constant", warmup_epochs=2)
    assert [w.lr_at(e) for e in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    # default step milestones: after warm-up, distinct, never epoch 0
    assert TrainSettings(epochs=1, schedule="step").lr_at(0) == pytest.approx(0.1)
    assert TrainSettings(epochs=3, schedule="step").step_milestones() == [2]
    ws = TrainSettings(epochs=10, schedule="step", warmup_epochs=6, lr=1.0)
    assert ws.step_milestones() == [8, 9] and ws.lr_at(6) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": -1},
        {"epochs": 0},
        {"lr": 0},
        {"optimizer": "rmsprop"},
        {"epoch": 3},
        {"momentum": 1.0},
        {"milestones": [20], "epochs": 10},
        {"nesterov": True, "optimizer": "adam"},
    ],
)
def test_settings_reject_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        TrainSettings(**bad)


def test_bad_keyword_settings_are_input_errors() -> None:
    with pytest.raises(InputError, match="'epochs'"):
        Trainer(tiny(), epochs=-1)
    with pytest.raises(InputError, match="unknown key"):
        Trainer(tiny(), epoch=3)


def test_learns_and_is_deterministic() -> None:
    data = blobs()
    r1 = fit(tiny(), data, data, epochs=5, lr=0.2, batch_size=16, device="cpu", progress=False)
    r2 = fit(tiny(), data, data, epochs=5, lr=0.2, batch_size=16, device="cpu", progress=False)
    assert r1.final["test_accuracy"] > 0.9
    assert r1.history == [
        {**h, "epoch_seconds": r1.history[i]["epoch_seconds"]} for i, h in enumerate(r2.history)
    ]
    assert torch.equal(weights(r1.model), weights(r2.model))
    r3 = fit(
        tiny(), data, data, epochs=5, lr=0.2, batch_size=16, seed=1, device="cpu", progress=False
    )
    assert not torch.equal(weights(r1.model), weights(r3.model))


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_resume_matches_uninterrupted(tmp_path, opt: str) -> None:
    data = blobs()
    kw = dict(
        epochs=4,
        lr=0.05,
        batch_size=16,
        optimizer=opt,
        augment="flip",
        device="cpu",
        progress=False,
    )
    full = Trainer(tiny(), **kw).fit(data, data)

    # stop after two epochs (a callback sets trainer.stop), then resume in a fresh trainer
    class StopAt2(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            trainer.stop = epoch == 2

    Trainer(tiny(), callbacks=[StopAt2()], checkpoint_dir=tmp_path, **kw).fit(data, data)
    # the resumed trainer starts from *other* weights: only a real restore can match
    fresh = tiny()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)

    class Probe(Callback):
        def on_train_start(self, trainer):
            self.start_epoch = trainer.epoch

    probe = Probe()
    resumed = Trainer(fresh, checkpoint_dir=tmp_path, callbacks=[probe], **kw).fit(
        data, data, resume_from=tmp_path / CHECKPOINT_NAME
    )
    assert probe.start_epoch == 2
    assert _strip(resumed.history) == _strip(full.history)
    assert torch.equal(weights(resumed.model), weights(full.model))


def test_resume_refuses_other_settings(tmp_path) -> None:
    data = blobs()
    Trainer(tiny(), epochs=2, checkpoint_dir=tmp_path, device="cpu", progress=False).fit(data)
    with pytest.raises(CheckpointError, match="lr: 0.1 -> 0.5"):
        Trainer(tiny(), epochs=3, lr=0.5, device="cpu", progress=False).fit(
            data, resume_from=tmp_path / CHECKPOINT_NAME
        )
    more = Trainer(tiny(), epochs=3, device="cpu", progress=False).fit(
        data, resume_from=tmp_path / CHECKPOINT_NAME
    )
    assert len(more.history) == 3


def test_fit_restores_the_callers_rng() -> None:
    data, model = blobs(), tiny()
    torch.manual_seed(5)
    fit(model, data, epochs=1, device="cpu", progress=False)
    after_fit = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after_fit)


def test_loss_hooks() -> None:
    data = blobs()
    seen = []

    def mae(logits, y):
        seen.append(logits.shape)
        return (1 - logits.softmax(1).gather(1, y[:, None])).mean()

    r = fit(tiny(), data, epochs=1, batch_size=32, loss_fn=mae, device="cpu", progress=False)
    assert seen and seen[0] == (32, 3) and "train_accuracy" in r.final

    calls = []

    def batch_loss(model, x, y):  # e.g. a loss that makes its own inputs
        calls.append(x.shape[0])
        return nn.functional.cross_entropy(model(x.flip(-1)), y)

    r = fit(
        tiny(), data, epochs=1, batch_size=32, compute_loss=batch_loss, device="cpu", progress=False
    )
    assert calls == [32, 32, 32] and "train_accuracy" not in r.final
    with pytest.raises(InputError):
        Trainer(tiny(), loss_fn=mae, compute_loss=batch_loss)
    with pytest.raises(InputError, match="label_smoothing"):
        Trainer(tiny(), loss_fn=mae, label_smoothing=0.1)


def test_label_smoothing_changes_loss() -> None:
    data = blobs()
    a = fit(tiny(), data, epochs=1, device="cpu", progress=False)
    b = fit(tiny(), data, epochs=1, label_smoothing=0.2, device="cpu", progress=False)
    assert a.final["train_loss"] != b.final["train_loss"]


def test_callbacks_and_log() -> None:
    data = blobs()
    events, logged = [], []

    class Rec(Callback):
        def on_train_start(self, t):
            events.append("start")

        def on_epoch_start(self, t, e):
            events.append(f"e{e}")

        def on_epoch_end(self, t, e, m):
            events.append(f"end{e}")

        def on_train_end(self, t, r):
            events.append("done")

    fit(
        tiny(),
        data,
        epochs=2,
        callbacks=[Rec()],
        log=lambda e, m: logged.append(e),
        device="cpu",
        progress=False,
    )
    assert events == ["start", "e0", "end1", "e1", "end2", "done"]
    assert logged == [1, 2]


def test_incompatible_model_and_data() -> None:
    data = blobs(k=3)
    with pytest.raises(InputError, match="num_classes=3"):
        fit(tiny(k=2), data, epochs=1, device="cpu", progress=False)
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(10, 3))
    with pytest.raises(InputError, match="cannot take inputs"):
        fit(wrong, data, epochs=1, device="cpu", progress=False)


def test_test_set_with_other_classes() -> None:
    with pytest.raises(InputError, match="test set has 5"):
        fit(tiny(k=3), blobs(k=3), blobs(k=5), epochs=1, device="cpu", progress=False)


def test_diverging_loss_is_reported() -> None:
    data = blobs()

    def nan_loss(logits, y):
        return logits.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="learning rate"):
        fit(tiny(), data, epochs=1, loss_fn=nan_loss, device="cpu", progress=False)


def test_accepts_plain_torch_dataset() -> None:
    data = blobs()

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data.x[i], int(data.y[i])

    r = fit(tiny(), Plain(), Plain(), epochs=2, device="cpu", progress=False)
    ref = fit(tiny(), data, data, epochs=2, device="cpu", progress=False)
    assert _strip(r.history) == _strip(ref.history)


def test_gradient_clipping_bounds_update() -> None:
    data = blobs()
    model = tiny(dropout=0.0)
    before = weights(model).clone()
    fit(
        model,
        data.subset(range(16)),
        epochs=1,
        batch_size=16,
        lr=1.0,
        momentum=0.0,
        weight_decay=0.0,
        clip_grad_norm=1e-3,
        device="cpu",
        progress=False,
    )
    assert (weights(model) - before).norm() <= 1e-3 + 1e-6


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"lr": math.inf}, "'lr'"),
        ({"lr": math.nan}, "'lr'"),
        ({"lr": 0.0}, "'lr'"),
        ({"epochs": 100_001}, "'epochs'"),
        ({"weight_decay": math.inf}, "'weight_decay'"),
        ({"clip_grad_norm": math.inf}, "'clip_grad_norm'"),
    ],
)
def test_absurd_settings_name_the_setting(bad: dict, named: str) -> None:
    with pytest.raises(InputError, match=named) as info:
        Trainer(tiny(), progress=False, **bad)
    assert "\n" not in str(info.value)


def test_sanity_limits_keep_the_defaults_and_large_values() -> None:
    assert TrainSettings() == TrainSettings(epochs=10, lr=0.1, weight_decay=5e-4)
    assert TrainSettings(epochs=100_000, lr=50.0).epochs == 100_000


def _collapse_warnings(record: list) -> list[str]:
    return [str(w.message) for w in record if "collapsed" in str(w.message)]


def test_a_collapsed_run_warns_once_with_what_to_try() -> None:
    """A loss whose gradient is zero: the loss never moves and nothing is learned."""

    def stuck(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits * 0).sum() + 83.61

    with pytest.warns(UserWarning) as record:
        result = fit(tiny(), blobs(), blobs(seed=1), epochs=6, loss_fn=stuck, progress=False)
    found = _collapse_warnings(record.list)
    assert len(found) == 1, found  # once per run, not once per epoch
    assert "stayed at 83.61 since epoch 1" in found[0]
    assert "lower learning rate" in found[0] and "loss settings" in found[0]
    assert len(result.history) == 6


def test_chance_accuracy_is_named_at_the_end_of_the_run() -> None:
    """The issue's case: the loss moves a little, the test accuracy ends at chance."""
    history = [
        {"epoch": e, "train_loss": 83.6 + 0.1 * e, "test_accuracy": 0.103} for e in range(1, 11)
    ]
    labels = torch.arange(1000) % 10
    assert collapse(history, labels, 10, final=False) is None  # judged at the end only
    found = collapse(history, labels, 10)
    assert found is not None and found.startswith(
        "training looks collapsed: test accuracy 10.30% is chance level (always answering the "
        "most frequent class scores 10.00%)"
    )
    # a majority class sets the bar: 70% on labels that are 70% one class is chance
    skewed = torch.tensor([0] * 7 + [1] * 3)
    at_majority = [{"epoch": e, "train_loss": 1.0 / e, "test_accuracy": 0.7} for e in (1, 2, 3)]
    assert collapse(at_majority, skewed, 2) is not None
    above = [{**h, "test_accuracy": 0.8} for h in at_majority]
    assert collapse(above, skewed, 2) is None


def test_a_loss_stopped_by_an_annealed_lr_is_not_a_collapse() -> None:
    """The end of a long cosine schedule: lr ~0 freezes the loss of a model that learned."""
    settings = TrainSettings(epochs=100, lr=0.01, schedule="cosine")
    lrs = [settings.lr_at(e) for e in range(100)]
    history = [
        {"epoch": e + 1, "train_loss": max(0.5, 2.0 - 0.05 * e), "lr": lr, "test_accuracy": 0.9}
        for e, lr in enumerate(lrs)
    ]
    labels = torch.arange(1000) % 10
    assert collapse(history, labels, 10) is None
    # the same flat loss at a learning rate that should move it is still a sign
    flat = [{**h, "lr": 0.01} for h in history]
    found = collapse(flat, labels, 10)
    assert found is not None and "stayed at 0.5 since epoch" in found


def test_a_healthy_run_does_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    data = blobs()
    result = fit(tiny(), data, data, epochs=5, lr=0.2, batch_size=16, progress=False)
    assert result.final["test_accuracy"] > 0.9
    assert _collapse_warnings(recwarn.list) == []


def test_collapse_detection_reads_the_metrics_only() -> None:
    def stuck(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits * 0).sum() + 2.0

    kw = dict(epochs=4, loss_fn=stuck, progress=False)
    with pytest.warns(UserWarning):
        warned = fit(tiny(), blobs(), blobs(seed=1), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet = fit(tiny(), blobs(), blobs(seed=1), **kw)
    assert torch.equal(weights(warned.model), weights(quiet.model))
    assert _strip(warned.history) == _strip(quiet.history)


def test_short_runs_are_not_judged() -> None:
    history = [{"epoch": 1, "train_loss": 2.3, "test_accuracy": 0.1}] * 2
    assert collapse(history, torch.arange(10), 10) is None
    assert collapse(history * 2, torch.arange(10), 10) is not None
    # a loss that stopped moving near zero is a fitted model, not a collapse
    fitted = [{"epoch": e, "train_loss": 1e-5, "train_accuracy": 1.0} for e in range(1, 5)]
    assert collapse(fitted, torch.arange(10), 10) is None


def test_epoch_lines_when_asked_and_no_bar_is_shown(capsys: pytest.CaptureFixture) -> None:
    """stderr is not a terminal here (as in a log file or CI): no bar, so one line per epoch."""
    fit(tiny(), blobs(), blobs(seed=1), epochs=3, progress=True, log_epochs=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/3  loss ") and "test acc " in lines[0]
    assert lines[2].startswith("epoch 3/3") and lines[2].endswith("s elapsed)")


def test_no_epoch_lines_by_default_or_when_quiet(capsys: pytest.CaptureFixture) -> None:
    fit(tiny(), blobs(), epochs=2)  # a notebook's fit(): progress on, no lines
    fit(tiny(), blobs(), epochs=2, progress=False)
    assert capsys.readouterr().err == ""


def test_epoch_line_format() -> None:
    line = epoch_line(
        {"epoch": 3, "train_loss": 0.41234, "test_accuracy": 0.953, "epoch_seconds": 4.12},
        10,
        12.44,
    )
    assert line == "epoch 3/10  loss 0.4123  test acc 95.30%  (4.1 s; 12.4 s elapsed)"
