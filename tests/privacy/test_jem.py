"""The JEM membership-inference defense: energy, SGLD sampler, JEM loss, synthetic set, the whole
defense and its stored run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.data import load_dataset
from trustlab.defenses.privacy import (
    JEMDefense,
    JEMLoss,
    JEMSettings,
    SGLDSampler,
    energy,
    sample_synthetic,
)
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.train import Trainer, TrainSettings, evaluate, load_model

# small enough that every test takes a fraction of a second to a few seconds on one core
TINY = {"buffer_size": 200, "steps": 5, "sample_batch": 50}
FINETUNE = TrainSettings(epochs=1, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0)
RETRAIN = TrainSettings(epochs=4, batch_size=64, lr=0.1)


@pytest.fixture(scope="module")
def digits() -> tuple:
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _mlp(data, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ModelSpec.for_data("mlp", data, hidden=[64]).build()


@pytest.fixture(scope="module")
def trained(digits) -> nn.Module:
    """An MLP trained 3 epochs on digits (~90% test accuracy)."""
    train, test = digits
    model = _mlp(train)
    settings = TrainSettings(epochs=3, batch_size=64, lr=0.1)
    Trainer(model, settings, device="cpu", progress=False).fit(train)
    assert evaluate(model, test)["accuracy"] > 0.8
    return model.eval()


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: x.shape[0]] + 0 * x.flatten(1).sum(1, keepdim=True)


def test_energy_is_minus_logsumexp_of_the_logits() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [100.0, 100.0]])
    e = energy(FixedLogits(logits), torch.zeros(3, 1, 2, 2))
    expected = torch.tensor([-math.log(2.0), -math.log(4.0), -(100.0 + math.log(2.0))])
    assert torch.allclose(e, expected, atol=1e-5)


def test_sgld_lowers_the_energy_of_its_samples(trained, digits) -> None:
    """The issue's acceptance test: SGLD chains from uniform noise end at lower energy."""
    sampler = SGLDSampler(digits[0].input_shape, 10, buffer_size=100, steps=20, seed=0)
    x0 = torch.rand(64, *digits[0].input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        e0 = energy(trained, x0)
    x = sampler.langevin(trained, x0.clone())
    with torch.no_grad():
        e1 = energy(trained, x)
    assert e1.mean() < e0.mean() - 1.0
    assert (e1 < e0).float().mean() >= 0.95
    assert x.min() >= 0 and x.max() <= 1
    # persistent chains through the buffer keep lowering it
    before = energy(trained, sampler.buffer).mean()
    for _ in range(3):
        sampler.sample(trained, n=100)
    with torch.no_grad():
        assert energy(trained, sampler.buffer).mean() < before - 1.0


def test_class_conditional_sgld_raises_the_requested_logit(trained, digits) -> None:
    sampler = SGLDSampler(digits[0].input_shape, 10, buffer_size=100, steps=20, reinit=1.0)
    y = torch.arange(10).repeat(5)
    x = sampler.sample(trained, y=y)
    with torch.no_grad():
        pred = trained(x).argmax(1)
    assert (pred == y).float().mean() > 0.9


def test_buffer_reinitialisation_fraction_and_class_split() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    sampler = SGLDSampler((1, 2, 2), 3, buffer_size=300, steps=0, reinit=0.05, seed=3)
    start = sampler.buffer.clone()
    fractions = []
    for _ in range(10):
        sampler.sample(model, n=1000)
        fractions.append(sampler.last_reinit.float().mean().item())
    assert abs(sum(fractions) / len(fractions) - 0.05) < 0.01
    assert not torch.equal(sampler.buffer, start)  # re-initialised chains were written back
    # no re-initialisation: a draw is a buffer entry; class 2 draws come from the last third
    sampler = SGLDSampler((1, 2, 2), 3, buffer_size=300, steps=0, reinit=0.0, seed=3)
    out = sampler.sample(model, y=torch.full((50,), 2))
    assert not sampler.last_reinit.any()
    rows = (out[:, None] == sampler.buffer[None]).flatten(2).all(2)
    assert rows.any(1).all()
    assert (rows.nonzero()[:, 1] >= 200).all()
    # every draw re-initialised
    SGLDSampler((1, 2, 2), 3, buffer_size=300, steps=0, reinit=1.0).sample(model, n=10)


@pytest.mark.parametrize("training", [True, False])
def test_sampler_leaves_parameters_and_mode_unchanged(digits, training) -> None:
    model = _mlp(digits[0])
    model.train(training)
    model.inner.layers.fc1.weight.requires_grad_(False)  # a frozen layer stays frozen
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sampler = SGLDSampler(digits[0].input_shape, 10, buffer_size=50, steps=3)
    x = sampler.sample(model, n=8)
    assert x.shape == (8, *digits[0].input_shape) and not x.requires_grad
    assert model.training is training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_jem_loss_is_ce_plus_energy_difference() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    sampler = SGLDSampler((1, 2, 2), 3, buffer_size=30, steps=1)
    x_q = torch.rand(5, 1, 2, 2)
    sampler.sample = lambda net, n=None, y=None: x_q  # type: ignore[method-assign]
    loss_fn = JEMLoss(sampler, data_noise=0.0, energy_l2=0.0, ce_l2=0.0)  # JEM's own loss
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    loss, logits = loss_fn(model, x, y)
    with torch.no_grad():
        e_data, e_q = energy(model, x).mean(), energy(model, x_q).mean()
        expected = F.cross_entropy(model(x), y) + e_data - e_q
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.equal(logits, model(x))
    stats = loss_fn.pop_stats()
    assert set(stats) == {"ce", "energy_data", "energy_sgld"} and loss_fn.pop_stats() == {}


def test_jem_loss_trains_through_the_trainer(digits) -> None:
    train = digits[0].subset(torch.arange(256))
    model = _mlp(train)
    sampler = SGLDSampler(train.input_shape, 10, buffer_size=100, steps=5)
    loss = JEMLoss(sampler)
    result = Trainer(model, FINETUNE.model_copy(update={"epochs": 2}), compute_loss=loss,
                     device="cpu", progress=False).fit(train)  # fmt: skip
    assert len(result.history) == 2
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert result.history[-1]["train_accuracy"] > result.history[0]["train_accuracy"]
    assert sampler.draws == 8  # one draw per batch: 2 epochs x 4 batches
    stats = loss.pop_stats()
    assert stats["energy_sgld"] > stats["energy_data"] - 100  # finite numbers, recorded


def test_synthetic_set_shape_labels_range_and_balance(trained, digits) -> None:
    train = digits[0]
    sampler = SGLDSampler(train.input_shape, 10, buffer_size=200, steps=10, seed=1)
    syn = sample_synthetic(trained, sampler, 95, train, batch_size=50)
    assert syn.x.shape == (95, *train.input_shape)
    assert syn.x.min() >= 0 and syn.x.max() <= 1
    assert syn.classes == train.classes and syn.mean == train.mean and syn.std == train.std
    assert torch.bincount(syn.y, minlength=10).tolist() == [10] * 5 + [9] * 5
    with torch.no_grad():
        prob = F.softmax(trained(syn.x), 1)
    assert torch.equal(prob.argmax(1), syn.y) and (prob.max(1).values > 0.5).all()
    assert syn.sampling["kept"] == 95 and syn.sampling["short"] == 0
    # unconditional: labels are the argmax, classes as they come
    uncond = sample_synthetic(trained, sampler, 40, train, conditional=False, batch_size=50)
    with torch.no_grad():
        assert torch.equal(trained(uncond.x).argmax(1), uncond.y)
    with pytest.raises(InputError, match="threshold"):
        sample_synthetic(trained, sampler, 10, train, threshold=1.0)


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(InputError, match="stepz"):
        JEMDefense(stepz=3)
    with pytest.raises(InputError, match="reinit"):
        JEMDefense(reinit=1.5)
    with pytest.raises(InputError, match="classes"):
        SGLDSampler((1, 2, 2), 3, buffer_size=30).sample(nn.Linear(4, 3), y=torch.tensor([5]))
    assert JEMSettings().steps == 20 and JEMSettings().reinit == 0.05


@pytest.mark.slow
def test_jem_defense_end_to_end_beats_chance_and_is_deterministic(trained, digits) -> None:
    train, test = digits
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    defense = JEMDefense(**TINY, finetune=FINETUNE, retrain=RETRAIN, synthetic_size=500)
    logged: list[str] = []
    result = defense.defend(
        trained, train, test, device="cpu", log=lambda phase, epoch, m: logged.append(phase)
    )
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())
    assert result.model is not trained and result.jem is not trained
    assert ModelSpec.from_model(result.model) == ModelSpec.from_model(trained)
    assert len(result.synthetic) == 500
    acc = result.report.accuracy
    assert set(acc) == {"undefended", "jem", "defended"}
    assert acc["defended"] > 0.3  # chance is 0.1
    assert logged == ["jem"] + ["retrain"] * 4
    assert set(result.report.finetune["energies"][0]) == {"ce", "energy_data", "energy_sgld"}
    # the same seed gives the same defended model; another seed another one
    again = JEMDefense(**TINY, finetune=FINETUNE, retrain=RETRAIN, synthetic_size=500)
    same = again.defend(trained, train, test, device="cpu")
    assert torch.equal(same.synthetic.x, result.synthetic.x)
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, same.model.state_dict()[k]), k
    other = JEMDefense(**TINY, finetune=FINETUNE, retrain=RETRAIN, synthetic_size=500, seed=1)
    assert not torch.equal(other.defend(trained, train, device="cpu").synthetic.x, same.synthetic.x)


