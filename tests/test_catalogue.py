"""The contract test over the whole catalogue: every registered method, with real assertions.

The parameter lists are read from the registries when the tests are collected, so a newly
registered attack, defense, detector, loss, model, dataset or experiment is tested here without
anyone adding a line.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from trustlab.errors import InputError
from trustlab.registry import (
    BACKDOORS,
    DATASETS,
    DEFENSES,
    DETECTORS,
    EVASION,
    EXPERIMENTS,
    LOSSES,
    MODELS,
    PRIVACY_ATTACKS,
    PRIVACY_DEFENSES,
    REGISTRIES,
    ROBUST,
    SUITES,
    Card,
)

#: registries of methods (each card cites its paper)
METHOD_KINDS = (
    "losses",
    "evasion",
    "backdoors",
    "privacy-attacks",
    "adversarial-training",
    "defenses",
    "detectors",
    "privacy-defenses",
    "experiments",
)


def _shipped(reg) -> list[Card]:
    """The cards of methods trustlab ships (tests may register toys of their own)."""
    return [c for c in reg if c.factory.__module__.startswith("trustlab.")]


ALL_CARDS = [(kind, card) for kind, reg in REGISTRIES.items() for card in _shipped(reg)]


def each(reg):
    """Parametrise a test over the shipped cards of ``reg`` (argument ``card``)."""
    cards = _shipped(reg)
    return pytest.mark.parametrize("card", cards, ids=[c.name for c in cards])


#: keyword arguments that shorten an attack for the test (only where the attack takes them)
SHORT = {
    "steps": 2, "switch": 1, "restarts": 1, "iterations": 2, "n_iter": 2, "epochs": 1,
    "n_queries": 20,
}  # fmt: skip


def _ids(cards: list[tuple[str, Card]]) -> list[str]:
    return [f"{k}:{c.name}" for k, c in cards]


# -- every card -------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "card"), ALL_CARDS, ids=_ids(ALL_CARDS))
def test_card_is_complete(kind: str, card: Card) -> None:
    assert card.name == card.name.lower() and card.name.strip() == card.name
    assert card.description.strip(), f"{kind} {card.name}: a one-line description"
    assert "\n" not in card.description
    if kind in METHOD_KINDS:
        assert card.paper.strip(), f"{kind} {card.name}: cite the paper"
    # the card's defaults are parameters the factory takes (or passes on through **kwargs)
    params = card.parameters()
    for key in card.defaults:
        assert key in params
    d = card.to_dict()
    assert d["name"] == card.name and d["kind"] == card.kind


@pytest.mark.parametrize(("kind", "card"), ALL_CARDS, ids=_ids(ALL_CARDS))
def test_unknown_parameter_names_the_allowed_ones(kind: str, card: Card) -> None:
    if card.accepts_any():  # its own code checks what **kwargs receives
        if card.inputs:
            pytest.skip("takes **kwargs after inputs this test cannot make")
        with pytest.raises(InputError, match="no_such_knob"):
            card.build(no_such_knob=1)
        return
    with pytest.raises(InputError, match="no parameter 'no_such_knob'") as info:
        card.validate(no_such_knob=1)
    for name in card.parameters():
        assert name in str(info.value)


def test_registries_refuse_unknown_names_listing_the_known_ones() -> None:
    for reg in REGISTRIES.values():
        with pytest.raises(InputError, match="unknown") as info:
            reg.get("no-such-method")
        assert all(n in str(info.value) for n in reg.names())


def test_a_name_registers_once() -> None:
    reg = MODELS
    name = reg.names()[0]
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(name)(lambda: None)


# -- evasion attacks --------------------------------------------------------------------------
def _resnet(channels: int = 3, size: int = 16) -> torch.nn.Module:
    from trustlab.models import create_model

    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10, in_channels=channels, image_size=size)


def _short(card: Card, **extra: object) -> dict[str, object]:
    params = card.parameters()
    return {**{k: v for k, v in SHORT.items() if k in params}, **extra}


#: attacks made from a model alone and bounded by an eps ball (AdvCam also takes a style image
#: and is bounded by its mask, not a ball: tests/attacks/test_advcam.py)
EVASION_CARDS = [
    c for c in _shipped(EVASION) if tuple(c.inputs) == ("model",) and c.meta.get("eps_ball", True)
]


@pytest.mark.parametrize("card", EVASION_CARDS, ids=[c.name for c in EVASION_CARDS])
@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_evasion_attack_contract(card: Card, training: bool) -> None:
    model = _resnet()
    model.train(training)
    next(model.parameters()).requires_grad_(False)  # a frozen layer stays frozen
    flags = [p.requires_grad for p in model.parameters()]
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=gen)
    y = torch.randint(0, 10, (4,), generator=gen)
    eps = 8 / 255
    atk = card.build(model, **_short(card, eps=eps))
    adv = atk(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert not adv.requires_grad
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert not adv.requires_grad
    norm = getattr(atk, "norm", "linf")
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6, f"{card.name} leaves the {norm} ball"
    assert model.training is training, "the model's train/eval mode is restored"
    assert [p.requires_grad for p in model.parameters()] == flags, "requires_grad restored"
    assert all(p.grad is None for p in model.parameters()), "no gradient left on the weights"


@each(SUITES)
def test_suite_builds_registered_attacks(card: Card) -> None:
    from trustlab.attacks.evasion.base import Attack

    suite = card.build(_resnet(), 8 / 255)
    assert list(suite) == list(card.meta["attacks"])
    assert all(isinstance(a, Attack) and a.eps == pytest.approx(8 / 255) for a in suite.values())
    assert all(name in EVASION for name in suite)


# -- adversarial training ---------------------------------------------------------------------
@each(ROBUST)
def test_adversarial_training_is_a_compute_loss(card: Card) -> None:
    """The trainer's ``compute_loss(model, x, y)``: a finite scalar that trains the weights,
    the model handed back in training mode."""
    model = _resnet()
    model.train()
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    out = card.build(**_short(card))(model, x, y)
    loss = out[0] if isinstance(out, tuple) else out
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
    assert model.training


# -- losses -------------------------------------------------------------------------------------
@each(LOSSES)
def test_loss_is_finite_and_differentiable(card: Card) -> None:
    from trustlab.train.losses import make_loss

    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(8, 10, generator=gen)).requires_grad_(True)
    y = torch.randint(0, 10, (8,), generator=gen)
    loss = make_loss(card.name)(logits, y)
    assert loss.shape == () and torch.isfinite(loss)
    (g,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    per_sample = make_loss(card.name, reduction="none")(logits.detach(), y)
    assert per_sample.shape == (8,)
    assert torch.allclose(per_sample.mean(), loss.detach(), atol=1e-5)


# -- models and datasets ------------------------------------------------------------------------
@each(MODELS)
def test_model_maps_inputs_to_logits(card: Card) -> None:
    from trustlab.models import create_model

    torch.manual_seed(0)
    video = card.meta.get("kind") == "video"
    model = create_model(card.name, num_classes=7, in_channels=3, image_size=32)
    x = torch.rand(2, 3, 8, 32, 32) if video else torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.config["name"] == card.name


BUILT_IN = [c for c in _shipped(DATASETS) if c.meta.get("source") == "built-in"]
FILE_BASED = [c for c in _shipped(DATASETS) if c.meta.get("source") != "built-in"]


@pytest.mark.parametrize("card", BUILT_IN, ids=[c.name for c in BUILT_IN])
def test_built_in_dataset_contract(card: Card) -> None:
    from trustlab.data import load_dataset

    ds = load_dataset(card.name, "test")
    assert ds.x.is_floating_point() and ds.y.dtype == torch.int64
    assert float(ds.x.min()) >= 0 and float(ds.x.max()) <= 1
    assert len(ds) == len(ds.y) > 0 and int(ds.y.max()) < ds.num_classes
    if "shape" in card.meta:
        assert tuple(ds.x.shape[1:]) == tuple(card.meta["shape"])
    if "num_classes" in card.meta:
        assert ds.num_classes == card.meta["num_classes"]


@pytest.mark.parametrize("card", FILE_BASED, ids=[c.name for c in FILE_BASED])
def test_file_dataset_without_its_files_is_a_clear_error(card: Card, tmp_path) -> None:
    from trustlab.data import load_dataset

    with pytest.raises(InputError):
        load_dataset(card.name, "test", root=tmp_path / "empty")


# -- experiments --------------------------------------------------------------------------------
@each(EXPERIMENTS)
def test_experiment_metadata_is_complete(card: Card) -> None:
    exp = card.factory()
    assert exp.name == card.name and exp.title and exp.paper
    assert set(exp.presets) >= {"smoke", "quick"}
    for name, pre in exp.presets.items():
        assert pre.name == name and pre.dataset in DATASETS and pre.model in MODELS
        assert pre.seeds >= 1 and pre.description.strip()
    assert exp.keys and exp.metrics
    assert all(c.name and c.text and callable(c.check) for c in exp.claims)
    assert set(exp.percent) <= set(exp.metrics)
    assert len({c.name for c in exp.claims}) == len(exp.claims)
    jobs = exp.jobs(exp.presets["smoke"])
    assert jobs and all(isinstance(j, dict) and j for j in jobs)
    assert len({tuple(sorted(j.items())) for j in jobs}) == len(jobs), "jobs repeat"


# -- the registries are complete ------------------------------------------------------------------
def test_every_registry_has_entries() -> None:
    for kind, reg in REGISTRIES.items():
        assert len(reg) > 0, f"nothing registered as {kind}"


def test_every_registered_factory_is_callable_with_its_inputs() -> None:
    """A card's inputs are its factory's leading arguments, and every other argument has a
    default (a required one belongs in ``inputs=``, or the card would list it as a setting)."""
    for _, card in ALL_CARDS:
        assert callable(card.factory)
        sig = inspect.signature(card.factory)
        names = [p.name for p in sig.parameters.values()]
        assert list(card.inputs) == names[: len(card.inputs)], card.name
        required = [k for k, v in card.parameters().items() if v is inspect.Parameter.empty]
        assert not required, f"{card.kind} {card.name}: pass inputs={tuple(required)!r}"


def test_nan_cells_are_not_applicable() -> None:
    from trustlab.experiments.base import ResultTable

    t = ResultTable(["m"], ["a", "b"], [{"m": "x", "a": 0.5, "b": math.nan}])
    cols, rows = t.formatted(percent=("a",))
    assert cols == ["m", "a", "b", "seeds"] and rows == [["x", "50.00", "—", "1"]]


# -- adversarial-example detectors ----------------------------------------------------------------
@pytest.fixture(scope="module")
def detection_case():
    """A small trained model on digits and a detection set of its PGD examples."""
    from trustlab.attacks.evasion import make_attack
    from trustlab.data import load_dataset
    from trustlab.defenses.detection import build_detection_set
    from trustlab.models.spec import ModelSpec
    from trustlab.train import Trainer, TrainSettings

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    model = ModelSpec.for_data("cnn-small", train).build()
    Trainer(model, TrainSettings(epochs=2, lr=0.05, batch_size=64), progress=False).fit(train)
    x, y = test.x[:120], test.y[:120]
    sets = build_detection_set(model, x, y, make_attack("pgd", model, "16/255", steps=5))
    return model, train, sets


@each(DETECTORS)
def test_detector_protocol(card: Card, detection_case) -> None:
    from trustlab.defenses.detection import make_detector

    model, train, sets = detection_case
    det = make_detector(card.name, model, train=train, seed=0)
    flags, mode = [p.requires_grad for p in model.parameters()], model.training
    assert det.fit(sets.clean, sets.adversarial, sets.noisy) is det
    scores = det.score(torch.cat([sets.clean, sets.adversarial]))
    assert scores.shape == (2 * len(sets.clean),) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    assert [p.requires_grad for p in model.parameters()] == flags and model.training is mode


# -- privacy attacks ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mia_target(tmp_path_factory):
    from trustlab.results import RunStore
    from trustlab.workflows.train import run_training

    store = RunStore(tmp_path_factory.mktemp("mia-store"))
    cfg = {"dataset": "digits", "model": "mlp", "epochs": 1, "batch_size": 128, "device": "cpu"}
    run, _ = run_training(cfg, store=store, progress=False)
    return store, run


@each(PRIVACY_ATTACKS)
def test_privacy_attack_protocol(card: Card, mia_target, tmp_path) -> None:
    """Every attack runs through run_mia: one score per audited example, metrics in range."""
    from trustlab.attacks.privacy.audit import option_names
    from trustlab.workflows.mia import run_mia

    store, target = mia_target
    assert callable(card.meta["audit"]) and isinstance(card.meta["shadows"], bool)
    shadows = int(card.meta.get("min_shadows", 1)) if card.meta["shadows"] else 0
    short = {k: v for k, v in SHORT.items() if k in option_names(card)}
    run, result = run_mia(
        target.id, card.name, shadows=max(shadows, 1), n=20, device="cpu", progress=False,
        cache=tmp_path, store=store, options=short,
    )  # fmt: skip
    assert run.status == "finished"
    assert result.scores.shape == (40,) and torch.isfinite(result.scores).all()
    assert 0.0 <= result.metrics["auc"] <= 1.0
    assert 0.0 <= result.metrics["tpr_at_1fpr"] <= 1.0


@each(PRIVACY_DEFENSES)
def test_privacy_defense_card(card: Card) -> None:
    assert inspect.isclass(card.factory)
    assert card.paper and card.threat


# -- backdoor attacks and defenses ----------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_splits():
    from trustlab.data import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    return train.subset(range(400)), test.subset(range(160))


def _tiny_settings():
    from trustlab.train import TrainSettings

    return TrainSettings(epochs=1, lr=0.05, batch_size=64)


@each(BACKDOORS)
def test_backdoor_recipe_contract(card: Card, digits_splits) -> None:
    """Every recipe trains through train_backdoor: a trigger that keeps inputs in [0, 1] and
    their shape, poison indices inside the training set, C-Acc/ASR/RA in [0, 1]."""
    from trustlab.attacks.backdoor.artifact import train_backdoor
    from trustlab.attacks.backdoor.recipe import INJECTORS, BackdoorRecipe
    from trustlab.models.spec import ModelSpec

    assert issubclass(card.factory, BackdoorRecipe) and card.meta["injector"] in INJECTORS
    train, test = digits_splits
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    art = train_backdoor(card.name, train, test, net, _tiny_settings(), 0.1, 1, 0)
    x = test.x[:8]
    xt = art.trigger(x)
    assert xt.shape == x.shape and float(xt.min()) >= 0 and float(xt.max()) <= 1
    idx = art.poison_indices
    assert idx.dtype == torch.int64 and (len(idx) == 0 or int(idx.max()) < len(train))
    assert (len(idx) == 0) == (card.meta["injector"] == "loss")
    assert set(art.metrics) == {"clean_acc", "asr", "ra"}
    assert all(0.0 <= v <= 1.0 for v in art.metrics.values())


@pytest.fixture(scope="module")
def blend_artifact(digits_splits):
    from trustlab.attacks.backdoor.artifact import train_backdoor
    from trustlab.models.spec import ModelSpec

    train, test = digits_splits
    torch.manual_seed(0)
    net = ModelSpec.for_data("cnn-small", train).build()
    return train_backdoor("blend", train, test, net, _tiny_settings(), 0.1, 0, 0)


PROTOCOLS = {"inspector", "repairer", "input-detector", "dataset-filter"}


@each(DEFENSES)
def test_backdoor_defense_protocol(card: Card, blend_artifact, digits_splits) -> None:
    """Every defense runs through run_defense on a copy: numbers only, its headline among them,
    the artefact's model untouched."""
    from trustlab.defenses.backdoor.evaluate import run_defense

    meta = card.meta
    assert meta["protocol"] in PROTOCOLS
    assert isinstance(meta["filter"], bool) and isinstance(meta["trains"], bool)
    assert meta["filter"] == (meta["protocol"] == "dataset-filter")
    metric, label = meta["headline"]
    train, test = digits_splits
    art = blend_artifact
    before = [p.detach().clone() for p in art.model.parameters()]
    options = {"epochs": 1} if meta.get("budget") == "options" else {}
    settings = _tiny_settings() if meta.get("budget") == "settings" else None
    keep: dict = {}
    out = run_defense(card.name, art, train, test, settings, options, keep=keep)
    assert {"clean_acc", "asr", metric} <= set(out) and label
    assert all(isinstance(v, float) for v in out.values())
    assert all(math.isnan(v) or -1e-9 <= v <= 1 + 1e-9 for k, v in out.items() if k != "anomaly"
               and k != "max_anomaly" and k != "flagged")  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, art.model.parameters(), strict=True))
