"""Tests of trustlab.train.losses: hand-computed values, normalisation, numerics, names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trustlab.errors import InputError
from trustlab.train import losses as L
from trustlab.train.losses import (
    APL,
    LOG_1E4,
    LOSS_NAMES,
    SCE,
    loss_defaults,
    make_loss,
    paper_family,
)

FUNCS = {
    "ce": L.ce,
    "mae": L.mae,
    "gce": L.gce,
    "rce": L.rce,
    "sce": L.sce,
    "nce": L.nce,
    "nfl": L.nfl,
    "ngce": L.ngce,
    "nmae": L.nmae,
    "nrce": L.nrce,
}
NORMALISED = ("nce", "nfl", "ngce", "nmae", "nrce")

# ---------------------------------------------------------------------------------------------
# a 2x3 example worked by hand (numpy, straight from the formulas, no log_softmax/expm1 tricks)

Z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
Y = np.array([0, 2])
K = 3
_E = np.exp(Z)
P = _E / _E.sum(axis=1, keepdims=True)  # softmax, row by row
PY = P[np.arange(2), Y]  # p_y per row
ONE_HOT = np.eye(K)[Y]
LOGP = np.log(P)


def _hand(name: str) -> np.ndarray:
    """Per-sample value of ``name`` (default hyper-parameters) for (Z, Y), from the formulas."""
    ce = -np.log(PY)
    rce = -(P * np.log(np.clip(ONE_HOT, 1e-4, 1.0))).sum(axis=1)  # the clamp definition
    fl = -((1.0 - P) ** 0.5) * LOGP  # FL(j) for every j, gamma = 0.5
    values = {
        "ce": ce,
        "mae": 0.5 * np.abs(P - ONE_HOT).sum(axis=1),  # half the L1 distance = 1 - p_y
        "gce": (1.0 - PY**0.7) / 0.7,
        "rce": rce,
        "sce": 0.1 * ce + 1.0 * rce,
        "nce": -np.log(PY) / (-LOGP.sum(axis=1)),
        "nfl": fl[np.arange(2), Y] / fl.sum(axis=1),
        "ngce": (1.0 - PY**0.1) / (K - (P**0.1).sum(axis=1)),
        "nmae": (1.0 - PY) / (K - 1),
        "nrce": rce / (-math.log(1e-4) * (K - 1)),
    }
    return values[name]


def test_hand_example_is_what_we_think() -> None:
    # the arithmetic itself: p = e^z / sum e^z; row 0: e + e^2 + e^0.5 = 11.75606...
    assert P[0] == pytest.approx([0.2312239, 0.62853172, 0.14024438], abs=1e-8)
    assert -np.log(PY) == pytest.approx([1.46436878, 0.0658839], abs=1e-8)
    assert np.log(_E[0].sum()) - Z[0, 0] == pytest.approx(1.46436878, abs=1e-8)
    assert _hand("mae") == pytest.approx(1.0 - PY, abs=1e-15)
    assert _hand("rce") == pytest.approx(-math.log(1e-4) * (1.0 - PY), rel=1e-12)
    assert _hand("mae") == pytest.approx([0.7687761, 0.06376045], abs=1e-8)


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_each_loss_matches_hand_computation(name: str, dtype: torch.dtype) -> None:
    z = torch.tensor(Z, dtype=dtype)
    y = torch.tensor(Y)
    expected = _hand(name)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    got = FUNCS[name](z, y, reduction="none")
    assert got.dtype == dtype and got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=tol, atol=tol)
    assert float(FUNCS[name](z, y)) == pytest.approx(expected.mean(), rel=tol, abs=tol)
    module = make_loss(name, reduction="none")
    np.testing.assert_allclose(module(z, y).numpy(), expected, rtol=tol, atol=tol)


def test_uniform_logits_closed_forms() -> None:
    z = torch.zeros(1, 3, dtype=torch.float64)
    y = torch.tensor([1])
    # p = 1/3 everywhere
    assert float(L.ce(z, y)) == pytest.approx(math.log(3))
    assert float(L.mae(z, y)) == pytest.approx(2 / 3)
    assert float(L.gce(z, y)) == pytest.approx((1 - 3**-0.7) / 0.7)
    assert float(L.rce(z, y)) == pytest.approx(-LOG_1E4 * 2 / 3)
    assert float(L.rce(z, y, A=-4.0)) == pytest.approx(8 / 3)
    for name in NORMALISED:  # every label alike: each normalised loss is 1/K
        assert float(FUNCS[name](z, y)) == pytest.approx(1 / 3), name


# ---------------------------------------------------------------------------------------------
# relations between the losses


def _random_logits(n: int = 6, k: int = 5, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, k, generator=g, dtype=torch.float64)


def _labels(n: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(
    row=st.integers(2, 20).flatmap(
        lambda k: st.lists(
            st.floats(-50, 50, allow_nan=False, allow_infinity=False), min_size=k, max_size=k
        )
    ),
    name=st.sampled_from(NORMALISED),
    q=st.floats(0.01, 1.0),
    gamma=st.floats(0.0, 3.0),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_normalised_losses_sum_to_one_over_labels(
    row: list[float], name: str, q: float, gamma: float, dtype: torch.dtype
) -> None:
    k = len(row)
    z = torch.tensor([row] * k, dtype=dtype)  # the same logits, once per label
    y = torch.arange(k)
    kw = {"ngce": {"q": q}, "nfl": {"gamma": gamma}, "nrce": {"A": -1.0 - 10 * q}}.get(name, {})
    per_label = FUNCS[name](z, y, reduction="none", **kw)
    assert torch.isfinite(per_label).all()
    assert (per_label >= 0).all()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert float(per_label.sum()) == pytest.approx(1.0, abs=tol)


@pytest.mark.parametrize("A", [LOG_1E4, -4.0, -0.5])
def test_nmae_equals_nrce_and_rce_is_minus_a_one_minus_py(A: float) -> None:
    z, y = _random_logits(8, 7), _labels(8, 7)
    py = F.softmax(z, dim=1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(L.rce(z, y, A=A, reduction="none"), -A * (1 - py))
    torch.testing.assert_close(L.nrce(z, y, A=A, reduction="none"), L.nmae(z, y, reduction="none"))
    torch.testing.assert_close(L.nmae(z, y, reduction="none"), (1 - py) / 6)


def _public_rce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The public SCE/APL code's RCE: p clamped to [1e-7, 1], one-hot clamped to [1e-4, 1]."""
    p = F.softmax(z, dim=1).clamp(1e-7, 1.0)
    one_hot = F.one_hot(y, z.shape[1]).to(z.dtype).clamp(1e-4, 1.0)
    return -(p * torch.log(one_hot)).sum(dim=1)


