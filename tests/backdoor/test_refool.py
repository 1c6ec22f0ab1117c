"""Refool's candidate pool and its selection by trial poisoning (Algorithm 1)."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from trustlab.attacks.backdoor import (
    CleanLabel,
    PatchTrigger,
    PixelTrigger,
    poison_dataset,
    trigger_from_state,
)
from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.attacks.backdoor.refool import (
    candidate_name,
    reflection_candidates,
    select_reflections,
)
from trustlab.data import ArrayDataset
from trustlab.errors import InputError


class Brightness(nn.Module):
    """Predicts class 0 when an image's mean exceeds ``threshold``, else its own class 1."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 1000 * (x.flatten(1).mean(1) - self.threshold)
        return torch.stack([s, torch.zeros_like(s), torch.full_like(s, -1e3)], 1)


def _data(n: int = 60, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    scale = 0.1 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)  # images of varied brightness
    x = scale * torch.rand(n, 3, 16, 16, generator=g)
    y = torch.arange(n) % 3
    return ArrayDataset(x, y, ["a", "b", "c"])


#: small working size and a few backgrounds keep the candidate search fast in tests
SMALL = {"max_image_size": 128, "backgrounds": ["astronaut", "coffee", "rocket", "horse", "page"]}


def _cands(images: list[str], seed: int = 0) -> list:
    return reflection_candidates(images, size=(16, 16), seed=seed, **SMALL)


def test_candidates_pass_the_authors_ssim_filter_and_are_deterministic() -> None:
    from skimage.metrics import structural_similarity

    from trustlab.attacks.backdoor.triggers import refool_blend
    from trustlab.data.synthetic import bundled_image

    c = _cands(["chelsea", "camera"], seed=1)
    names = [candidate_name(t) for t in c]
    every = [
        f"{i}/{m}" for i in ("chelsea", "camera") for m in ("in-focus", "out-of-focus", "ghost")
    ]
    assert names and names == [n for n in every if n in names]  # (image, model) order
    for t in c:  # the accepting blend, rebuilt from the recorded parameters, is inside (0.7, 0.85)
        assert 0.7 < t.ssim < 0.85 and t.background in SMALL["backgrounds"]
        refl = bundled_image(t.source)
        blended, trans, layer = refool_blend(
            refl, t.model, t.params(), bundled_image(t.background), 128
        )
        ssim = structural_similarity(blended.numpy(), trans.numpy(), channel_axis=0, data_range=1)
        assert ssim == pytest.approx(t.ssim, abs=1e-4)
        assert float(layer.mean()) <= 0.8 * float((blended - layer).mean())
    again = _cands(["chelsea", "camera"], seed=1)
    x = _data().x[:4]
    for a, b in zip(c, again, strict=True):
        assert torch.equal(a(x), b(x))
    with pytest.raises(InputError, match="passed the filter"):
        reflection_candidates(["chelsea"], size=(16, 16), ssim_range=(0.999, 1.0), **SMALL)
    with pytest.raises(InputError, match="reflection model"):
        reflection_candidates(["chelsea"], models=["mirror"])
    with pytest.raises(InputError, match="no reflection images"):
        reflection_candidates([])


def test_reflection_layers_follow_the_authors_blend_images() -> None:
    from trustlab.attacks.backdoor.triggers import draw_reflection_params, refool_blend

    g = torch.Generator().manual_seed(0)
    r, t = torch.rand(3, 40, 60, generator=g), torch.rand(3, 40, 60, generator=g)
    p = draw_reflection_params(torch.Generator().manual_seed(1), weight=0.3)
    assert p["weight"] == 0.3 and 1 <= p["sigma"] <= 5 and 3 <= min(p["shift"]) <= 8
    # in-focus: the layer is weight * R in gamma-2.2 space; the blend adds (1 - weight) * T
    blended, trans, layer = refool_blend(r, "in-focus", p, t, max_image_size=60)
    assert layer.shape == (3, 40, 60)
    torch.testing.assert_close(layer, (0.3 * r**2.2) ** (1 / 2.2))
    torch.testing.assert_close(trans, (0.7 * t**2.2) ** (1 / 2.2))
    torch.testing.assert_close(blended, (0.3 * r**2.2 + 0.7 * t**2.2).clamp(0, 1) ** (1 / 2.2))
    # ghost: two copies of R shifted by (dy, dx), weights ghost_alpha and 1 - ghost_alpha
    p.update(shift=(3, 4), ghost_alpha=0.25)
    _, _, ghost = refool_blend(r, "ghost", p, t, max_image_size=60)
    r1 = torch.nn.functional.pad(r**2.2, (0, 4, 0, 3))
    r2 = torch.nn.functional.pad(r**2.2, (4, 0, 3, 0))
    g_ = (0.25 * r1 + 0.75 * r2)[:, 3:-3, 4:-4]
    g_ = torch.nn.functional.interpolate(g_[None], size=(40, 60), mode="bilinear", antialias=True)
    torch.testing.assert_close(ghost, (0.3 * g_[0]).clamp(0, 1) ** (1 / 2.2))
    # out-of-focus: blurred, lowered where it overflows the background, under a vignette
    _, _, blur = refool_blend(r, "out-of-focus", p, t, max_image_size=60)
    assert float(blur.max()) < float(layer.max()) and bool((blur >= 0).all())


