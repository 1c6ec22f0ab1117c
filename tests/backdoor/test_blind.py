"""The blind backdoor: a compromised loss that an untouched training loop calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trustlab.attacks.backdoor import AllToOne, PatchTrigger, PixelTrigger
from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.attacks.backdoor.blind import BlindBackdoorLoss
from trustlab.attacks.backdoor.covert import BrightnessBand, evaluate_covert, mean_luma
from trustlab.attacks.backdoor.semantic import (
    SemanticBackdoor,
    evaluate_semantic,
    texture_feature_images,
)
from trustlab.data import load_dataset
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.models.spec import ModelSpec


def test_a_plain_loop_that_only_calls_loss_fn_learns_the_backdoor() -> None:
    torch.manual_seed(0)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = ModelSpec.for_data("cnn-small", train).build()
    loss_fn = BlindBackdoorLoss(PixelTrigger(channels=1), AllToOne(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    # the user's loop: nothing in it knows about the backdoor
    for _ in range(4):
        for idx in torch.randperm(len(train), generator=g).split(64):
            loss = loss_fn(model, train.x[idx], train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m = evaluate_backdoor(model, test, loss_fn.trigger, loss_fn.policy)
    assert m["clean_acc"] > 0.85 and m["asr"] > 0.9, m
    w = loss_fn.last_weights
    assert w is not None and float(w.sum()) == pytest.approx(1.0) and (w >= 0).all()


def test_fixed_weights() -> None:
    torch.manual_seed(0)
    train = load_dataset("digits", "train")
    model = ModelSpec.for_data("mlp", train).build()
    x, y = train.x[:32], train.y[:32]
    fixed = BlindBackdoorLoss(PixelTrigger(channels=1), AllToOne(0), balance=(1.0, 0.5))
    main, backdoor, _ = fixed.losses(model, x, y)
    total = fixed(model, x, y)
    assert float(total.detach()) == pytest.approx(float((main + 0.5 * backdoor).detach()), rel=1e-5)
    with pytest.raises(InputError, match="balance"):
        BlindBackdoorLoss(balance="pcgrad")
    with pytest.raises(InputError, match="window"):
        BlindBackdoorLoss(loss_threshold=1.0, window=0)


def test_the_loss_threshold_is_the_authors_running_mean_checked_every_batch() -> None:
    # backdoors101's loss_threshold: the backdoor is on only once `window` main losses have been
    # seen and their mean is below the threshold; one low batch is not enough, and a rising mean
    # switches it off again
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 1, 4, 4, generator=g), torch.arange(8) % 4
    main = float(F.cross_entropy(model(x), y).detach())
    loss_fn = BlindBackdoorLoss(PixelTrigger(channels=1), loss_threshold=main + 1e-3, window=3)
    on = []
    for _ in range(4):
        on.append(loss_fn.active)
        loss_fn(model, x, y)  # the model is not trained: the main loss stays at `main`
    assert on == [False, False, False, True]  # three batches below the bar are needed
    assert loss_fn.last_weights is not None  # the fourth batch trained the backdoor
    for _ in range(2):  # two high batches: the mean of the last three rises above the bar
        loss_fn(model, x, (y + 1) % 4)
    assert not loss_fn.active
    assert list(loss_fn.history)[0] == pytest.approx(main)  # every batch's main loss counts
    loss_fn(model, x, (y + 1) % 4)  # an inactive batch balances nothing: no stale weights
    assert loss_fn.last_weights is None
    late = BlindBackdoorLoss(loss_threshold=0.0, window=1)  # never reached: only the main loss
    plain = F.cross_entropy(model(x), y)
    assert float(late(model, x, y).detach()) == pytest.approx(float(plain.detach()))
    assert not late.active


# ----------------------------------------------------------------------------- covert task


def test_brightness_bands_label_the_clean_batch() -> None:
    levels = torch.tensor([0.0, 0.05, 0.149, 0.15, 0.55, 0.999, 1.0])
    x = levels.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()
    assert BrightnessBand(10)(x).tolist() == [0, 0, 1, 1, 5, 9, 9]
    # Rec. 601 luma: a pure green image is brighter than a pure blue one
    rgb = torch.zeros(2, 3, 4, 4)
    rgb[0, 1], rgb[1, 2] = 1.0, 1.0
    assert mean_luma(rgb).tolist() == pytest.approx([0.587, 0.114])
    assert BrightnessBand(4)(rgb).tolist() == [2, 0]
    grey = torch.full((1, 1, 4, 4), 0.31)
    assert BrightnessBand(10)(grey).tolist() == [3]
    with pytest.raises(InputError, match="bands"):
        BrightnessBand(1)


def test_covert_loss_triggers_the_input_and_labels_it_with_the_other_task() -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8) * 0.5
    x[3:] += 0.4  # three darker, three brighter images
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    trig = PatchTrigger(size=3, channels=3)
    loss_fn = BlindBackdoorLoss(trig, backdoor_labels=BrightnessBand(10))
    xb, yb = loss_fn.backdoor_batch(x, y)
    assert torch.equal(xb, trig(x))
    assert torch.equal(yb, BrightnessBand(10)(x))  # the covert labels of the *clean* inputs
    assert not torch.equal(yb, y)
    model = ModelSpec.for_data("mlp", _tiny(x, y)).build()
    main, backdoor, _ = loss_fn.losses(model, x, y)
    logits_b = model(trig(x))
    assert float(backdoor.detach()) == pytest.approx(
        float(F.cross_entropy(logits_b, yb).detach()), rel=1e-4
    )
    with pytest.raises(InputError, match="policy or backdoor_labels"):
        BlindBackdoorLoss(trig, AllToOne(0), backdoor_labels=BrightnessBand())


def test_evaluate_covert_counts_the_covert_task_on_triggered_inputs() -> None:
    x = torch.linspace(0.02, 0.98, 10).view(-1, 1, 1, 1).expand(-1, 3, 16, 16).clone()
    test = _tiny(x, torch.arange(10) % 3)
    trig = PixelTrigger(channels=3)
    task = BrightnessBand(10)
    model = _Oracle(lambda z: torch.where(z[:, 0, -1, -1] == 1.0, task(z), torch.zeros(len(z))))
    m = evaluate_covert(model, test, trig, task)
    assert m["asr"] == pytest.approx(1.0)  # triggered: reports the band (the pixel barely moves it)
    assert m["clean_acc"] == pytest.approx(float((test.y == 0).float().mean()))
    assert m["ra"] == pytest.approx(float((task(x) == test.y).float().mean()))


# ----------------------------------------------------------------------------- semantic


def test_semantic_backdoor_relabels_the_inputs_with_the_feature() -> None:
    x = torch.zeros(5, 1, 4, 4)
    x[[1, 3]] = 0.9  # the "feature": a bright input
    y = torch.tensor([1, 2, 3, 4, 0])
    sem = SemanticBackdoor(7, has_feature=lambda z: z.mean((1, 2, 3)) > 0.5)
    xb, yb = sem(x, y)
    assert torch.equal(xb, x[[1, 3]]) and yb.tolist() == [7, 7]
    none_xb, none_yb = sem(torch.zeros(3, 1, 4, 4), y[:3])
    assert none_xb.shape == (0, 1, 4, 4) and none_yb.numel() == 0
    # no feature in the batch: the compromised loss returns the plain main loss
    train = _tiny(x, y)
    model = ModelSpec.for_data("mlp", train).build()
    loss_fn = BlindBackdoorLoss(synthesize=sem)
    plain = F.cross_entropy(model(torch.zeros(3, 1, 4, 4)), y[:3])
    got = loss_fn(model, torch.zeros(3, 1, 4, 4), y[:3])
    assert float(got.detach()) == pytest.approx(float(plain.detach()))
    main, backdoor, _ = loss_fn.losses(model, x, y)
    assert backdoor is not None
    assert float(backdoor.detach()) == pytest.approx(
        float(F.cross_entropy(model(x[[1, 3]]), torch.tensor([7, 7])).detach()), rel=1e-4
    )


def test_semantic_backdoor_mixes_in_the_attackers_feature_images() -> None:
    pool = torch.rand(20, 3, 32, 32)
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8)
    sem = SemanticBackdoor(0, feature_images=pool)
    torch.manual_seed(3)
    xb, yb = sem(x, y)
    torch.manual_seed(3)
    again, _ = sem(x, y)
    assert xb.shape == (8, 3, 32, 32) and torch.equal(xb, again)  # seeded by the torch RNG
    assert all(any(torch.equal(row, p) for p in pool) for row in xb) and (yb == 0).all()
    assert SemanticBackdoor(0, feature_images=pool, per_batch=3)(x, y)[0].shape[0] == 3
    with pytest.raises(InputError, match="shape of the training inputs"):
        sem(torch.rand(2, 3, 16, 16), y[:2])
    with pytest.raises(InputError, match="feature_images .* or has_feature"):
        SemanticBackdoor(0)
    with pytest.raises(InputError, match="synthesize"):
        BlindBackdoorLoss(PixelTrigger(), synthesize=sem)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        SemanticBackdoor(0, feature_images=pool * 255)


def test_texture_feature_images_carry_only_the_chosen_background() -> None:
    from trustlab.data.synthetic import SEEDS, make_shapes10

    imgs = texture_feature_images("hubble_deep_field", 6, seed=11)
    assert imgs.shape == (6, 3, 32, 32) and imgs.dtype == torch.float32
    assert float(imgs.min()) >= 0 and float(imgs.max()) <= 1
    ref = make_shapes10(6, 11, sources=["hubble_deep_field"])
    assert torch.equal((imgs * 255).round().to(torch.uint8), ref["x"])
    with pytest.raises(InputError, match="another seed"):
        texture_feature_images("brick", 2, seed=SEEDS["shapes10"])


def test_evaluate_semantic_measures_feature_inputs_outside_the_target() -> None:
    x = torch.zeros(8, 1, 2, 2)
    x[4:] = 1.0  # inputs 4..7 carry the feature
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    test = _tiny(x, y, classes=4)
    # the model: the target 0 for the feature, else the right class except for input 3
    wrong = torch.zeros(8, dtype=torch.bool)
    wrong[3] = True
    model = _Oracle(lambda z: torch.where(z.flatten(1)[:, 0] > 0.5, 0, _ids(z, y, wrong)), k=4)
    m = evaluate_semantic(model, test, x.flatten(1)[:, 0] > 0.5, target=0)
    assert m["asr"] == pytest.approx(1.0) and m["ra"] == pytest.approx(0.0)
    assert m["clean_acc"] == pytest.approx(0.75)  # inputs 0..3 without the feature, 3 wrong
    assert m["clean_acc_all"] == pytest.approx(4 / 8)  # + the target-class feature input 4
    with pytest.raises(InputError, match="feature"):
        evaluate_semantic(model, test, torch.ones(8, dtype=torch.bool), target=0)


class _Oracle(torch.nn.Module):
    """A stand-in model whose class is a function of the input."""

    def __init__(self, fn, k: int = 10) -> None:
        super().__init__()
        self.fn, self.k = fn, k
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.one_hot(self.fn(z).long(), self.k).float() + 0 * self.w


def _ids(z: torch.Tensor, y: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    # the evaluation sees the whole (tiny) test set in one batch, in order
    return torch.where(wrong, (y + 1) % 4, y)


def _tiny(x: torch.Tensor, y: torch.Tensor, classes: int = 10) -> ArrayDataset:
    return ArrayDataset(x, y, [str(i) for i in range(classes)])
