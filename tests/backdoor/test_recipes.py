"""Backdoor attacks as recipes: every registered recipe trains through train_backdoor with the
poison the pre-registry code made, and a new recipe is one class with a decorator."""

from __future__ import annotations

import pytest
import torch

from trustlab.attacks.backdoor import (
    AllToAll,
    AllToOne,
    BackdoorRecipe,
    BlendTrigger,
    CleanLabel,
    PatchTrigger,
    PixelTrigger,
    ReflectionTrigger,
    poison_dataset,
)
from trustlab.attacks.backdoor.artifact import make_poisoning, train_backdoor
from trustlab.attacks.backdoor.recipe import INJECTORS
from trustlab.data import load_dataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec
from trustlab.registry import BACKDOORS
from trustlab.train import Trainer, TrainSettings
from trustlab.utils.seed import derive_seed

SEED, TARGET = 5, 1


@pytest.fixture(scope="module")
def tiny():
    train = load_dataset("digits", "train").subset(list(range(300)))
    test = load_dataset("digits", "test").subset(list(range(60)))
    return train, test


def _settings() -> TrainSettings:
    return TrainSettings(epochs=1, lr=0.05, batch_size=64, seed=1)


def _model(train):
    torch.manual_seed(3)
    return ModelSpec.for_data("cnn-small", train).build()