def test_rce_equals_public_clamp_formulation_up_to_the_p_clamp() -> None:
    k = 10
    # moderate logits: every p > 1e-7, so the public clamp of p is inactive -> equal
    z, y = _random_logits(16, k, scale=1.0), _labels(16, k)
    assert (F.softmax(z, dim=1) > 1e-7).all()
    torch.testing.assert_close(L.rce(z, y, reduction="none"), _public_rce(z, y))
    # large logits: some p < 1e-7 get raised to 1e-7 by the public code; the gap is bounded
    z = _random_logits(16, k, scale=20.0, seed=3)
    assert (F.softmax(z, dim=1) < 1e-7).any()
    gap = (L.rce(z, y, reduction="none") - _public_rce(z, y)).abs()
    assert (gap <= -LOG_1E4 * (k - 1) * 1e-7 + 1e-12).all()
    assert gap.max() > 0


def test_sce_is_the_weighted_sum_of_ce_and_rce() -> None:
    z, y = _random_logits(), _labels(6, 5)
    for alpha, beta, A in [(0.1, 1.0, LOG_1E4), (6.0, 0.1, -4.0), (0.0, 2.0, -1.0)]:
        expected = alpha * L.ce(z, y, reduction="none") + beta * L.rce(z, y, A, reduction="none")
        torch.testing.assert_close(L.sce(z, y, alpha, beta, A, reduction="none"), expected)
        torch.testing.assert_close(SCE(alpha, beta, A)(z, y), expected.mean())


