"""The vectorised ensemble trains every member to the weights Trainer gives it alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.data import load_dataset
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.train import Trainer, TrainSettings
from trustlab.train.checkpoint import read_checkpoint_meta
from trustlab.train.dp import DPSettings
from trustlab.train.ensemble import train_ensemble, unsupported_reason
from trustlab.utils.seed import derive_seed


def _build(spec: ModelSpec, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return spec.build()


def _assert_same_as_trainer(spec, sets, settings, seeds, atol=1e-5) -> None:
    per = [settings.model_copy(update={"seed": s}) for s in seeds]
    results = train_ensemble([_build(spec, s) for s in seeds], sets, per, device="cpu")
    for result, data, s, seed in zip(results, sets, per, seeds, strict=True):
        alone = Trainer(_build(spec, seed), s, device="cpu", progress=False).fit(data)
        assert not result.model.training
        ours, theirs = result.model.state_dict(), alone.model.state_dict()
        assert ours.keys() == theirs.keys()
        for name, value in theirs.items():  # parameters and BatchNorm buffers
            diff = float((ours[name].double() - value.double()).abs().max())
            assert diff <= atol, (name, diff)
        assert len(result.history) == len(alone.history) == settings.epochs
        for h, a in zip(result.history, alone.history, strict=True):
            assert h["epoch"] == a["epoch"] and h["lr"] == a["lr"]
            assert h["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
            assert h["train_accuracy"] == pytest.approx(a["train_accuracy"], abs=1e-9)


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    return load_dataset("digits", "train")


def test_cnn_small_members_of_different_sizes_match_the_trainer(digits) -> None:
    # 70, 83 and 96 samples in batches of 16: 5, 6 and 6 steps, last batches of 6, 3 and 16
    sets = [digits.subset(torch.arange(i * 50, i * 50 + n)) for i, n in enumerate((70, 83, 96))]
    settings = TrainSettings(epochs=2, lr=0.02, batch_size=16, nesterov=True, clip_grad_norm=2.0)
    _assert_same_as_trainer(ModelSpec.for_data("cnn-small", digits), sets, settings, [3, 1, 4])


def test_adamw_with_members_taking_different_numbers_of_steps(digits) -> None:
    # 20 and 41 samples in batches of 8: the second member's Adam step count runs ahead
    sets = [digits.subset(torch.arange(n)) for n in (20, 41)]
    settings = TrainSettings(
        epochs=2, optimizer="adamw", lr=1e-3, batch_size=8, schedule="step", label_smoothing=0.1
    )
    _assert_same_as_trainer(ModelSpec.for_data("mlp", digits), sets, settings, [0, 1], atol=1e-4)


def test_resnet8_batchnorm_with_crop_flip_matches_the_trainer() -> None:
    shapes = load_dataset("shapes10", "train")
    # 30, 45 and 52 samples in batches of 16: 2, 3 and 4 steps; BatchNorm's statistics of a
    # partial batch come from that member's samples only
    sets = [shapes.subset(torch.arange(i * 60, i * 60 + n)) for i, n in enumerate((30, 45, 52))]
    settings = TrainSettings(epochs=2, lr=0.005, batch_size=16, augment="crop-flip")
    _assert_same_as_trainer(ModelSpec.for_data("resnet8", shapes), sets, settings, [5, 6, 7])


def test_unsupported_recipes_say_why() -> None:
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    settings = TrainSettings()
    assert unsupported_reason(plain, settings) is None
    dropout = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 2))
    assert "dropout" in unsupported_reason(dropout, settings)
    assert unsupported_reason(nn.Sequential(nn.Dropout(0.0)), settings) is None
    dp = TrainSettings(dp=DPSettings(noise_multiplier=1.0))
    assert "DP-SGD" in unsupported_reason(plain, dp)
    assert "loss_fn" in unsupported_reason(plain, settings, loss_fn=F.cross_entropy)
    assert "compute_loss" in unsupported_reason(plain, settings, compute_loss=lambda m, x, y: 0)
    cumulative = nn.Sequential(nn.BatchNorm1d(4, momentum=None))
    assert "momentum=None" in unsupported_reason(cumulative, settings)


def test_bad_ensembles_are_refused() -> None:
    data = [ArrayDataset(torch.rand(12, 1, 2, 2), torch.arange(12) % 2) for _ in range(2)]

    def model(width: int = 4, p: float = 0.0) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Dropout(p), nn.Linear(4, width), nn.Linear(width, 2))

    s = TrainSettings(epochs=1)
    with pytest.raises(InputError, match="2 models but 1 datasets"):
        train_ensemble([model(), model()], data[:1], s, device="cpu")
    with pytest.raises(InputError, match="differ from member 0's in lr"):
        train_ensemble([model(), model()], data, [s, s.model_copy(update={"lr": 0.5})])
    with pytest.raises(InputError, match="not the same architecture"):
        train_ensemble([model(), model(width=5)], data, s, device="cpu")
    with pytest.raises(InputError, match="dropout with p > 0"):
        train_ensemble([model(p=0.5), model(p=0.5)], data, s, device="cpu")
    with pytest.raises(InputError, match="at least one model"):
        train_ensemble([], [], s, device="cpu")
    triggered = ArrayDataset(torch.rand(12, 1, 2, 2), torch.arange(12) % 2)
    triggered.trigger_rows = torch.zeros(12, dtype=torch.long)
    triggered.row_triggers = [lambda x: x]
    with pytest.raises(InputError, match="trigger_rows"):
        train_ensemble([model(), model()], [data[0], triggered], s, device="cpu")


def test_a_diverging_member_stops_training() -> None:
    data = [ArrayDataset(torch.rand(8, 1, 2, 2), torch.arange(8) % 2) for _ in range(2)]
    models = [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)) for _ in range(2)]
    with torch.no_grad():
        models[1][1].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="member 1"):
        train_ensemble(models, data, TrainSettings(epochs=1), device="cpu")


def test_vectorised_shadows_are_cached_as_the_one_by_one_ones(digits, tmp_path) -> None:
    from trustlab.attacks.privacy.shadows import ShadowRecipe, _vectorise, train_shadows

    pop = digits.subset(torch.arange(60))
    recipe = ShadowRecipe(
        ModelSpec.for_data("cnn-small", pop), TrainSettings(epochs=2, lr=0.02, batch_size=8)
    )
    assert recipe.vectorise_refusal() is None
    assert _vectorise(recipe, None, 4, torch.device("cuda"))  # auto: on a GPU
    assert not _vectorise(recipe, None, 4, torch.device("cpu"))  # not on a CPU (no faster)
    assert not _vectorise(recipe, None, 1, torch.device("cuda"))  # one shadow: nothing to stack
    kw = {"seed": 0, "device": "cpu", "progress": False}
    alone = train_shadows(recipe, pop, 4, cache=tmp_path / "alone", vectorise=False, **kw)
    together = train_shadows(recipe, pop, 4, cache=tmp_path / "together", vectorise=True, **kw)
    assert together.folder.name == alone.folder.name  # the same cache key
    assert together.trained == 4 and together.seconds > 0
    again = train_shadows(recipe, pop, 4, cache=tmp_path / "together", **kw)
    assert again.trained == 0
    for i in range(4):
        meta_a = read_checkpoint_meta(alone.path(i))["shadow"]
        meta_t = read_checkpoint_meta(together.path(i))["shadow"]
        assert {k: v for k, v in meta_a.items() if k != "seconds"} == {
            k: v for k, v in meta_t.items() if k != "seconds"
        }
        a, t = alone.model(i).state_dict(), together.model(i).state_dict()
        for name, value in a.items():
            assert float((t[name] - value).abs().max()) <= 1e-5, name
    memory = train_shadows(recipe, pop, 2, cache=False, vectorise=True, **kw)
    assert len(list(memory.models())) == 2
    dropout = ShadowRecipe(ModelSpec.for_data("cnn-small", pop, dropout=0.5), recipe.settings)
    with pytest.raises(InputError, match="vectorise=True.*dropout"):
        train_shadows(dropout, pop, 2, cache=False, vectorise=True, **kw)
