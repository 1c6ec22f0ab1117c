"""The JEM defense's fine-tuning stabilisers (the authors' squared-loss penalties and per-iteration
lr warm-up) and its determinism for a fixed seed whatever state the global RNG is in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.data import load_dataset
from trustlab.defenses.privacy import JEMDefense, JEMLoss, JEMSettings, SGLDSampler, energy
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.train import Callback, TrainSettings


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


def _mlp(data, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ModelSpec.for_data("mlp", data, hidden=[32]).build()


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fixed_sampler(x_q: torch.Tensor) -> SGLDSampler:
    sampler = SGLDSampler(x_q.shape[1:], 3, buffer_size=30, steps=1)
    sampler.sample = lambda net, n=None, y=None: x_q  # type: ignore[method-assign]
    return sampler


def test_defaults_are_the_authors_transfer_recipe() -> None:
    s = JEMSettings()
    # train_jem.py @params/transfer_params.txt: --l2reg, both l2 weights 0.1, 1000 warm-up iters
    assert (s.energy_l2, s.ce_l2, s.warmup_iters) == (0.1, 0.1, 1000)
    # JEM's SGLD and replay buffer
    assert (s.steps, s.step_size, s.noise, s.reinit, s.buffer_size) == (20, 1.0, 0.01, 0.05, 10_000)
    with pytest.raises(InputError, match="warmup_iters"):
        JEMDefense(warmup_iters=-1)
    with pytest.raises(InputError, match="energy_l2"):
        JEMLoss(_fixed_sampler(torch.rand(2, 1, 2, 2)), energy_l2=-0.1)


def test_loss_adds_the_squared_energy_gap_and_squared_ce_by_default() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x_q = torch.rand(5, 1, 2, 2) * 3
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        ce = F.cross_entropy(model(x), y)
        gap = energy(model, x).mean() - energy(model, x_q).mean()
    assert abs(gap) > 0.05 and ce > 0.5  # both squares matter at this scale
    loss, _ = JEMLoss(_fixed_sampler(x_q), data_noise=0.0)(model, x, y)
    assert torch.allclose(loss, ce + 0.1 * ce**2 + gap + 0.1 * gap**2, atol=1e-6)
    # JEM's own loss (no penalties)
    plain, _ = JEMLoss(_fixed_sampler(x_q), data_noise=0.0, energy_l2=0.0, ce_l2=0.0)(model, x, y)
    assert torch.allclose(plain, ce + gap, atol=1e-6)
    # no energy term: no squared gap either (the authors add it inside their p(x) branch)
    ce_only, _ = JEMLoss(_fixed_sampler(x_q), data_noise=0.0, energy_weight=0.0)(model, x, y)
    assert torch.allclose(ce_only, ce + 0.1 * ce**2, atol=1e-6)
    # the weights are passed through from the defense's settings
    custom = JEMDefense(energy_l2=0.3, ce_l2=0.0).loss(_fixed_sampler(x_q))
    assert (custom.energy_l2, custom.ce_l2) == (0.3, 0.0)


class _LrLog(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_batch_end(self, trainer, step, loss) -> None:
        self.lrs.append(trainer.last_lr)


def test_warmup_is_linear_per_iteration_across_epochs(digits) -> None:
    from trustlab.defenses.privacy.jem import _WarmupTrainer

    data = digits.subset(torch.arange(96))  # 3 batches of 32 per epoch
    settings = TrainSettings(epochs=3, batch_size=32, optimizer="adam", lr=1e-3)
    log = _LrLog()
    _WarmupTrainer(
        _mlp(data), settings, warmup_iters=4, callbacks=[log], device="cpu", progress=False
    ).fit(data)
    # the warm-up scales the (cosine) schedule's lr of each epoch: 1e-3, 7.5e-4, 2.5e-4
    expected = [0.0, 2.5e-4, 5e-4, 0.75 * 7.5e-4, 7.5e-4, 7.5e-4, 2.5e-4, 2.5e-4, 2.5e-4]
    assert log.lrs == pytest.approx(expected)


def test_a_resumed_warmup_continues_where_it_stopped(digits, tmp_path) -> None:
    from trustlab.defenses.privacy.jem import _WarmupTrainer
    from trustlab.train.trainer import CHECKPOINT_NAME

    data = digits.subset(torch.arange(96))  # 3 steps per epoch
    settings = TrainSettings(epochs=3, batch_size=32, optimizer="adam", lr=1e-3)

    class StopAfterFirst(Callback):
        def on_epoch_end(self, trainer, epoch, metrics) -> None:
            trainer.stop = epoch == 1

    def trainer(**kw):
        return _WarmupTrainer(
            _mlp(data), settings, warmup_iters=4, device="cpu", progress=False, **kw
        )

    full_log = _LrLog()
    full = trainer(callbacks=[full_log]).fit(data)
    trainer(callbacks=[StopAfterFirst()], checkpoint_dir=tmp_path).fit(data)
    log = _LrLog()
    resumed = trainer(callbacks=[log], checkpoint_dir=tmp_path).fit(
        data, resume_from=tmp_path / CHECKPOINT_NAME
    )
    assert log.lrs == pytest.approx(full_log.lrs[3:])  # step 3 onwards, not from lr 0 again
    for a, b in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_first_finetuning_step_has_lr_zero_so_one_step_leaves_the_model(digits) -> None:
    """The authors' warm-up starts at lr 0: a fine-tuning of one step changes nothing."""
    data = digits.subset(torch.arange(64))  # one batch of 64
    model = _mlp(data).eval()
    before = _params(model)
    common = dict(buffer_size=50, steps=2, synthetic_size=10, sample_batch=10, threshold=0.0)
    finetune = TrainSettings(epochs=1, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0)
    retrain = TrainSettings(epochs=1, batch_size=64, lr=0.01)
    logged: list[dict[str, float]] = []
    warm = JEMDefense(**common, finetune=finetune, retrain=retrain).defend(
        model, data, device="cpu", log=lambda phase, e, m: logged.append(m) if phase == "jem" else 0
    )
    assert all(torch.equal(v, before[k]) for k, v in warm.jem.state_dict().items())
    assert logged[0]["lr_end"] == 0.0
    cold = JEMDefense(**common, warmup_iters=0, finetune=finetune, retrain=retrain)
    moved = cold.defend(model, data, device="cpu").jem.state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in moved.items())


