"""SGM's hooks follow the authors' code (csdongxian/skip-connections-matter, ``utils_sgm.py``):
each stage's first block is left unscaled, every other residual branch is scaled by gamma."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from trustlab.attacks.evasion import PGD, SGM, skip_gradient
from trustlab.attacks.evasion.sgm import sgm_branches
from trustlab.models import create_model


@pytest.mark.parametrize(
    ("name", "kwargs", "want"),
    [
        ("resnet20", {}, [f"layer{s}.{b}.residual" for s in (1, 2, 3) for b in (1, 2)]),
        ("resnet18", {}, [f"layer{s}.1.residual" for s in (1, 2, 3, 4)]),
        ("resnet18", {"preact": True}, [f"layer{s}.1.residual" for s in (1, 2, 3, 4)]),
        ("wrn-16-4", {}, [f"layer{s}.1.residual" for s in (1, 2, 3)]),
        # the authors hook every dense layer (register_hook_for_densenet)
        ("densenet-small", {}, [f"block{s}.{b}.residual" for s in (1, 2, 3) for b in range(6)]),
    ],
)
def test_default_branches_leave_each_stages_first_block_unscaled(name, kwargs, want) -> None:
    model = create_model(name, **kwargs)
    assert [n for n, _ in sgm_branches(model)] == want
    with skip_gradient(model, 0.2) as mods:
        assert mods == [m for _, m in sgm_branches(model)]
    # trustlab's earlier rule, kept as an option: every branch
    everything = [n for n, m in model.named_modules() if n.endswith(".residual")]
    assert [n for n, _ in sgm_branches(model, first_blocks=True)] == everything
    with skip_gradient(model, 0.2, first_blocks=True) as mods:
        assert len(mods) == len(everything)


def _authors_hooks(model: nn.Module, gamma: float) -> list:
    """The authors' register_hook_for_resnet transcribed to trustlab's module names: gamma on
    the backward of the ReLU inside every branch but the stage openers' (``*.0.*``), gamma on the
    stem ReLU and on the post-addition ReLU of those blocks (torchvision reuses one ReLU module
    there), and every block's output gradient divided by its standard deviation."""
    handles = []

    def scale(factor: float, norm: bool):
        def hook(module, grad_in, grad_out):
            g = grad_in[0] * factor
            return (g / g.std() if norm else g,)

        return hook

    for name, module in model.named_modules():
        parts = name.split(".")
        in_branch = len(parts) == 4 and parts[2:] == ["residual", "relu1"] and parts[1] != "0"
        if name == "stem.relu" or in_branch:
            handles.append(module.register_full_backward_hook(scale(gamma, False)))
        elif len(parts) == 3 and parts[2] == "act":
            opener = parts[1] == "0"
            handles.append(module.register_full_backward_hook(scale(1 if opener else gamma, True)))
    return handles


@pytest.mark.parametrize("gamma", [0.2, 0.5])
def test_input_gradient_is_a_positive_multiple_of_the_authors(gamma: float) -> None:
    """Same attack direction as the authors' hooks: their extra factors are uniform."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_channels=1, image_size=(16, 16))
    model = model.double().eval()
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(5) % 4

    def grad() -> torch.Tensor:
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xx), y, reduction="sum"), xx)
        return g

    with skip_gradient(model, gamma):
        ours = grad()
    handles = _authors_hooks(model, gamma)
    try:
        theirs = grad()
    finally:
        for h in handles:
            h.remove()
    c = (theirs * ours).sum() / (ours * ours).sum()
    assert c > 0
    torch.testing.assert_close(theirs, c * ours, rtol=1e-9, atol=1e-12)
    # and not the direction of scaling every branch (the earlier rule) or of plain PGD
    with skip_gradient(model, gamma, first_blocks=True):
        every = grad()
    plain = grad()
    for other in (every, plain):
        cos = nn.functional.cosine_similarity(other.flatten(), ours.flatten(), dim=0)
        assert cos < 1 - 1e-6


def test_resnet8_has_only_stage_openers_so_sgm_is_pgd_with_a_warning() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_channels=3, image_size=(16, 16)).eval()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 4
    assert sgm_branches(model) == []
    with pytest.warns(UserWarning, match="opens a stage"):
        atk = SGM(model, gamma=0.2, steps=3)
    with warnings.catch_warnings(record=True):
        a = atk(x, y)
    torch.testing.assert_close(a, PGD(model, steps=3, random_start=False)(x, y))
    b = SGM(model, gamma=0.2, steps=3, first_blocks=True)(x, y)
    assert not torch.equal(a, b)