@pytest.mark.parametrize("active", L.ACTIVE_LOSSES)
@pytest.mark.parametrize("passive", L.PASSIVE_LOSSES)
def test_apl_is_the_weighted_sum_of_its_terms(active: str, passive: str) -> None:
    z, y = _random_logits(), _labels(6, 5)
    alpha, beta = 2.5, 0.3
    expected = alpha * FUNCS[active](z, y, reduction="none") + beta * FUNCS[passive](
        z, y, reduction="none"
    )
    loss = APL(active, passive, alpha, beta, reduction="none")
    torch.testing.assert_close(loss(z, y), expected)
    torch.testing.assert_close(APL(active, passive, alpha, beta)(z, y), expected.mean())
    torch.testing.assert_close(make_loss(f"{active}+{passive}", alpha, beta)(z, y), expected.mean())


def test_apl_routes_term_hyperparameters() -> None:
    z, y = _random_logits(), _labels(6, 5)
    torch.testing.assert_close(
        APL("ngce", "rce", q=0.3, A=-4.0)(z, y), L.ngce(z, y, q=0.3) + L.rce(z, y, A=-4.0)
    )
    torch.testing.assert_close(
        APL("nfl", "mae", alpha=3.0, gamma=2.0)(z, y), 3.0 * L.nfl(z, y, gamma=2.0) + L.mae(z, y)
    )
    # defaults of the terms: NGCE q=0.1, NFL gamma=0.5, RCE A=ln(1e-4)
    torch.testing.assert_close(APL("ngce", "mae")(z, y), L.ngce(z, y, q=0.1) + L.mae(z, y))
    torch.testing.assert_close(
        APL("nfl", "rce")(z, y), L.nfl(z, y, gamma=0.5) + L.rce(z, y, A=LOG_1E4)
    )
    assert APL("NGCE", "Rce", q=0.3, A=-4.0).hparams() == {
        "alpha": 1.0,
        "beta": 1.0,
        "q": 0.3,
        "A": -4.0,
    }
    # a parameter the chosen terms do not have is an error, not silently ignored
    with pytest.raises(InputError, match="'q'.*ngce"):
        APL("nce", "rce", q=0.3)
    with pytest.raises(InputError, match="'gamma'.*nfl"):
        APL("ngce", "rce", gamma=1.0)
    with pytest.raises(InputError, match="'A'.*rce"):
        APL("nce", "mae", A=-4.0)


def test_apl_terms_are_restricted_to_the_papers_sets() -> None:
    with pytest.raises(InputError, match="active term 'ce'.*nce, nfl, ngce"):
        APL("ce", "rce")
    with pytest.raises(InputError, match="passive term 'nmae'.*mae, rce"):
        APL("nce", "nmae")
    with pytest.raises(InputError, match="passive term 'nrce'"):
        APL("nce", "nrce")


