"""ANP (Wu & Wang, NeurIPS 2021): masked/perturbed BatchNorm, mask clipping, noise bounds,
threshold pruning, the repair, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.defenses.backdoor.anp import (
    ANP,
    bn_layers,
    masked_bn_params,
    noise_step,
    prune_by_threshold,
)
from trustlab.errors import InputError


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(3))  # fmt: skip
    net(torch.rand(2, 1, 6, 6))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net.eval()


def test_masked_bn_is_the_authors_formula() -> None:
    net = _bn_net()
    bns = bn_layers(net)
    assert [n for n, _ in bns] == ["1"]
    x = torch.rand(5, 1, 6, 6)
    ones = [torch.ones(4)]
    assert torch.allclose(functional_call(net, masked_bn_params(bns, ones), (x,)), net(x))
    m = torch.tensor([1.0, 0.5, 0.0, 0.25])
    d, xi = torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.tensor([0.4, 0.0, -0.4, 0.1])
    p = masked_bn_params(bns, [m], [(d, xi)])
    bn = net[1]
    assert torch.allclose(p["1.weight"], bn.weight * (m + d))
    assert torch.allclose(p["1.bias"], bn.bias * (1 + xi))
    # functional_call leaves the module's own parameters alone
    w = bn.weight.detach().clone()
    functional_call(net, p, (x,))
    assert torch.equal(bn.weight, w)


def test_noise_step_stays_within_eps() -> None:
    g = torch.tensor([1.0, -1.0, 0.5, -3.0, 0.0])
    n = torch.tensor([0.3, -0.3, 0.0, 0.1, 0.2])
    out = noise_step(n, g, eps=0.4, step=0.4)
    assert torch.allclose(out, torch.tensor([0.4, -0.4, 0.4, -0.3, 0.2]))
    assert float(out.abs().max()) <= 0.4 + 1e-6


def test_masks_are_clipped_to_unit_interval(planted) -> None:
    art, clean, _ = planted
    anp = ANP(lr=50.0, iterations=3, batch_size=16)
    masks, losses = anp.optimize_masks(art.model, clean)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    allm = torch.cat(list(masks.values()))
    assert float(allm.min()) >= 0.0 and float(allm.max()) <= 1.0
    assert bool(((allm == 0) | (allm == 1)).any())  # the huge lr drives some to the bounds
    again, losses2 = anp.optimize_masks(art.model, clean)  # same seed, same masks
    assert losses2 == losses and all(torch.equal(again[k], v) for k, v in masks.items())


def test_threshold_pruning_zeroes_exactly_the_masked_neurons() -> None:
    net = _bn_net()
    bns = bn_layers(net)
    w, b = net[1].weight.detach().clone(), net[1].bias.detach().clone()
    pruned = prune_by_threshold(bns, [torch.tensor([0.1, 0.9, 0.2, 0.21])], 0.2)
    assert pruned == {"1": [0, 2]}
    assert torch.equal(net[1].weight[[1, 3]], w[[1, 3]])
    assert bool((net[1].weight[[0, 2]] == 0).all())
    assert torch.equal(net[1].bias, b)  # the authors zero the weight only
    prune_by_threshold(bns, [torch.tensor([0.1, 0.9, 0.2, 0.21])], 0.2, prune_bias=True)
    assert bool((net[1].bias[[0, 2]] == 0).all()) and torch.equal(net[1].bias[[1, 3]], b[[1, 3]])


def test_repair_keeps_the_architecture_and_does_not_raise_asr(planted) -> None:
    art, clean, ev = planted
    before = evaluate_backdoor(art.model, ev, art.trigger, art.policy)
    state = {k: v.clone() for k, v in art.model.state_dict().items()}
    anp = ANP(iterations=8, batch_size=32, threshold=0.2)
    model = anp.repair(copy.deepcopy(art.model), clean)
    after = evaluate_backdoor(model, ev, art.trigger, art.policy)
    assert after["asr"] <= before["asr"] + 1e-9
    assert after["clean_acc"] >= before["clean_acc"] - 0.05
    assert all(torch.equal(v, art.model.state_dict()[k]) for k, v in state.items())
    sd = model.state_dict()
    assert sd.keys() == state.keys()
    assert [type(m) for m in model.modules()] == [type(m) for m in art.model.modules()]
    rep = anp.report
    assert rep is not None and rep.iterations == 8 and 0 <= rep.fraction <= 1
    # exactly the neurons at or below the threshold were zeroed; running stats untouched
    for name, m in rep.masks.items():
        low = m <= 0.2
        assert bool((sd[f"{name}.weight"][low] == 0).all())
        assert torch.equal(sd[f"{name}.weight"][~low], state[f"{name}.weight"][~low])
        assert torch.equal(sd[f"{name}.running_mean"], state[f"{name}.running_mean"])


def test_epochs_budget_and_no_batchnorm(planted) -> None:
    from trustlab.data import load_dataset
    from trustlab.defenses.backdoor.case import DefenseCase
    from trustlab.models.spec import ModelSpec

    assert ANP(epochs=1, batch_size=128)._iterations(180) == 2
    assert ANP()._iterations(180) == 2000
    art, clean, ev = planted
    small = ModelSpec.for_data("cnn-small", load_dataset("digits", "test")).build()
    with pytest.raises(InputError, match="no affine BatchNorm"):
        ANP().repair(small, clean)
    nobn = copy.copy(art)
    nobn.model = small
    keep: dict = {}
    case = DefenseCase(nobn, None, clean, ev, {"clean_acc": 1.0, "asr": 1.0}, None, 0, {}, False,
                       keep)  # fmt: skip
    out = ANP.run_case(case)
    assert set(out) == {"pruned", "clean_acc_after", "asr_after", "der"}
    assert all(math.isnan(v) for v in out.values()) and "skipped" in keep["report"]


def test_errors() -> None:
    for kw, word in [({"eps": -0.1}, "eps"), ({"steps": 0}, "steps"), ({"alpha": 1.5}, "alpha"),
                     ({"lr": 0}, "lr"), ({"iterations": 0}, "iterations"),
                     ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"),
                     ({"threshold": 1.0}, "threshold")]:  # fmt: skip
        with pytest.raises(InputError, match=word):
            ANP(**kw)
    with pytest.raises(InputError, match="no masks"):
        ANP().prune(_bn_net(), {})
