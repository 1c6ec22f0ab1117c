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


def _authors_out_of_focus(r, t, weight, sigma, att, oy, ox, size):
    """The out-of-focus branch of the authors' ``blend_images`` (``scripts/insert_reflection.py``)
    in NumPy on ``(H, W, 3)`` images already in gamma-2.2 space: OpenCV's ``GaussianBlur``
    (kernel side ``2 ceil(2 sigma) + 1``, BORDER_REFLECT_101 = scipy's ``"mirror"``), the
    per-channel overflow correction, the ``gen_kernel(size, 3)`` vignette at offset ``(oy, ox)``
    times ``1 - alpha_t / 2``, and the layer ``min(1, 4 (1 - alpha_t))`` times that."""
    import numpy as np
    from scipy import stats
    from scipy.ndimage import correlate1d

    alpha_t = 1 - weight
    side = int(2 * np.ceil(2 * sigma) + 1)
    x = np.arange(side) - (side - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    blur = correlate1d(correlate1d(r, k, axis=0, mode="mirror"), k, axis=1, mode="mirror")
    over = blur + t
    fixed = 0
    for i in range(3):
        m = over[:, :, i] > 1
        mean_i = max(1.0, np.sum(over[:, :, i] * m) / (m.sum() + 1e-6))
        fixed += mean_i > 1
        blur[:, :, i] = blur[:, :, i] - (mean_i - 1) * att
    blur = np.clip(blur, 0, 1)
    nsig = 3
    step = (2 * nsig + 1.0) / size
    edges = np.linspace(-nsig - step / 2, nsig + step / 2, size + 1)
    k1 = np.diff(stats.norm.cdf(edges))
    win = np.sqrt(np.outer(k1, k1))
    win = win / win.sum()
    win = win / win.max()
    h, w = r.shape[:2]
    alpha_r = np.dstack([win] * 3)[oy : oy + h, ox : ox + w] * (1 - alpha_t / 2)
    mask = blur * alpha_r
    layer = min(1.0, 4 * (1 - alpha_t)) * mask
    blended = np.clip((mask + t * alpha_t) ** (1 / 2.2), 0, 1)
    return blended, layer ** (1 / 2.2), fixed


@pytest.mark.parametrize(
    "weight,sigma,vignette", [(0.3, 2.3, (0.7, 0.4)), (0.1, 4.6, (0.2, 0.9)), (0.45, 1.2, (1, 0))]
)
def test_out_of_focus_layer_matches_a_numpy_transcription_of_the_authors(
    weight: float, sigma: float, vignette: tuple[float, float]
) -> None:
    from trustlab.attacks.backdoor.triggers import refool_blend

    g = torch.Generator().manual_seed(3)
    size, h, w = 60, 40, 60  # the working size: the longer side is max_image_size already
    r = torch.rand(3, h, w, generator=g) ** 0.5  # bright, so the blend overflows somewhere
    t = 0.1 + 0.9 * torch.rand(3, h, w, generator=g)
    p = {"weight": weight, "sigma": sigma, "shift": (3, 3), "ghost_alpha": 0.5,
         "vignette": vignette, "att": 1.12}  # fmt: skip
    blended, _, layer = refool_blend(r, "out-of-focus", p, t, max_image_size=size)
    oy = int(vignette[0] * (size - h - 10))  # trustlab's seeded vignette offset; ox is 0 here
    hwc = [(v.permute(1, 2, 0).double() ** 2.2).numpy() for v in (r, t)]
    ref_blend, ref_layer, fixed = _authors_out_of_focus(*hwc, weight, sigma, 1.12, oy, 0, size)
    assert fixed >= 1  # the overflow correction was exercised
    hwc_layer = layer.permute(1, 2, 0).double().numpy()
    assert abs(hwc_layer - ref_layer).max() < 1e-5
    assert abs(blended.permute(1, 2, 0).double().numpy() - ref_blend).max() < 1e-5


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


class _Round(nn.Module):
    """A stand-in trial model that only remembers its round."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r


def _random_asr_selection(monkeypatch: pytest.MonkeyPatch, seed: int, n: int = 69, **kw: object):
    """``select_reflections`` over ``n`` cheap stand-in candidates whose trial ASR is a seeded
    random number per (round, candidate): the ranking's draws alone decide who gets tried."""
    import trustlab.attacks.backdoor.refool as refool

    cands = [PixelTrigger(value=(k + 1) / (n + 1), channels=3) for k in range(n)]
    index = {id(t): k for k, t in enumerate(cands)}

    def fake_asr(model: _Round, val: ArrayDataset, trig: object, policy: object, device="cpu"):
        k = index[id(trig)]
        u = torch.rand((), generator=torch.Generator().manual_seed(1000 * model.r + k))
        return {"asr": float(u)}

    monkeypatch.setattr(refool, "evaluate_backdoor", fake_asr)
    train, val = _data(60, 0), _data(30, 1)
    return select_reflections(cands, train, val, lambda d, r: _Round(r), seed=seed, **kw)


def test_selection_draws_in_proportion_to_the_weights_and_reaches_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the authors' 16 rounds of 8 over 69 candidates with random trial ASRs: the draws in
    # proportion to W reach most of the pool (a top-k ranking with median-weighted untried
    # candidates kept re-trying the same 12)
    sel = _random_asr_selection(monkeypatch, seed=0, keep=8, rounds=16)
    tried = {i for r in sel.rounds for i in r["used"]}
    assert len(sel.rounds) == 16 and all(len(set(r["used"])) == 8 for r in sel.rounds)
    assert len(tried) >= 40, len(tried)
    # Algorithm 1's update after the last round: used -> its ASR, every other -> their median
    last = sel.rounds[-1]
    asr = dict(zip(last["used"], last["asr"], strict=True))
    med = statistics.median(asr.values())
    assert sel.weights == [asr.get(i, med) for i in range(69)]
    assert sel.weights[sel.indices[0]] == max(sel.weights)
    # seeded: the same seed draws the same candidates, another seed others
    again = _random_asr_selection(monkeypatch, seed=0, keep=8, rounds=16)
    assert [r["used"] for r in again.rounds] == [r["used"] for r in sel.rounds]
    other = _random_asr_selection(monkeypatch, seed=1, keep=8, rounds=16)
    assert [r["used"] for r in other.rounds] != [r["used"] for r in sel.rounds]


def test_draw_candidates_is_proportional_without_replacement() -> None:
    from trustlab.attacks.backdoor.refool import draw_candidates, update_weights
    from trustlab.utils.seed import generator

    g = generator(0)
    firsts = [draw_candidates([1.0, 0.0, 3.0, 0.0], 2, g) for _ in range(4000)]
    share = sum(d[0] == 2 for d in firsts) / len(firsts)
    assert abs(share - 0.75) < 0.03  # 3 / (1 + 3)
    assert all(sorted(d) == [0, 2] for d in firsts)  # zero weights only once the rest are used
    # every weight 0 (all used candidates failed): uniform over the pool, still distinct
    d = draw_candidates([0.0] * 5, 5, generator(1))
    assert sorted(d) == list(range(5))
    with pytest.raises(InputError, match=">= 0"):
        draw_candidates([1.0, -1.0], 1, g)
    assert update_weights(4, {0: 0.9, 2: 0.1, 3: 0.4}) == [0.9, 0.4, 0.1, 0.4]


def test_selection_poisons_at_the_given_trigger_stage() -> None:
    train, val = _data(60, 0), _data(30, 1)
    cands = _cands(["chelsea", "camera"])
    seen: dict[str, ArrayDataset] = {}
    for stage in ("poisoning", "after-augment"):

        def trial(data: ArrayDataset, r: int, stage: str = stage) -> nn.Module:
            seen[stage] = data
            return Brightness(0.2)

        select_reflections(cands, train, val, trial, rate=0.1, keep=2, rounds=1,
                           trigger_stage=stage)  # fmt: skip
    before, after = seen["poisoning"], seen["after-augment"]
    mask = after.poison_mask
    assert torch.equal(mask, before.poison_mask) and int(mask.sum()) == 6
    # after-augment: the stored rows stay clean and carry their trigger for the trainer
    assert torch.equal(after.x, train.x) and bool((after.trigger_rows[mask] >= 0).all())
    assert not torch.equal(before.x[mask], train.x[mask])
    torch.testing.assert_close(after.triggered().x, before.x)
    with pytest.raises(InputError, match="trigger_stage"):
        select_reflections(cands, train, val, lambda d, r: Brightness(0.2),
                           trigger_stage="later")  # fmt: skip
