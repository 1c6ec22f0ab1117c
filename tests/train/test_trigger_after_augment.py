"""Backdoor triggers applied after augmentation: ``poison_dataset(trigger_stage="after-augment")``
keeps the poisoned rows untriggered and the trainer applies their triggers after the flip, so a
corner patch is never learnt mirrored; the default keeps the anchors' order (trigger, then
augmentation). Deterministic and resumable like every run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.attacks.backdoor import AllToOne, PatchTrigger, poison_dataset
from trustlab.data import ArrayDataset
from trustlab.data.augment import apply_per_row
from trustlab.errors import InputError
from trustlab.train import Callback, Trainer
from trustlab.train.trainer import CHECKPOINT_NAME


def _data(n: int = 64) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.rand(n, 1, 8, 8, generator=g)  # dim images; a white 2x2 patch stands out
    return ArrayDataset(x, torch.arange(n) % 4, list("abcd"))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4))


class Seen:
    """A compute_loss that records where the patch sits in every training batch."""

    def __init__(self) -> None:
        self.right = self.left = self.not_poisoned = 0
        self.model = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        right = (x[:, 0, -2:, -2:] > 0.99).flatten(1).all(1)
        left = (x[:, 0, -2:, :2] > 0.99).flatten(1).all(1)
        self.right += int(right.sum())
        self.left += int(left.sum())
        # a patched row must be a poisoned one (relabelled to the target 0): a trigger applied
        # to the wrong rows of the shuffled batch would patch rows of other labels
        self.not_poisoned += int(((right | left) & (y != 0)).sum())
        return nn.functional.cross_entropy(model(x), y)


def _fit(stage: str, epochs: int = 3) -> Seen:
    data = _data()
    poisoned = poison_dataset(
        data, PatchTrigger("white", 2, channels=1), AllToOne(0), 0.25, trigger_stage=stage
    )
    seen = Seen()
    Trainer(
        _tiny(), epochs=epochs, lr=0.05, batch_size=16, augment="flip", compute_loss=seen,
        device="cpu", progress=False,
    ).fit(poisoned)  # fmt: skip
    return seen


def test_after_augment_the_model_only_ever_sees_the_tested_patch() -> None:
    late = _fit("after-augment")
    assert late.left == 0 and late.right == 3 * 16  # 16 poisoned rows, every epoch, unmirrored
    assert late.not_poisoned == 0
    early = _fit("poisoning")  # the anchors' order: the flip mirrors the patch about half the time
    assert early.left > 0 and early.right > 0 and early.left + early.right == 3 * 16


def test_after_augment_dataset_records_rows_and_bakes_in_on_request() -> None:
    data = _data()
    trig = PatchTrigger("white", 2, channels=1)
    early = poison_dataset(data, trig, AllToOne(0), 0.25, seed=3)
    late = poison_dataset(data, trig, AllToOne(0), 0.25, seed=3, trigger_stage="after-augment")
    assert torch.equal(late.x, data.x) and torch.equal(late.y, early.y)
    assert torch.equal(late.poison_mask, early.poison_mask)
    assert torch.equal(late.trigger_rows >= 0, late.poison_mask)
    assert torch.equal(late.triggered().x, early.x)
    assert early.triggered() is early and early.trigger_rows is None
    part = late.subset(list(range(0, 64, 2)))  # the rows travel with a subset
    assert torch.equal(part.trigger_rows, late.trigger_rows[::2])
    with pytest.raises(InputError, match="trigger_stage"):
        poison_dataset(data, trig, AllToOne(0), 0.25, trigger_stage="later")


def test_apply_per_row() -> None:
    x = torch.zeros(4, 1, 2, 2)
    out = apply_per_row(x, torch.tensor([-1, 0, 1, 0]), [lambda b: b + 1, lambda b: b + 2])
    assert out[:, 0, 0, 0].tolist() == [0, 1, 2, 1] and float(x.abs().sum()) == 0
    assert apply_per_row(x, torch.full((4,), -1), []) is x
    with pytest.raises(InputError, match="rows"):
        apply_per_row(x, torch.zeros(3, dtype=torch.long), [lambda b: b])


@pytest.mark.filterwarnings("ignore:training looks collapsed")
def test_after_augment_training_is_deterministic_and_resumes_exactly(tmp_path) -> None:
    data = _data()
    poisoned = poison_dataset(
        data, PatchTrigger("white", 2, channels=1), AllToOne(0), 0.25,
        trigger_stage="after-augment",
    )  # fmt: skip
    kw = dict(epochs=4, lr=0.05, batch_size=16, augment="crop-flip", device="cpu", progress=False)
    full = Trainer(_tiny(), **kw).fit(poisoned)
    again = Trainer(_tiny(), **kw).fit(poisoned)

    class StopAt2(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            trainer.stop = epoch == 2

    Trainer(_tiny(), callbacks=[StopAt2()], checkpoint_dir=tmp_path, **kw).fit(poisoned)
    resumed = Trainer(_tiny(), checkpoint_dir=tmp_path, **kw).fit(
        poisoned, resume_from=tmp_path / CHECKPOINT_NAME
    )
    for a, b, c in zip(
        full.model.parameters(), again.model.parameters(), resumed.model.parameters(), strict=True
    ):
        assert torch.equal(a, b) and torch.equal(a, c)
    # not the same run as the anchors' order
    early = poison_dataset(data, PatchTrigger("white", 2, channels=1), AllToOne(0), 0.25)
    other = Trainer(_tiny(), **kw).fit(early)
    assert not torch.equal(next(other.model.parameters()), next(full.model.parameters()))


def test_dp_refuses_triggers_after_augmentation() -> None:
    poisoned = poison_dataset(
        _data(), PatchTrigger("white", 2, channels=1), AllToOne(0), 0.25,
        trigger_stage="after-augment",
    )  # fmt: skip
    trainer = Trainer(_tiny(), epochs=1, dp={"noise_multiplier": 1.0}, device="cpu", progress=False)
    with pytest.raises(InputError, match="trigger_stage"):
        trainer.fit(poisoned)