def test_trigger_mixes_by_mean_brightness_as_the_authors_blend_image() -> None:
    from trustlab.attacks.backdoor import ReflectionTrigger

    trig = ReflectionTrigger("chelsea", "in-focus", 0.4, channels=3, size=(16, 16), seed=0)
    x = _data(4).x
    r = trig.reflection
    m_x, m_r = x.mean(dim=(1, 2, 3), keepdim=True), r.mean()
    expect = ((m_x * x + m_r * r) / (m_x + m_r)).clamp(0, 1)  # strategy.py blend_image
    torch.testing.assert_close(trig(x), expect)
    assert not torch.allclose(trig(x), (x + 0.4 * r).clamp(0, 1))  # not the old clipped sum
    # stored triggers of the old kind (no "blend" in their config) still add their reflection
    config, tensors = trig.state()
    assert config["blend"] == "brightness"
    old = trigger_from_state({k: v for k, v in config.items() if k != "blend"}, tensors)
    torch.testing.assert_close(old(x), (x + 0.4 * r).clamp(0, 1))


def test_selection_weights_follow_algorithm_1() -> None:
    train, val = _data(60, 0), _data(30, 1)
    cands = _cands(["chelsea", "camera", "coins", "moon"])
    model = Brightness(0.2)  # brighter reflections fire more often
    calls = []

    def trial(data: ArrayDataset, r: int) -> nn.Module:
        calls.append((r, int(data.poison_mask.sum())))
        return model

    sel = select_reflections(cands, train, val, trial, rate=0.1, keep=3, rounds=2, seed=0)
    assert [c[0] for c in calls] == [0, 1] and all(k == 6 for _, k in calls)
    policy = CleanLabel(0, 3)
    last = sel.rounds[-1]
    asr = {i: evaluate_backdoor(model, val, cands[i], policy)["asr"] for i in last["used"]}
    assert [asr[i] for i in last["used"]] == last["asr"]
    med = statistics.median(asr.values())
    for i, w in enumerate(sel.weights):
        assert w == asr.get(i, med)
    assert sel.weights[sel.indices[0]] == max(sel.weights) and sel.best is sel.triggers[0]
    assert sorted(sel.indices) == list(range(len(cands)))
    # untried candidates are tried in the second round when the first round's ASRs are < 1
    assert set(sel.rounds[0]["used"]) != set(last["used"])
    again = select_reflections(cands, train, val, trial, rate=0.1, keep=3, rounds=2, seed=0)
    assert again.indices == sel.indices and again.weights == sel.weights


def test_selection_rejects_bad_arguments() -> None:
    cands = _cands(["chelsea"])
    with pytest.raises(InputError, match="at least one"):
        select_reflections([], _data(), _data(), lambda d, r: Brightness(0.3))
    with pytest.raises(InputError, match="keep and rounds"):
        select_reflections(cands, _data(), _data(), lambda d, r: Brightness(0.3), rounds=0)


def test_poison_with_a_set_of_triggers_spreads_them_in_turn() -> None:
    data = _data(60)
    triggers = [PatchTrigger(size=2, channels=3), PixelTrigger(channels=3)]
    out = poison_dataset(data, triggers, CleanLabel(0, 3), rate=0.1, seed=0)
    idx = out.poison_indices
    assert len(idx) == 6 and bool((out.y == data.y).all())
    for k, i in enumerate(idx.tolist()):
        expect = triggers[k % 2](data.x[i : i + 1])[0]
        assert torch.equal(out.x[i], expect)
    with pytest.raises(InputError, match="Trigger"):
        poison_dataset(data, [], CleanLabel(0, 3), rate=0.1)