def _old_poisoning(name: str, train, rate: float):
    """What the pre-registry if-chains of make_poisoning / train_backdoor made (the reference
    for the seven original attacks); a recipe registered later is checked against
    make_poisoning's output."""
    c, size, k = train.x.shape[1], tuple(train.x.shape[-2:]), train.num_classes
    table = {
        "badnets": (PatchTrigger(size=3, channels=c), AllToOne(TARGET, k), "dataset"),
        "badnets-all2all": (PatchTrigger(size=3, channels=c), AllToAll(k), "dataset"),
        "pixel": (PixelTrigger(channels=c), AllToOne(TARGET, k), "dataset"),
        "blend": (BlendTrigger("random", 0.2, c, size, SEED), AllToOne(TARGET, k), "dataset"),
        "refool": (
            ReflectionTrigger("chelsea", "out-of-focus", 0.4, c, size, SEED),
            CleanLabel(TARGET, k),
            "dataset",
        ),
    }
    if name == "blind":
        trig, policy = PatchTrigger(size=3, channels=c), AllToOne(TARGET, k)
        return trig, poison_dataset(train, trig, policy, rate=0.0, seed=SEED)
    if name == "clean-label":
        from trustlab.attacks.backdoor.clean_label import (
            adversarial_trigger,
            clean_label_poisoning,
        )

        spec = ModelSpec.from_model(_model(train))
        torch.manual_seed(derive_seed(SEED, "surrogate"))
        surrogate = spec.build()
        Trainer(surrogate, _settings(), device="cpu").fit(train)
        size_ = max(3, min(train.x.shape[-2:]) // 4)
        trig = adversarial_trigger(surrogate, train, TARGET, size_, seed=SEED, device="cpu")
        return trig, clean_label_poisoning(train, trig, surrogate, TARGET, rate, seed=SEED)
    trig, policy, of = table[name] if name in table else make_poisoning(name, train, TARGET, SEED)
    return trig, poison_dataset(train, trig, policy, rate=rate, of=of, seed=SEED)


#: the recipes whose poisoning has a reference here: the seven original attacks and every later
#: plain data poisoning (checked against make_poisoning); the other new ones have their own tests
REFERENCED = [
    n for n in BACKDOORS.names()
    if BACKDOORS.get(n).meta["injector"] == "data" or n in ("blind", "clean-label")
]  # fmt: skip


@pytest.mark.parametrize("name", REFERENCED)
def test_every_recipe_trains_with_the_old_poison(tiny, name: str) -> None:
    train, test = tiny
    card = BACKDOORS.get(name)
    assert card.meta["injector"] in INJECTORS and card.paper
    assert isinstance(card.build(), BackdoorRecipe)
    rate = 0.3 if card.meta["injector"] == "clean-label" else 0.05
    trig, expected = _old_poisoning(name, train, rate)
    art = train_backdoor(name, train, test, _model(train), _settings(), rate, TARGET, SEED)
    assert torch.equal(art.poison_indices, expected.poison_indices)
    idx = expected.poison_indices
    assert torch.equal(art.poisoned_x, expected.x[idx]) and torch.equal(
        art.poisoned_y, expected.y[idx]
    )
    x = test.x[:4]
    assert torch.equal(art.trigger(x), trig(x))
    assert set(art.metrics) == {"clean_acc", "asr", "ra"} and art.config["attack"] == name


def test_make_poisoning_refuses_recipes_that_are_not_data_poisoning(tiny) -> None:
    train, _ = tiny
    for name in BACKDOORS.names():
        if BACKDOORS.get(name).meta["injector"] != "data":
            with pytest.raises(InputError, match="not a plain data poisoning"):
                make_poisoning(name, train)
    with pytest.raises(InputError, match="unknown backdoor attack"):
        make_poisoning("trojannn", train)
    with pytest.raises(InputError, match="unknown backdoor attack"):
        train_backdoor("trojannn", train, train, _model(train), _settings())


def test_a_new_recipe_is_one_class_with_a_decorator(tiny) -> None:
    train, test = tiny

    @BACKDOORS.register(
        "white-square-test",
        "a 5x5 white square, all-to-all",
        paper="a test recipe",
        threat="data poisoning",
        injector="data",
    )
    class WhiteSquare(BackdoorRecipe):
        def __init__(self, size: int = 5) -> None:
            self.size = size

        def trigger(self, data, seed=0, **_):
            return PatchTrigger("white", size=self.size, channels=data.x.shape[1])

        def policy(self, target, num_classes):
            return AllToAll(num_classes)

    try:
        assert "white-square-test" in BACKDOORS.names(injector="data")
        art = train_backdoor("white-square-test", train, test, _model(train), _settings(), 0.1)
        assert art.poison_indices.numel() == round(0.1 * len(train))
        idx = art.poison_indices
        assert torch.equal(art.poisoned_y, (train.y[idx] + 1) % train.num_classes)
        assert bool((art.poisoned_x[:, :, -5:, -5:] == 1).all())
        with pytest.raises(InputError, match="has no parameter"):
            BACKDOORS.build("white-square-test", colour="red")
    finally:
        BACKDOORS.unregister("white-square-test")
    assert "white-square-test" not in BACKDOORS


def test_a_new_trigger_kind_is_stored_and_rebuilt_without_other_edits(tmp_path) -> None:
    """A trigger class defined anywhere (e.g. in a new recipe's file) registers its kind, so an
    artefact holding it loads back; nothing else needs an edit."""
    from trustlab.attacks.backdoor.artifact import load_trigger, save_trigger
    from trustlab.attacks.backdoor.triggers import Trigger, trigger_from_state

    class Stripe(Trigger):
        kind = "test-stripe"

        def __init__(self, row: int = 0) -> None:
            self.row = row

        def apply(self, x: torch.Tensor) -> torch.Tensor:
            out = x.clone()
            out[..., self.row, :] = 1.0
            return out

        def state(self):
            return {"kind": self.kind, "row": self.row}, {"unused": torch.zeros(1)}

        @classmethod
        def from_state(cls, config, tensors):
            return cls(int(config["row"]))

    try:
        path = save_trigger(tmp_path / "trigger.safetensors", Stripe(2))
        back = load_trigger(path)
        x = torch.rand(2, 1, 5, 5)
        assert isinstance(back, Stripe) and torch.equal(back(x), Stripe(2)(x))
        with pytest.raises(InputError, match="unknown trigger kind 'nope'"):
            trigger_from_state({"kind": "nope"}, {})
    finally:
        Trigger.kinds.pop("test-stripe", None)