def test_sampler_is_seeded_whatever_the_global_rng() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    buffers = []
    for state in (1, 2):
        torch.manual_seed(state)
        sampler = SGLDSampler((1, 2, 2), 3, buffer_size=60, steps=3, reinit=0.5, seed=7)
        torch.rand(state * 11)  # the global RNG moves between the draws too
        sampler.sample(model, n=40)
        sampler.sample(model, y=torch.arange(3).repeat(5))
        buffers.append(sampler.buffer.clone())
    assert torch.equal(buffers[0], buffers[1])


def test_same_seed_gives_identical_parameters_whatever_the_global_rng(digits) -> None:
    data = digits.subset(torch.arange(128))
    model = _mlp(data).eval()
    finetune = TrainSettings(epochs=2, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0)
    retrain = TrainSettings(epochs=2, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0)
    options = dict(
        buffer_size=60, steps=3, warmup_iters=3, synthetic_size=30, sample_batch=20, threshold=0.2
    )

    def run(global_seed: int, seed: int = 5):
        torch.manual_seed(global_seed)
        torch.rand(global_seed * 13)
        defense = JEMDefense(**options, seed=seed, finetune=finetune, retrain=retrain)
        return defense.defend(model, data, device="cpu")

    with torch.random.fork_rng(devices=[]):
        a, b, c = run(1), run(2), run(1, seed=6)
    for name in ("jem", "model"):
        pa, pb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        for k, v in pa.items():
            assert torch.equal(v, pb[k]), (name, k)
    assert torch.equal(a.synthetic.x, b.synthetic.x) and torch.equal(a.synthetic.y, b.synthetic.y)
    assert a.report.finetune["energies"] == b.report.finetune["energies"]
    # another seed, another JEM
    pc = c.jem.state_dict()
    assert any(not torch.equal(v, pc[k]) for k, v in a.jem.state_dict().items())
