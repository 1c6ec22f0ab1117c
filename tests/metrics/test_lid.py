"""The batched LID estimator: against a direct NumPy computation, on known subspaces, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustlab.errors import InputError
from trustlab.metrics.lid import knn_distances, lid, lid_in_batches, pairwise_distances


def _numpy_mle(queries: np.ndarray, ref: np.ndarray, k: int, skip_self: bool) -> np.ndarray:
    """Ma et al.'s mle_batch, written directly: sort the distances, drop self, use k."""
    d = np.sqrt(((queries[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    d = np.sort(d, axis=1)[:, 1 : k + 1] if skip_self else np.sort(d, axis=1)[:, :k]
    return -k / np.sum(np.log(d / d[:, -1:]), axis=1)


def test_mle_matches_numpy_to_1e5() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(100, 30))
    adv = ref + rng.normal(scale=0.3, size=ref.shape)
    t_ref = torch.tensor(ref, dtype=torch.float64)
    np.testing.assert_allclose(lid(t_ref, k=20).numpy(), _numpy_mle(ref, ref, 20, True), rtol=1e-5)
    got = lid(torch.tensor(adv, dtype=torch.float64), t_ref, k=20).numpy()
    np.testing.assert_allclose(got, _numpy_mle(adv, ref, 20, False), rtol=1e-5)
    got32 = lid(t_ref.float(), k=20).double().numpy()
    np.testing.assert_allclose(got32, _numpy_mle(ref, ref, 20, True), rtol=1e-4)


def test_mom_by_hand() -> None:
    q = torch.zeros(1, 1)
    ref = torch.tensor([[1.0], [2.0], [4.0]])
    # r = 1, 2, 4: m = mean(1, 2) = 1.5, estimate 1.5 / (4 - 1.5)
    assert float(lid(q, ref, k=3, estimator="mom")) == pytest.approx(1.5 / 2.5)
    r = knn_distances(q, ref, 3)
    assert r.tolist() == [[1.0, 2.0, 4.0]]
    assert float(lid(q, ref, k=3)) == pytest.approx(-1 / np.mean(np.log([0.25, 0.5, 1.0])))


@pytest.mark.parametrize("d", [2, 5])
def test_estimate_on_a_linear_subspace_is_near_its_dimension(d: int) -> None:
    g = torch.Generator().manual_seed(d)
    basis = torch.linalg.qr(torch.randn(64, d, generator=g, dtype=torch.float64))[0]  # (64, d)
    points = torch.rand(2000, d, generator=g, dtype=torch.float64) @ basis.T  # uniform on it
    est = lid_in_batches(points, points, batch_size=1000, k=20)
    assert abs(float(est.mean()) - d) <= 0.25 * d, float(est.mean())
    assert abs(float(lid(points, k=20, estimator="mom").mean()) - d) <= 0.5 * d


def test_gradients_flow_and_stay_finite() -> None:
    x = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    ref = torch.cat([x[:1].detach(), torch.randn(9, 4, dtype=torch.float64)])  # a duplicate
    out = lid(x, ref, k=5, exclude_self=False).sum() + lid(x, k=5).sum()
    out.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert float(pairwise_distances(x[:1], x[:1]).detach()) < 1e-5


def test_bad_input() -> None:
    x = torch.randn(5, 3)
    with pytest.raises(InputError, match="needs at least 6 reference points"):
        lid(x, k=5)
    with pytest.raises(InputError, match="cannot be compared"):
        lid(x, torch.randn(5, 4), k=2)
    with pytest.raises(InputError, match="unknown LID estimator"):
        lid(x, k=2, estimator="knn")
    with pytest.raises(InputError, match="aligned"):
        lid_in_batches(x, torch.randn(6, 3))


@pytest.mark.parametrize("n", [101, 102, 103, 250])
def test_batches_with_a_tiny_remainder_and_both_estimators(n: int) -> None:
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(n))
    for est in ("mle", "mom"):
        out = lid_in_batches(x, x, batch_size=100, k=20, estimator=est)
        assert out.shape == (n,) and torch.isfinite(out).all()


def test_an_aligned_copy_does_not_count_its_own_original() -> None:
    # adversarial copies at distance 1e-3 of their clean originals: without excluding the
    # original, r_1 would be tiny and the copies' LID would collapse
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(100, 50, generator=g, dtype=torch.float64)
    copies = clean + 1e-3 * torch.randn(100, 50, generator=g, dtype=torch.float64)
    own = lid_in_batches(clean, clean, 100, 20)
    adv = lid_in_batches(copies, clean, 100, 20)
    assert float((adv.mean() - own.mean()).abs()) < 0.05 * float(own.mean())


def test_the_authors_exclusion_drops_each_querys_nearest_reference() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(60, 5, generator=g, dtype=torch.float64)
    # an "adversarial" copy far from its own clean original: its nearest clean point is another
    adv = clean + 3.0 * torch.randn(60, 5, generator=g, dtype=torch.float64)
    got = lid_in_batches(adv, clean, batch_size=20, k=5, exclude="nearest")
    d = torch.cdist(adv.view(3, 20, 5), clean.view(3, 20, 5)).sort(-1).values[..., 1:6]
    want = (-1.0 / torch.log(d / d[..., -1:]).mean(-1)).flatten()
    assert torch.allclose(got, want)
    # for the clean points themselves both rules drop the point itself
    same_p = lid_in_batches(clean, clean, batch_size=20, k=5)
    same_n = lid_in_batches(clean, clean, batch_size=20, k=5, exclude="nearest")
    assert torch.allclose(same_p, same_n)
    # for the far copies the rules differ: position drops the own original, nearest another point
    assert not torch.allclose(lid_in_batches(adv, clean, 20, 5), got)
    # a short last batch follows the same rule
    tail = lid_in_batches(adv[:47], clean[:47], batch_size=20, k=5, exclude="nearest")
    assert tail.shape == (47,) and torch.allclose(tail[:40], got[:40])
    with pytest.raises(InputError, match="exclusion rule"):
        lid_in_batches(adv, clean, 20, 5, exclude="self")