def test_defense_refuses_a_model_it_cannot_rebuild(digits) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    with pytest.raises(InputError, match="make_model"):
        JEMDefense(**TINY).defend(net, digits[0].subset(torch.arange(20)))


@pytest.mark.slow
def test_run_privacy_defense_records_a_train_like_run() -> None:
    from trustlab.results import RunStore
    from trustlab.workflows.privacy_defense import run_privacy_defense
    from trustlab.workflows.train import run_training

    source, _ = run_training(
        {"dataset": "digits", "model": "mlp", "model_kwargs": {"hidden": [32]}, "epochs": 2,
         "batch_size": 64, "device": "cpu", "name": "private"},
        progress=False,
    )  # fmt: skip
    options = {**TINY, "synthetic_size": 300}
    run, result = run_privacy_defense(
        source.id, options=options, retrain="source", device="cpu", progress=False
    )
    assert run.kind == "defend-privacy" and run.status == "finished"
    assert run.config["dataset"] == "digits" and run.config["source_run"] == source.id
    assert run.config["private_split"] == "train" and run.config["defense"] == "jem"
    assert run.config["defense_params"]["steps"] == 5
    assert run.config["defense_params"]["retrain"]["epochs"] == 2  # the source run's recipe
    names = {a["name"] for a in run.artifacts()}
    assert {"model.safetensors", "jem.safetensors", "defense.json", "samples.png"} <= names
    model = load_model(run.dir / "model.safetensors")
    test = load_dataset("digits", "test")
    acc = evaluate(model, test)["accuracy"]
    assert acc == pytest.approx(run.summary["test_accuracy"])
    assert {"undefended_test_accuracy", "jem_test_accuracy", "synthetic_size"} <= set(run.summary)
    phases = {m["phase"] for m in run.metrics()}
    assert phases == {"jem", "epoch"}
    # bad input: nothing is written
    count = len(RunStore().list())
    with pytest.raises(InputError, match="'train' run|train` run"):
        run_privacy_defense(run.id, device="cpu", progress=False)
    with pytest.raises(InputError, match="unknown privacy defense"):
        run_privacy_defense(source.id, "dp", device="cpu")
    with pytest.raises(InputError, match="stepz"):
        run_privacy_defense(source.id, options={"stepz": 1}, device="cpu")
    with pytest.raises(InputError, match="retrain"):
        run_privacy_defense(source.id, retrain="paper", device="cpu")
    with pytest.raises(InputError, match="no run 999"):
        run_privacy_defense(999, device="cpu")
    assert len(RunStore().list()) == count


def test_training_config_drops_the_defense_keys() -> None:
    from trustlab.config import TrainConfig
    from trustlab.utils.validate import parse_config
    from trustlab.workflows.privacy_defense import DEFENSE_KEYS, training_config

    config = {**TrainConfig().model_dump(), **{k: 1 for k in DEFENSE_KEYS}}
    assert parse_config(TrainConfig, training_config(config)) == TrainConfig()


def test_jem_is_registered_with_its_settings_and_papers() -> None:
    from trustlab.registry import PRIVACY_DEFENSES

    card = PRIVACY_DEFENSES.get("jem")
    assert card.factory is JEMDefense and card.meta["settings"] is JEMSettings
    assert "Chen et al." in card.paper and "Grathwohl" in card.paper
    defense = card.build(settings=JEMSettings(steps=3))
    assert isinstance(defense, JEMDefense) and defense.settings.steps == 3
    with pytest.raises(InputError, match="unknown privacy defense 'jme'. Did you mean 'jem'"):
        PRIVACY_DEFENSES.get("jme")
