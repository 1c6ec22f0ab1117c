"""AutoAttack-style sanity checks: each broken model is flagged by its check and only by it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.attacks.evasion.sanity import CHECKS, SanityFinding, sanity_checks
from trustlab.errors import InputError


class Plain(nn.Module):
    """A small CNN with BatchNorm (its output changes between train and eval mode)."""

    def __init__(self, k: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 16, k)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class DropoutAtEval(Plain):
    def forward(self, x):
        return self.fc(F.dropout(self.features(x), 0.5, training=True))


class Softmax(Plain):
    def forward(self, x):
        return super().forward(x).softmax(1)


class Quantised(Plain):
    def forward(self, x):
        return super().forward(torch.round(x * 4) / 4)  # input quantisation: zero gradient


class SignInput(Plain):
    def forward(self, x):
        return super().forward(torch.sign(x - 0.5))


class Detached(Plain):
    def forward(self, x):
        return super().forward(x.detach())


class NaNs(Plain):
    def forward(self, x):
        return super().forward(x) + torch.log(x.flatten(1).mean(1, keepdim=True) - 2)


class Saturated(Plain):
    def forward(self, x):
        return super().forward(x) * 1e4  # a softmax that saturates in float32


class Purifier(Plain):
    """Optimises its input at inference time (a dynamic defense)."""

    def forward(self, x):
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(super().forward(z).logsumexp(1).sum(), z)
        return super().forward(x - 0.01 * g.sign())


def make(cls: type[Plain], k: int = 5) -> nn.Module:
    torch.manual_seed(0)
    net = cls(k)
    net.train()
    with torch.no_grad():
        net(torch.rand(16, 1, 8, 8))  # BatchNorm statistics away from their defaults
    return net.eval()


def flagged(findings: list[SanityFinding]) -> set[str]:
    return {f.check for f in findings if not f.ok}


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 8, 8, generator=g), torch.randint(0, 5, (12,), generator=g)


@pytest.mark.parametrize("k", [5, 2])
def test_a_plain_cnn_passes_every_check(batch, k):
    x, y = batch
    found = sanity_checks(make(Plain, k), x, y % k)
    assert [f.check for f in found] == list(CHECKS)
    assert flagged(found) == set()
    by = {f.check: f for f in found}
    assert by["randomness"].value == 0.0
    assert by["train-eval"].value > 1e-3  # BatchNorm: differs, but the model is in eval mode
    assert "eval mode" in by["train-eval"].message


@pytest.mark.parametrize(
    ("cls", "check", "words"),
    [
        (DropoutAtEval, "randomness", "EOT"),
        (Softmax, "probabilities", "softmax is already applied"),
        (Quantised, "zero-gradients", "exactly zero for 12 of 12"),
        (SignInput, "zero-gradients", "BPDA"),
        (Detached, "zero-gradients", "no gradient path"),
        (NaNs, "non-finite", "NaN or infinite for 12 of 12"),
        (Purifier, "dynamic", "optimise at inference time"),
    ],
)
def test_each_problem_is_flagged_by_its_check_only(batch, cls, check, words):
    found = sanity_checks(make(cls), *batch)
    assert flagged(found) == {check}
    (f,) = [f for f in found if f.check == check]
    assert words in f.message
    assert "overestimated" in f.message or "too high" in f.message or "insufficient" in f.message
    assert f.value is not None and f.value > 0


def test_a_saturated_softmax_gives_the_cross_entropy_no_gradient(batch):
    x, _ = batch
    net = make(Saturated)
    with torch.no_grad():
        y = net(x).argmax(1)  # correctly classified: p_y rounds to exactly 1
    found = sanity_checks(net, x, y)
    assert flagged(found) == {"zero-gradients"}
    (f,) = [f for f in found if f.check == "zero-gradients"]
    assert "cross-entropy is exactly zero for 12 of 12" in f.message and "margin" in f.message


def test_a_model_left_in_training_mode(batch):
    net = make(Plain).train()
    found = sanity_checks(net, *batch)
    assert flagged(found) == {"train-eval"}
    (f,) = [f for f in found if f.check == "train-eval"]
    assert "training mode (Plain, conv, bn, fc)" in f.message and "model.eval()" in f.message
    assert net.training  # left as it was handed over


def test_a_train_mode_model_whose_output_does_not_depend_on_the_mode(batch):
    x, y = batch
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5)).train()
    assert flagged(sanity_checks(net, x, y)) == set()


def test_state_is_restored(batch):
    net = make(DropoutAtEval)
    net.bn.train()  # a submodule in another mode than its parent
    net.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    sanity_checks(net, *batch)
    assert not net.training and net.bn.training and not net.conv.training
    assert not net.fc.weight.requires_grad and net.conv.weight.requires_grad
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert torch.equal(rng, torch.get_rng_state())
    assert net.conv.weight.grad is None


def test_bad_inputs(batch):
    x, y = batch
    net = make(Plain)
    with pytest.raises(InputError, match="one label per input"):
        sanity_checks(net, x, y[:3])
    with pytest.raises(InputError, match=r"labels must be in \[0, 5\)"):
        sanity_checks(net, x, y + 5)
    with pytest.raises(InputError, match="at least 2 classes"):
        sanity_checks(nn.Sequential(nn.Flatten(), nn.Linear(64, 1)), x, y * 0)
    with pytest.raises(InputError, match="repeats"):
        sanity_checks(net, x, y, repeats=1)


def test_findings_serialise(batch):
    found = sanity_checks(make(Softmax), *batch)
    d = found[1].to_dict()
    assert set(d) == {"check", "ok", "message", "value"} and d["ok"] is False
