"""DP-SGD through Opacus in the one training loop: the accountant's epsilon, per-sample clipping,
Poisson sampling (empty batches included), BatchNorm -> GroupNorm, determinism, exact resume,
and the errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

from trustlab.data import ArrayDataset
from trustlab.errors import CheckpointError, InputError
from trustlab.models.spec import ModelSpec
from trustlab.train import Callback, Trainer, TrainSettings
from trustlab.train.checkpoint import load_model, save_model
from trustlab.train.dp import DPSettings, sample_rate
from trustlab.train.trainer import CHECKPOINT_NAME

from .test_trainer import blobs, tiny, weights

DP = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}


def test_settings_need_exactly_one_of_epsilon_and_noise() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DPSettings()
    with pytest.raises(ValueError, match="exactly one"):
        DPSettings(epsilon=8, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="delta"):
        DPSettings(epsilon=8, delta=1.5)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        TrainSettings(clip_grad_norm=1.0, dp=DP)
    assert DPSettings(epsilon=8).accountant == "rdp"


def test_compute_loss_is_refused() -> None:
    with pytest.raises(InputError, match="compute_loss"):
        Trainer(tiny(), dp=DP, compute_loss=lambda m, x, y: m(x).sum(), progress=False)


def test_epsilon_equals_opacus_accountant_for_the_same_steps() -> None:
    data = blobs(n=90)
    result = Trainer(
        tiny(), epochs=2, batch_size=16, lr=0.1, dp=DP, device="cpu", progress=False
    ).fit(data)
    q = sample_rate(90, 16)
    assert q == pytest.approx(1 / 6)  # Opacus: 1 / number of batches
    acc = RDPAccountant()
    acc.history = [(1.0, q, 2 * 6)]
    assert result.history[-1]["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    acc.history = [(1.0, q, 6)]
    assert result.history[0]["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    # the trained model is a plain module again (Opacus' hooks removed)
    assert type(result.model) is nn.Sequential
    assert not any(m._forward_hooks or m._backward_hooks for m in result.model.modules())


@pytest.mark.slow
def test_target_epsilon_sets_the_noise_and_is_met() -> None:
    data = blobs(n=90)
    result = Trainer(
        tiny(), epochs=2, batch_size=16, dp={"epsilon": 3.0}, device="cpu", progress=False
    ).fit(data)
    eps = result.history[-1]["epsilon"]
    assert 2.9 <= eps <= 3.0 + 1e-6


def test_per_sample_clipping_matches_the_hand_computed_update() -> None:
    """No noise, q = 1 (the whole set in one Poisson step): one SGD step must equal
    -lr * mean_i clip_C(grad_i), each sample's gradient clipped on its own (whole-batch
    clipping would give another update)."""
    data = blobs(n=32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    ref = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    ref.load_state_dict(model.state_dict())
    c, lr = 0.05, 1.0
    grads = []
    for i in range(len(data)):  # per-sample gradients by hand (a test may loop)
        ref.zero_grad()
        nn.functional.cross_entropy(ref(data.x[i : i + 1]), data.y[i : i + 1]).backward()
        g = torch.cat([p.grad.flatten() for p in ref.parameters()])
        grads.append(g * min(1.0, c / float(g.norm())))
    per_sample = torch.stack(grads).mean(0)
    expected = weights(ref) - lr * per_sample
    # whole-batch clipping of the mean gradient: a different update (so the test can tell)
    ref.zero_grad()
    nn.functional.cross_entropy(ref(data.x), data.y).backward()
    full = torch.cat([p.grad.flatten() for p in ref.parameters()])
    batch_clipped = full * min(1.0, c / float(full.norm()))
    assert float((batch_clipped - per_sample).norm()) > 0.1 * float(per_sample.norm())
    Trainer(
        model,
        epochs=1,
        batch_size=32,
        lr=lr,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        dp={"noise_multiplier": 0.0, "max_grad_norm": c},
        device="cpu",
        progress=False,
    ).fit(data)
    torch.testing.assert_close(weights(model), expected, atol=1e-6, rtol=1e-5)


def test_noise_is_added() -> None:
    """The same run with and without noise ends elsewhere; noise of sigma*C per coordinate."""
    data = blobs(n=64)
    kw = dict(epochs=1, batch_size=64, lr=1.0, momentum=0.0, weight_decay=0.0, device="cpu")
    a, b = tiny(dropout=0.0), tiny(dropout=0.0)
    before = weights(a)
    Trainer(a, dp={"noise_multiplier": 0.0}, progress=False, **kw).fit(data)
    Trainer(b, dp={"noise_multiplier": 10.0}, progress=False, **kw).fit(data)
    diff = weights(b) - weights(a)
    # one step: lr * sigma * C / E[|B|] = 10 / 64 per coordinate, before any clipping effect
    assert diff.std() == pytest.approx(10 / 64, rel=0.25)
    assert not torch.equal(weights(a), before)


def test_empty_poisson_batches_are_noisy_steps() -> None:
    data = blobs(n=6)
    # q = 1/6: an empty sample has probability (5/6)^6 = 0.33 per step, so 24 steps without
    # one have probability 0.67^24 < 1e-4 (and the seed is fixed)
    result = Trainer(
        tiny(), epochs=4, batch_size=1, lr=0.1, dp=DP, device="cpu", progress=False
    ).fit(data)
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    acc = RDPAccountant()
    acc.history = [(1.0, 1 / 6, 4 * 6)]  # every step counted, the empty ones included
    assert result.history[-1]["epsilon"] == pytest.approx(acc.get_epsilon(1e-5))


def test_batchnorm_is_replaced_with_a_message_and_the_spec_records_it(tmp_path) -> None:
    small = blobs(n=48)  # 4x4 images, doubled to 8x8
    data = ArrayDataset(
        small.x.repeat_interleave(2, 2).repeat_interleave(2, 3), small.y, small.classes
    )
    torch.manual_seed(0)
    spec = ModelSpec("resnet8", 3, 1, 8)
    model = spec.build()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.warns(UserWarning, match="BatchNorm layer.*GroupNorm"):
        trainer = Trainer(model, epochs=1, batch_size=16, dp=DP, device="cpu", progress=False)
    result = trainer.fit(data)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in result.model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in result.model.modules())
    rebuilt = ModelSpec.from_model(result.model)
    assert rebuilt is not None and rebuilt.group_norm
    path = save_model(result.model, tmp_path / "m.safetensors", spec=rebuilt.to_dict())
    loaded = load_model(path)
    x = data.x[:5]
    result.model.eval()
    assert torch.allclose(loaded(x), result.model(x))


def test_a_model_without_batchnorm_is_used_as_is() -> None:
    model = tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer = Trainer(model, epochs=1, dp=DP, progress=False)
    assert trainer.model is model


def test_same_seed_same_weights_and_exact_resume(tmp_path) -> None:
    data = blobs(n=64)
    kw = dict(epochs=3, batch_size=16, lr=0.1, dp=DP, device="cpu", augment="flip")
    a = Trainer(tiny(), progress=False, **kw).fit(data)
    b = Trainer(tiny(), progress=False, **kw).fit(data)
    assert torch.equal(weights(a.model), weights(b.model))

    class StopAt1(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            trainer.stop = epoch == 1

    Trainer(tiny(), callbacks=[StopAt1()], checkpoint_dir=tmp_path, progress=False, **kw).fit(data)
    resumed = Trainer(tiny(), progress=False, **kw).fit(
        data, resume_from=tmp_path / CHECKPOINT_NAME
    )
    assert torch.equal(weights(resumed.model), weights(a.model))
    assert resumed.history[-1]["epsilon"] == pytest.approx(a.history[-1]["epsilon"])


def test_resume_of_a_non_dp_checkpoint_with_dp_is_refused(tmp_path) -> None:
    data = blobs(n=32)
    Trainer(tiny(), epochs=1, checkpoint_dir=tmp_path, device="cpu", progress=False).fit(data)
    with pytest.raises(CheckpointError):
        Trainer(tiny(), epochs=2, dp=DP, device="cpu", progress=False).fit(
            data, resume_from=tmp_path / CHECKPOINT_NAME
        )


def test_cli_train_dp_records_epsilon_and_delta(_isolated_home) -> None:
    from typer.testing import CliRunner

    from trustlab.cli import app
    from trustlab.results import RunStore

    args = ["train", "--dataset", "digits", "--model", "resnet8", "--epochs", "1", "--quiet"]
    bad = CliRunner().invoke(app, [*args, "--epsilon", "8"])
    assert bad.exit_code != 0 and "add --dp" in bad.output
    none = CliRunner().invoke(app, [*args, "--dp"])
    assert none.exit_code != 0 and "exactly one" in none.output
    out = CliRunner().invoke(app, [*args, "--dp", "--noise-multiplier", "1.0", "--delta", "1e-4"])
    assert out.exit_code == 0, out.output
    assert "GroupNorm" in out.output  # resnet8's BatchNorm replaced, and said so
    (run,) = RunStore(_isolated_home).list()
    assert run.summary["delta"] == 1e-4 and run.summary["noise_multiplier"] == 1.0
    assert 0 < run.summary["epsilon"] < math.inf
    assert run.config["dp"]["noise_multiplier"] == 1.0
    model = load_model(run.dir / "model.safetensors")  # rebuilt with GroupNorm
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


def test_a_target_epsilon_run_resumes_only_with_its_epochs(tmp_path) -> None:
    data = blobs(n=48)
    kw = dict(batch_size=16, dp={"epsilon": 3.0}, device="cpu", progress=False)

    class StopAt1(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            trainer.stop = epoch == 1

    Trainer(tiny(), epochs=2, callbacks=[StopAt1()], checkpoint_dir=tmp_path, **kw).fit(data)
    with pytest.raises(CheckpointError, match="original epochs"):
        Trainer(tiny(), epochs=4, **kw).fit(data, resume_from=tmp_path / CHECKPOINT_NAME)


def test_the_trained_model_keeps_no_opacus_state() -> None:
    result = Trainer(tiny(), epochs=1, dp=DP, device="cpu", progress=False).fit(blobs(n=32))
    for p in result.model.parameters():
        assert p.grad is None and not hasattr(p, "summed_grad")
        assert getattr(p, "grad_sample", None) is None
    assert result.privacy is not None and result.privacy["secure_mode"] is False


def test_cli_dp_flags_refine_the_yaml_dp_block(tmp_path) -> None:
    from trustlab.config import load_train_config

    path = tmp_path / "dp.yaml"
    path.write_text("dp:\n  epsilon: 4.0\n  max_grad_norm: 2.0\n")
    assert load_train_config(path, dp={}).dp.epsilon == 4.0
    cfg = load_train_config(path, dp={"max_grad_norm": 0.5})
    assert cfg.dp.epsilon == 4.0 and cfg.dp.max_grad_norm == 0.5
    cfg = load_train_config(path, dp={"noise_multiplier": 1.0})
    assert cfg.dp.epsilon is None and cfg.dp.noise_multiplier == 1.0
    assert load_train_config(path).dp.epsilon == 4.0  # no flag: the file's block


def test_fixed_size_batches_warn_that_epsilon_assumes_poisson() -> None:
    with pytest.warns(UserWarning, match="Poisson"):
        result = Trainer(
            tiny(), epochs=1, batch_size=16, dp={**DP, "poisson": False}, progress=False
        ).fit(blobs(n=32))
    assert result.privacy is not None and result.privacy["epsilon"] > 0


def test_sigma_is_sized_for_the_rate_the_accountant_charges() -> None:
    """For 930 examples in batches of 10, q = 1/93 but 1 / (1/93) rounds to 92.99..., so Opacus
    runs 92 steps an epoch and charges each at q' = 1/92: a target epsilon must be met at q'
    (141 of the batch counts 1..1,999 behave so)."""
    from opacus.accountants.utils import get_noise_multiplier

    from trustlab.train.dp import accounted_rate

    q = sample_rate(930, 10)
    assert int(1 / q) == 92 and accounted_rate(q) == pytest.approx(1 / 92)
    data = blobs(n=930)
    result = Trainer(
        tiny(), epochs=1, batch_size=10, dp={"epsilon": 2.0}, device="cpu", progress=False
    ).fit(data)
    eps = result.history[-1]["epsilon"]
    assert eps <= 2.0 + 1e-6
    # sized for q instead, the same target is overspent
    sigma_q = get_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=q, steps=92)
    acc = RDPAccountant()
    acc.history = [(sigma_q, 1 / 92, 92)]
    assert acc.get_epsilon(1e-5) > 2.0


def test_secure_mode_without_torchcsprng_is_a_clear_error() -> None:
    pytest.importorskip("opacus")
    try:
        import torchcsprng  # noqa: F401

        pytest.skip("torchcsprng is installed")
    except ImportError:
        pass
    with pytest.raises(InputError, match="torchcsprng"):
        Trainer(
            tiny(), epochs=1, batch_size=16, dp={**DP, "secure_mode": True}, device="cpu",
            progress=False,
        ).fit(blobs(n=32))  # fmt: skip