def test_special_cases_of_the_hyperparameters() -> None:
    z, y = _random_logits(), _labels(6, 5)
    torch.testing.assert_close(L.gce(z, y, q=1.0), L.mae(z, y))  # q = 1: MAE
    torch.testing.assert_close(L.nfl(z, y, gamma=0.0), L.nce(z, y))  # gamma = 0: NCE
    # q -> 0: CE (GCE = CE - q CE^2 / 2 + O(q^2))
    assert float(L.gce(z, y, q=1e-6)) == pytest.approx(float(L.ce(z, y)), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_gradients_match_finite_differences(name: str) -> None:
    z = _random_logits(4, 4, scale=2.0).requires_grad_(True)
    y = _labels(4, 4)
    assert torch.autograd.gradcheck(lambda t: FUNCS[name](t, y), (z,))


def test_nfl_gradient_flows_through_the_normaliser_unlike_public_code() -> None:
    z = _random_logits(5, 4, scale=2.0).requires_grad_(True)
    y = _labels(5, 4)

    def public_nfl(t: torch.Tensor) -> torch.Tensor:  # APL code: normaliser and p_t detached
        logp = F.log_softmax(t, dim=1)
        norm = (-((1 - logp.detach().exp()) ** 0.5) * logp).sum(dim=1)
        logpt = logp.gather(1, y[:, None]).squeeze(1)
        return (-((1 - logpt.detach().exp()) ** 0.5) * logpt / norm).mean()

    ours = L.nfl(z, y)
    theirs = public_nfl(z)
    torch.testing.assert_close(ours, theirs)  # same value ...
    (g_ours,) = torch.autograd.grad(ours, z)
    (g_theirs,) = torch.autograd.grad(theirs, z)
    assert not torch.allclose(g_ours, g_theirs)  # ... different gradient (ours is the true one)


EXTREME = [
    [1e4, -1e4, 0.0],
    [-1e4, -1e4, 1e4],
    [1e4, 1e4, -1e4],
    [1e4, 1e4, 1e4],
    [-1e4, 1e4, -1e4],
    [-1e4, -1e4, -1e4],
]


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_values_and_gradients_at_extreme_logits(name: str, dtype: torch.dtype) -> None:
    base = torch.tensor(EXTREME, dtype=dtype)
    loss = make_loss(name, reduction="none")
    for label in range(3):  # every label against every row: p_y = 1, 1/2, 1/3 and 0
        z = base.clone().requires_grad_(True)
        y = torch.full((len(EXTREME),), label)
        values = loss(z, y)
        (grad,) = torch.autograd.grad(values.sum(), z)
        assert torch.isfinite(values).all(), (name, label, values)
        assert torch.isfinite(grad).all(), (name, label, grad)
        assert (values >= 0).all()


def test_extreme_logits_give_the_limit_values() -> None:
    z = torch.tensor([[1e4, -1e4, -1e4]] * 2)
    y = torch.tensor([0, 1])  # right (p_y = 1) and wrong (p_y = 0)
    assert L.ce(z, y, reduction="none").tolist() == [0.0, 2e4]
    assert L.mae(z, y, reduction="none").tolist() == [0.0, 1.0]
    assert L.nmae(z, y, reduction="none").tolist() == [0.0, 0.5]
    torch.testing.assert_close(L.gce(z, y, reduction="none"), torch.tensor([0.0, 1 / 0.7]))
    torch.testing.assert_close(L.nce(z, y, reduction="none"), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(L.nfl(z, y, reduction="none"), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(L.ngce(z, y, reduction="none"), torch.tensor([0.0, 0.5]))


# ---------------------------------------------------------------------------------------------
# reductions


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_reductions(name: str) -> None:
    z, y = _random_logits(7, 4), _labels(7, 4)
    per_sample = make_loss(name, reduction="none")(z, y)
    assert per_sample.shape == (7,)
    torch.testing.assert_close(make_loss(name, reduction="sum")(z, y), per_sample.sum())
    torch.testing.assert_close(make_loss(name)(z, y), per_sample.mean())
    assert make_loss(name)(z, y).shape == ()


def test_bad_reduction() -> None:
    z, y = _random_logits(), _labels(6, 5)
    with pytest.raises(InputError, match="unknown reduction 'avg'.*'mean', 'none', 'sum'"):
        L.ce(z, y, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown reduction"):
        L.NCE(reduction="batchmean")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown reduction"):
        make_loss("nce+rce", reduction="max")


# ---------------------------------------------------------------------------------------------
# input validation


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_input_validation(name: str) -> None:
    fn = FUNCS[name]
    z = torch.zeros(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(InputError, match=r"labels must lie in \[0, 2\].*\[0, 3\]"):
        fn(z, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(InputError, match=r"\[-1, 2\]"):
        fn(z, torch.tensor([0, -1, 2, 0]))
    with pytest.raises(InputError, match=r"labels must have shape \(4,\)"):
        fn(z, torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match=r"labels must have shape \(4,\)"):
        fn(z, y[:, None])
    with pytest.raises(InputError, match="floating-point.*torch.int64"):
        fn(torch.zeros(4, 3, dtype=torch.long), y)
    with pytest.raises(InputError, match="integer class indices.*torch.float32"):
        fn(z, y.float())
    with pytest.raises(InputError, match=r"shape \(N, K\), got \(12,\)"):
        fn(z.flatten(), y)
    with pytest.raises(InputError, match="K >= 2"):
        fn(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match="empty batch"):
        fn(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(InputError, match="torch tensors"):
        fn(Z, y)
    # int32 labels are fine
    assert torch.isfinite(fn(z, y.int()))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: L.GCE(q=0.0), "gce q must be a finite number > 0 and <= 1"),
        (lambda: L.GCE(q=1.5), "gce q"),
        (lambda: L.NGCE(q=float("nan")), "ngce q"),
        (lambda: L.NFL(gamma=-1.0), "nfl gamma must be a finite number >= 0"),
        (lambda: L.RCE(A=0.0), "rce A must be a finite number < 0.*math.log"),
        (lambda: L.NRCE(A=4.0), "nrce A"),
        (lambda: L.SCE(alpha=-1.0), "sce alpha must be a finite number >= 0"),
        (lambda: L.SCE(beta="1"), "sce beta"),
        (lambda: APL(beta=float("inf")), "nce\\+rce beta"),
        (lambda: APL("ngce", "mae", q=2.0), "ngce q"),
    ],
)
def test_bad_hyperparameters(build, match: str) -> None:
    with pytest.raises(InputError, match=match):
        build()


def test_hyperparameters_validated_in_functions_too() -> None:
    z, y = _random_logits(), _labels(6, 5)
    with pytest.raises(InputError, match="gce q"):
        L.gce(z, y, q=-0.1)
    with pytest.raises(InputError, match="rce A"):
        L.rce(z, y, A=1.0)
    # numpy scalars are numbers too
    torch.testing.assert_close(L.gce(z, y, q=np.float32(0.5)), L.gce(z, y, q=0.5))


# ---------------------------------------------------------------------------------------------
# names and defaults


def test_loss_names() -> None:
    assert LOSS_NAMES[:10] == (
        "ce",
        "mae",
        "gce",
        "rce",
        "sce",
        "nce",
        "nfl",
        "ngce",
        "nmae",
        "nrce",
    )
    assert set(LOSS_NAMES[10:]) == {
        "nce+mae",
        "nce+rce",
        "nfl+mae",
        "nfl+rce",
        "ngce+mae",
        "ngce+rce",
    }
    for name in LOSS_NAMES:
        loss = make_loss(name)
        assert loss.name == name
        assert isinstance(loss, torch.nn.Module)


def test_make_loss_is_case_and_space_insensitive() -> None:
    assert isinstance(make_loss("SCE"), SCE)
    loss = make_loss(" NCE + RCE ")
    assert isinstance(loss, APL) and (loss.active, loss.passive) == ("nce", "rce")
    assert make_loss("NFL+Mae").name == "nfl+mae"


@pytest.mark.parametrize(
    ("dataset", "family", "sce_ab", "apl_rce_ab", "apl_mae_ab", "ngce_q"),
    [
        ("mnist", "mnist", (0.01, 1.0), (1.0, 10.0), (1.0, 10.0), 0.1),
        ("fashion-mnist", "mnist", (0.01, 1.0), (1.0, 10.0), (1.0, 10.0), 0.1),
        ("digits", "mnist", (0.01, 1.0), (1.0, 10.0), (1.0, 10.0), 0.1),
        ("cifar100", "cifar100", (6.0, 0.1), (10.0, 0.1), (10.0, 1.0), 0.7),
        ("CIFAR100", "cifar100", (6.0, 0.1), (10.0, 0.1), (10.0, 1.0), 0.7),
        ("cifar10", "cifar10", (0.1, 1.0), (1.0, 1.0), (1.0, 1.0), 0.1),
        ("svhn", "cifar10", (0.1, 1.0), (1.0, 1.0), (1.0, 1.0), 0.1),
        ("shapes10", "cifar10", (0.1, 1.0), (1.0, 1.0), (1.0, 1.0), 0.1),
        ("fundus2", "cifar10", (0.1, 1.0), (1.0, 1.0), (1.0, 1.0), 0.1),
        ("moving-shapes", "cifar10", (0.1, 1.0), (1.0, 1.0), (1.0, 1.0), 0.1),
        ("tensors", "cifar10", (0.1, 1.0), (1.0, 1.0), (1.0, 1.0), 0.1),
        (None, "cifar10", (0.1, 1.0), (1.0, 1.0), (1.0, 1.0), 0.1),
    ],
)
def test_per_dataset_defaults(dataset, family, sce_ab, apl_rce_ab, apl_mae_ab, ngce_q) -> None:
    assert paper_family(dataset) == family
    assert loss_defaults("sce", dataset) == {"alpha": sce_ab[0], "beta": sce_ab[1], "A": LOG_1E4}
    sce_loss = make_loss("sce", dataset=dataset)
    assert (sce_loss.alpha, sce_loss.beta, sce_loss.A) == (*sce_ab, LOG_1E4)
    for pair in ("nce+rce", "nfl+rce", "ngce+rce"):
        apl = make_loss(pair, dataset=dataset)
        assert (apl.alpha, apl.beta) == apl_rce_ab, pair
    for pair in ("nce+mae", "nfl+mae", "ngce+mae"):
        apl = make_loss(pair, dataset=dataset)
        assert (apl.alpha, apl.beta) == apl_mae_ab, pair
    assert make_loss("ngce", dataset=dataset).q == ngce_q
    assert make_loss("ngce+rce", dataset=dataset).hparams()["q"] == ngce_q
    assert make_loss("gce", dataset=dataset).q == 0.7  # GCE's q does not depend on the data


def test_loss_defaults_table_and_copies() -> None:
    assert loss_defaults("ce") == {} and loss_defaults("nmae", "cifar100") == {}
    assert loss_defaults("gce") == {"q": 0.7}
    assert loss_defaults("nfl") == {"gamma": 0.5}
    assert loss_defaults("nrce") == {"A": LOG_1E4}
    assert loss_defaults("nfl+rce", "mnist") == {
        "alpha": 1.0,
        "beta": 10.0,
        "gamma": 0.5,
        "A": LOG_1E4,
    }
    assert loss_defaults("ngce+mae", "cifar100") == {"alpha": 10.0, "beta": 1.0, "q": 0.7}
    d = loss_defaults("sce", "cifar100")
    d["alpha"] = 123.0
    assert loss_defaults("sce", "cifar100")["alpha"] == 6.0
    assert L.LOSS_DEFAULTS["cifar100"]["sce"] == {"alpha": 6.0, "beta": 0.1}
    assert abs(LOG_1E4 + 9.2103404) < 1e-7


def test_make_loss_overrides() -> None:
    loss = make_loss("sce", alpha=0.5, dataset="cifar100")  # beta keeps its default
    assert (loss.alpha, loss.beta) == (0.5, 0.1)
    loss = make_loss("nce+rce", alpha=2.0, beta=3.0, A=-4.0, dataset="mnist")
    assert loss.hparams() == {"alpha": 2.0, "beta": 3.0, "A": -4.0}
    assert make_loss("ngce+mae", q=0.4, dataset="cifar100").hparams()["q"] == 0.4
    assert make_loss("nfl", gamma=2.0).gamma == 2.0
    assert make_loss("gce", q=None).q == 0.7  # None means "default" (what a CLI passes)
    assert make_loss("rce", A=-4.0).A == -4.0


def test_make_loss_errors() -> None:
    with pytest.raises(InputError, match="unknown loss 'nec'. Did you mean 'nce'.*nce\\+rce"):
        make_loss("nec")
    with pytest.raises(InputError, match="unknown loss 'nce\\+gce'.*active term in \\{nce"):
        make_loss("nce+gce")
    with pytest.raises(InputError, match="unknown loss 'ce\\+rce'.*passive term in"):
        make_loss("ce+rce")
    with pytest.raises(InputError, match="unknown loss 'nce\\+nmae'"):
        make_loss("nce+nmae")
    with pytest.raises(InputError, match="unknown loss 'nce\\+rce\\+mae'.*Available"):
        make_loss("nce+rce+mae")
    with pytest.raises(InputError, match="'ce' has no parameter 'alpha'.*no hyper-parameters"):
        make_loss("ce", alpha=1.0)
    with pytest.raises(InputError, match="'gce' has no parameter 'beta'.*takes: q"):
        make_loss("gce", beta=1.0)
    with pytest.raises(InputError, match="'nce\\+rce' has no parameter 'q'.*alpha, beta, A"):
        make_loss("nce+rce", q=0.7)
    with pytest.raises(InputError, match="'sce' has no parameter 'foo'"):
        make_loss("sce", foo=1)
    with pytest.raises(InputError, match="unknown loss"):
        loss_defaults("cross-entropy", "mnist")


# ---------------------------------------------------------------------------------------------
# behaviour in training


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_trains_a_linear_model(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    centers = 3.0 * torch.randn(4, 8, generator=g)
    y = torch.arange(64) % 4
    x = centers[y] + torch.randn(64, 8, generator=g)
    model = torch.nn.Linear(8, 4)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    loss_fn = make_loss(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = float(loss_fn(model(x), y).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    assert float(loss_fn(model(x), y).detach()) < first
    assert (model(x).argmax(dim=1) == y).float().mean() > 0.9


# ---------------------------------------------------------------------------------------------
# the catalogue

# what make_loss built before the losses registered themselves (class, hparams on CIFAR-10)
_BEFORE = {
    "ce": ("CE", {}),
    "mae": ("MAE", {}),
    "gce": ("GCE", {"q": 0.7}),
    "rce": ("RCE", {"A": LOG_1E4}),
    "sce": ("SCE", {"alpha": 0.1, "beta": 1.0, "A": LOG_1E4}),
    "nce": ("NCE", {}),
    "nfl": ("NFL", {"gamma": 0.5}),
    "ngce": ("NGCE", {"q": 0.1}),
    "nmae": ("NMAE", {}),
    "nrce": ("NRCE", {"A": LOG_1E4}),
    "nce+mae": ("APL", {"alpha": 1.0, "beta": 1.0}),
    "nce+rce": ("APL", {"alpha": 1.0, "beta": 1.0, "A": LOG_1E4}),
    "nfl+mae": ("APL", {"alpha": 1.0, "beta": 1.0, "gamma": 0.5}),
    "nfl+rce": ("APL", {"alpha": 1.0, "beta": 1.0, "gamma": 0.5, "A": LOG_1E4}),
    "ngce+mae": ("APL", {"alpha": 1.0, "beta": 1.0, "q": 0.1}),
    "ngce+rce": ("APL", {"alpha": 1.0, "beta": 1.0, "q": 0.1, "A": LOG_1E4}),
}


def test_every_registered_loss_builds_as_before() -> None:
    from trustlab.registry import LOSSES

    assert LOSSES.names() == list(LOSS_NAMES) == list(_BEFORE)
    for card in LOSSES:
        cls, hparams = _BEFORE[card.name]
        loss = make_loss(card.name)
        assert type(loss).__name__ == cls and loss.name == card.name
        assert loss.hparams() == hparams and list(loss.hparams()) == list(hparams)
        assert list(loss_defaults(card.name)) == list(hparams)
        assert card.paper, card.name
        built = card.build()  # the card's own defaults: the class's (the paper's CIFAR-10)
        assert type(built) is type(loss) and built.hparams() == hparams
    assert make_loss("ngce+rce", dataset="cifar100").hparams() == {
        "alpha": 10.0,
        "beta": 0.1,
        "q": 0.7,
        "A": LOG_1E4,
    }


def test_unknown_loss_names_the_registered_ones() -> None:
    from trustlab.registry import LOSSES

    listing = ", ".join(LOSSES.names())
    for bad in ("nec", "cross-entropy", "nce+gce"):
        with pytest.raises(InputError, match="unknown loss") as err:
            make_loss(bad)
        assert listing in str(err.value)
    with pytest.raises(InputError, match="unknown loss 'nec'"):
        LOSSES.get("nec")


def test_apl_cards_route_term_hyperparameters() -> None:
    from trustlab.registry import LOSSES

    card = LOSSES.get("nfl+rce")
    assert card.defaults == {"active": "nfl", "passive": "rce"}
    assert card.meta["terms"] == ("nfl", "rce")
    assert card.build(gamma=2.0).hparams()["gamma"] == 2.0
    with pytest.raises(InputError, match="APL nfl\\+rce has no parameter 'q': q belongs to ngce"):
        card.build(q=0.3)
    with pytest.raises(InputError, match="ngce q must be a finite number"):
        APL("ngce", "mae", q=2.0)
