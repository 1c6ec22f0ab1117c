"""FDPDDL's reputation system as pure functions (trustlab.collab.fdpddl), the ledger's expulsion,
the settings' validation and the fairness correlation, on matrices whose expected numbers are
worked out by hand in the comments (never by calling the function under test)."""

from __future__ import annotations

import math

import pytest
import torch

from trustlab.collab import fdpddl as fd
from trustlab.collab.protocol import Ledger
from trustlab.collab.settings import CollabSettings
from trustlab.errors import InputError
from trustlab.metrics.fairness import collaborative_fairness, pearson

T, F_ = True, False


def t64(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(a: torch.Tensor, b: list) -> bool:
    return torch.allclose(a.to(torch.float64), t64(b), atol=1e-12)


# -- majority vote -------------------------------------------------------------------------------
def test_majority_vote_plain() -> None:
    labels = torch.tensor([[0, 1, 2, 3], [0, 2, 2, 1], [1, 2, 0, 3]])  # (voters, samples)
    # sample 0: 0,0,1 -> 0; sample 1: 1,2,2 -> 2; sample 2: 2,2,0 -> 2; sample 3: 3,1,3 -> 3
    assert fd.majority_vote(labels, 4, torch.ones(3, dtype=torch.bool)).tolist() == [0, 2, 2, 3]


def test_majority_vote_ties_go_to_the_highest_class() -> None:
    labels = torch.tensor([[0, 3], [1, 1], [2, 2]])
    # voters 0 and 1: sample 0: {0, 1} tie -> 1; sample 1: {3, 1} tie -> 3
    assert fd.majority_vote(labels, 4, torch.tensor([T, T, F_])).tolist() == [1, 3]
    # all three: sample 0: {0, 1, 2} three-way tie -> 2; sample 1: {3, 1, 2} -> 3
    assert fd.majority_vote(labels, 4, torch.ones(3, dtype=torch.bool)).tolist() == [2, 3]


def test_majority_vote_ignores_masked_voters() -> None:
    labels = torch.tensor([[0, 1, 2, 3], [0, 2, 2, 1], [1, 2, 0, 3]])
    # voters 0 and 2 only: s0 {0, 1} -> 1; s1 {1, 2} -> 2; s2 {2, 0} -> 2; s3 {3, 3} -> 3
    assert fd.majority_vote(labels, 4, torch.tensor([T, F_, T])).tolist() == [1, 2, 2, 3]


# -- agreement / credibility ---------------------------------------------------------------------
# labels[i, j] = party j's labels of the samples party i published; party 1 published 2 samples
# (its row is padded with -1), the others 3.
LABELS = torch.tensor(
    [
        [[0, 1, 2], [0, 1, 1], [2, 2, 2]],
        [[1, 0, -1], [1, 0, -1], [0, 0, -1]],
        [[1, 1, 0], [2, 1, 0], [2, 2, 0]],
    ]
)


def test_agreement_with_padding_by_hand() -> None:
    agree, consensus = fd.agreement(LABELS, 3)
    # row 0: votes s0 (0,0,2) -> 0, s1 (1,1,2) -> 1, s2 (2,1,2) -> 2
    #   party 1 agrees on s0, s1 (2/3); party 2 on s2 only (1/3)
    # row 1: two real samples: s0 (1,1,0) -> 1, s1 (0,0,0) -> 0; party 0: 2/2; party 2: s1 only
    #   (1/2). The -1 padding is neither a sample nor a hit (else party 0 would get 2/3).
    # row 2: s0 (1,2,2) -> 2, s1 (1,1,2) -> 1, s2 (0,0,0) -> 0; party 0: s1, s2 (2/3); party 1: 3/3
    assert close(agree, [[0, 2 / 3, 1 / 3], [1, 0, 1 / 2], [2 / 3, 1, 0]])
    assert consensus.tolist() == [[0, 1, 2], [1, 0, -1], [2, 1, 0]]


def test_credibility_rows_normalised_by_hand() -> None:
    c = fd.credibility(LABELS, 3)
    # rows of the agreement above divided by their sums 1, 3/2 and 5/3
    assert close(c, [[0, 2 / 3, 1 / 3], [2 / 3, 0, 1 / 3], [0.4, 0.6, 0]])
    assert close(c.sum(1), [1, 1, 1])


def test_credibility_with_an_inactive_party() -> None:
    active = torch.tensor([T, T, F_])
    agree, _ = fd.agreement(LABELS, 3, active)
    # party 2 neither votes nor is scored. Row 0: votes of 0 and 1: s0 (0,0) -> 0, s1 (1,1) -> 1,
    # s2 (2,1) tie -> 2; party 1 agrees on s0, s1: 2/3. Row 1: s0 (1,1) -> 1, s1 (0,0) -> 0:
    # party 0 agrees on both: 1. Row 2 (the inactive party's samples): all 0.
    assert close(agree, [[0, 2 / 3, 0], [1, 0, 0], [0, 0, 0]])
    assert close(fd.credibility(LABELS, 3, active), [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_credibility_docstring_example_by_hand() -> None:
    labels = torch.tensor(
        [
            [[0, 0], [0, 0], [0, 0], [1, 1]],
            [[1, 1], [0, 0], [1, 1], [0, 1]],
            [[2, 2], [2, 0], [0, 0], [0, 0]],
            [[3, 3], [3, 3], [3, 3], [0, 0]],
        ]
    )
    # row 1: s0 votes 1,0,1,0 -> tie {0,1} -> 1; s1 votes 1,0,1,1 -> 1. Party 0: 2/2, party 2:
    # 2/2, party 3: s1 only 1/2 -> normalised by 5/2: 0.4, 0.4, 0.2.
    # row 2: s0 votes 2,2,0,0 -> tie -> 2; s1 votes 2,0,0,0 -> 0. Party 0: s0 (1/2), party 1:
    # both (1), party 3: s1 (1/2) -> by 2: 0.25, 0.5, 0.25.
    c = fd.credibility(labels, 4)
    assert close(c[1], [0.4, 0, 0.4, 0.2])
    assert close(c[2], [0.25, 0.5, 0, 0.25])


def test_agreement_bad_input() -> None:
    with pytest.raises(InputError, match="n, n, m"):
        fd.agreement(torch.zeros(2, 3, 4, dtype=torch.long), 3)
    with pytest.raises(InputError, match="num_classes"):
        fd.agreement(torch.full((2, 2, 1), 5), 3)
    with pytest.raises(InputError, match="active has 2 entries for 3"):
        fd.agreement(LABELS, 3, torch.tensor([T, T]))


# -- normalise_rows, threshold, expel ------------------------------------------------------------
def test_normalise_rows_zero_rows_and_diagonal() -> None:
    c = t64([[5, 1, 3], [0, 0, 0], [2, 2, 7]])
    # diagonal dropped: row 0 (1, 3) / 4; row 1 stays 0; row 2 (2, 2) / 4
    assert close(fd.normalise_rows(c), [[0, 0.25, 0.75], [0, 0, 0], [0.5, 0.5, 0]])
    # party 2 inactive: its row and column are 0; row 0 keeps only column 1
    assert close(fd.normalise_rows(c, torch.tensor([T, T, F_])), [[0, 1, 0], [0, 0, 0], [0, 0, 0]])
    with pytest.raises(InputError, match="n x n"):
        fd.normalise_rows(torch.zeros(2, 3))


def test_threshold() -> None:
    assert fd.threshold(2) == pytest.approx(1 / 3)  # 1 / (3 * 1)
    assert fd.threshold(3) == pytest.approx(1 / 6)
    assert fd.threshold(4) == pytest.approx(1 / 9)  # the authors' log: 0.1111 for 4 parties
    assert fd.threshold(1) == math.inf and fd.threshold(0) == math.inf


def test_expel_needs_two_thirds_of_the_parties() -> None:
    # 4 parties: tau = 1/9 = 0.111, quorum ceil(8/3) = 3 (every other party)
    c = t64([[0, 0.5, 0.45, 0.05], [0.5, 0, 0.45, 0.05], [0.5, 0.45, 0, 0.05], [0.4, 0.3, 0.3, 0]])
    assert fd.expel(c).tolist() == [T, T, T, F_]  # 3 votes against party 3
    c2 = c.clone()
    c2[2] = t64([0.4, 0.4, 0, 0.2])  # party 2 now rates 3 above tau: 2 votes < 3
    assert fd.expel(c2).tolist() == [T, T, T, T]
    # 3 parties: tau = 1/6, quorum ceil(2) = 2 = both others
    c3 = t64([[0, 0.9, 0.1], [0.9, 0, 0.1], [0.5, 0.5, 0]])
    assert fd.expel(c3).tolist() == [T, T, F_]
    c3[1] = t64([0.8, 0, 0.2])  # 0.2 >= 1/6: one vote only
    assert fd.expel(c3).tolist() == [T, T, T]


def test_expel_never_below_three_parties() -> None:
    assert fd.expel(torch.zeros(2, 2)).tolist() == [T, T]  # everybody rated 0
    # 3 parties of which one is out: |C| = 2, nobody else goes
    c = t64([[0, 0, 1], [0, 0, 1], [0.5, 0.5, 0]])
    assert fd.expel(c, torch.tensor([T, T, F_])).tolist() == [T, T, F_]


def test_expel_an_expelled_partys_column_and_votes() -> None:
    # party 3 is already out: |C| = 3, tau = 1/6, quorum 2. Party 1 rates 0 below tau (1 vote);
    # party 3's 0 for party 0 does not count, so party 0 stays; party 3 stays out although its
    # column is all low.
    c = t64([[0, 0.5, 0.5, 0], [0.1, 0, 0.9, 0], [0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0]])
    assert fd.expel(c, torch.tensor([T, T, T, F_])).tolist() == [T, T, T, F_]
    # with party 3 still in (|C| = 4, tau = 1/9, quorum 3): 0 gets votes from 1 and 3 only -> stays;
    # 3 gets 3 votes (all 0) -> out
    assert fd.expel(c).tolist() == [T, T, T, F_]


def test_ledger_expel_zeroes_the_expelled_column_and_renormalises() -> None:
    ledger = Ledger(3)
    ledger.credibility = t64([[0, 0.9, 0.1], [0.9, 0, 0.1], [0.5, 0.5, 0]])
    ledger.expel("labels 0")
    assert ledger.expelled == {2: "labels 0"} and ledger.active.tolist() == [T, T, F_]
    # column 2 and row 2 dropped, rows 0 and 1 renormalised over the one other party left
    assert close(ledger.credibility, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    ledger.expel("labels 1")  # |C| = 2: nobody else, and nothing is recorded twice
    assert ledger.expelled == {2: "labels 0"}


# -- tokens -------------------------------------------------------------------------------------
def test_initial_tokens_and_shared_size() -> None:
    # floor(|theta| s_i (n - 1)), n = 3: 1000 * 0.1 * 2 = 200, 400, 1000
    assert fd.initial_tokens(1000, torch.tensor([0.1, 0.2, 0.5])).tolist() == [200, 400, 1000]
    # n = 2: floor(123.4) = 123, floor(370.2) = 370
    assert fd.initial_tokens(1234, torch.tensor([0.1, 0.3])).tolist() == [123, 370]
    # 100 * 0.29 is 28.999999999999996 in floating point; the exact value is 29
    s29 = torch.tensor([0.29, 0.29], dtype=torch.float64)
    assert fd.initial_tokens(100, s29).tolist() == [29, 29]
    assert fd.shared_size(100, torch.tensor([0.29], dtype=torch.float64)).tolist() == [29]
    assert fd.shared_size(1000, torch.tensor([0.1, 0.25, 1.0])).tolist() == [100, 250, 1000]
    for bad in ([0.0, 0.1], [0.1, 1.5]):
        with pytest.raises(InputError, match="sharing levels"):
            fd.initial_tokens(100, torch.tensor(bad))
    with pytest.raises(InputError, match="num_params"):
        fd.initial_tokens(0, torch.tensor([0.1, 0.1]))


C3 = t64([[0, 0.7, 0.3], [0.1, 0, 0.9], [0.5, 0.5, 0]])
SHARE3 = torch.tensor([0.1, 0.2, 0.5])  # caps floor(200 s_j) = 20, 40, 100


def test_download_sizes_tau_cut_and_cap() -> None:
    d = fd.download_sizes(C3, torch.tensor([100, 50, 0]), 200, SHARE3)
    # tau = 1/6. Row 0 (T = 100): j=1 min(70, 40) = 40; j=2 min(30, 100) = 30 (70 <= 100 spent)
    # row 1 (T = 50): c = 0.1 < tau -> 0; j=2 min(floor(45), 100) = 45
    # row 2 (T = 0): nothing
    assert d.tolist() == [[0, 40, 30], [0, 0, 45], [0, 0, 0]]
    assert d.dtype == torch.int64
    # party 2 inactive: tau = 1/3 over |C| = 2; row 0 keeps only j=1 (0.7 >= 1/3), row 1's 0.1
    # is cut, nobody downloads from or by party 2
    d2 = fd.download_sizes(C3, torch.tensor([100, 50, 0]), 200, SHARE3, torch.tensor([T, T, F_]))
    assert d2.tolist() == [[0, 40, 0], [0, 0, 0], [0, 0, 0]]
    # negative tokens buy nothing
    assert fd.download_sizes(C3, torch.tensor([-5, 0, 0]), 200, SHARE3).sum() == 0
    with pytest.raises(InputError, match="tokens has 2 entries"):
        fd.download_sizes(C3, torch.tensor([1, 1]), 200, SHARE3)


def test_download_sizes_at_exactly_tau_is_kept() -> None:
    tau = fd.threshold(4)  # 1/9
    c = torch.zeros(4, 4, dtype=torch.float64)
    c[0] = t64([0, tau, 1 - tau - 0.1, 0.1])  # 0.1 < 1/9 is cut, exactly 1/9 is kept
    d = fd.download_sizes(c, torch.tensor([900, 0, 0, 0]), 10_000, torch.full((4,), 0.5))
    # floor(900/9) = 100; floor(900 * (8/9 - 0.1)) = floor(710) = 710; caps 5000
    assert d[0].tolist() == [0, 100, 710, 0]


def test_download_sizes_never_spend_more_than_held() -> None:
    gen = torch.Generator().manual_seed(17)
    for _ in range(200):
        n = int(torch.randint(2, 7, (1,), generator=gen))
        c = fd.normalise_rows(torch.rand(n, n, generator=gen, dtype=torch.float64))
        tokens = torch.randint(0, 5000, (n,), generator=gen)
        sharing = torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.05
        active = torch.rand(n, generator=gen) > 0.2
        d = fd.download_sizes(c, tokens, 3000, sharing, active)
        assert (d >= 0).all() and (d.diagonal() == 0).all()
        assert (d.sum(1) <= tokens).all()
        assert (d <= fd.shared_size(3000, sharing)[None, :]).all()
        assert (d[c < fd.threshold(int(active.sum()))] == 0).all()
        assert (d[~active].sum() == 0) and (d[:, ~active].sum() == 0)


def test_download_weights() -> None:
    c = t64([[0, 0.6, 0.4], [0.5, 0, 0.5], [0, 0, 0]])
    # row 0: max 0.6 -> 1 + (0, 1, 2/3); row 1: max 0.5 -> 1 + (1, 0, 1); a zero row -> all 1
    assert close(fd.download_weights(c), [[1, 2, 5 / 3], [2, 1, 2], [1, 1, 1]])


def test_transfer_tokens_by_hand() -> None:
    d = torch.tensor([[0, 40, 30], [0, 0, 45], [0, 0, 0]])
    # spent (row sums) 70, 45, 0; earned (column sums) 0, 40, 75
    # 100 - 70 + 0 = 30; 50 - 45 + 40 = 45; 0 - 0 + 75 = 75; total 150 = 150
    assert fd.transfer_tokens(torch.tensor([100, 50, 0]), d).tolist() == [30, 45, 75]


def test_transfer_tokens_conserves_the_sum() -> None:
    gen = torch.Generator().manual_seed(5)
    for _ in range(300):
        n = int(torch.randint(2, 9, (1,), generator=gen))
        tokens = torch.randint(0, 10**6, (n,), generator=gen)
        c = fd.normalise_rows(torch.rand(n, n, generator=gen, dtype=torch.float64))
        sharing = torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.05
        d = fd.download_sizes(c, tokens, 10**5, sharing)
        for sizes in (d, torch.randint(0, 1000, (n, n), generator=gen)):  # any matrix at all
            after = fd.transfer_tokens(tokens, sizes)
            assert int(after.sum()) == int(tokens.sum())
        assert (fd.transfer_tokens(tokens, d) >= 0).all()  # the protocol's sizes never overdraw


def test_fade() -> None:
    old = t64([[0, 1], [1, 0]])
    new = t64([[0, 0.5], [0.25, 0]])
    # 0.2 * 1 + 0.8 * 0.5 = 0.6; 0.2 * 1 + 0.8 * 0.25 = 0.4
    assert close(fd.fade(old, new), [[0, 0.6], [0.4, 0]])
    assert close(fd.fade(old, new, keep=0.0), [[0, 0.5], [0.25, 0]])
    assert close(fd.fade(old, new, keep=1.0), [[0, 1], [1, 0]])
    with pytest.raises(InputError, match="keep"):
        fd.fade(old, new, keep=1.5)


# -- top_k ---------------------------------------------------------------------------------------
def test_top_k_order_and_ties_by_index() -> None:
    u = torch.tensor([0.1, -0.5, 0.3, 0.5, -0.1, 0.0])
    # magnitudes .1 .5 .3 .5 .1 0: .5 at 1 and 3 (index order), .3 at 2, .1 at 0 and 4
    idx, val = fd.top_k(u, 4)
    assert idx.tolist() == [1, 3, 2, 0]
    assert val.tolist() == pytest.approx([-0.5, 0.5, 0.3, 0.1])
    assert fd.top_k(u, 10)[0].tolist() == [1, 3, 2, 0, 4, 5]
    assert fd.top_k(u, 0)[0].numel() == 0 and fd.top_k(u, -3)[0].numel() == 0
    assert fd.top_k(torch.ones(2, 3), 2)[0].tolist() == [0, 1]  # flattened, ties by index


def test_top_k_prefix_property() -> None:
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        u = torch.randint(-4, 5, (60,), generator=gen).float() * 1e-3  # many ties (clipped updates)
        full_idx, full_val = fd.top_k(u, 40)
        for d in (0, 1, 7, 25, 40):
            idx, val = fd.top_k(u, d)
            assert torch.equal(idx, full_idx[:d]) and torch.equal(val, full_val[:d])
        mags = u.abs()[full_idx]
        assert (mags[:-1] >= mags[1:]).all()
        assert (u[full_idx] == full_val).all()


# -- fairness ------------------------------------------------------------------------------------
def test_pearson_by_hand() -> None:
    # x - mean = (-1, 0, 1); y - mean = (-1, 1, 0): sum xy = 1, sum x^2 = sum y^2 = 2 -> 1/2
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson(torch.tensor([0.0, 2.0]), [5.0, 9.0]) == pytest.approx(1.0)
    assert collaborative_fairness([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # constant: undefined
    assert math.isnan(pearson([1, 2, 3], [4, 4, 4]))
    with pytest.raises(InputError, match="one length"):
        pearson([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="at least two"):
        pearson([1], [2])


# -- settings ------------------------------------------------------------------------------------
def test_settings_errors_name_the_key() -> None:
    with pytest.raises(InputError, match="'bogus'"):
        CollabSettings.parse({"bogus": 1})
    with pytest.raises(InputError, match="sharing"):
        CollabSettings.parse(sharing=0)
    with pytest.raises(InputError, match="sharing has 2 levels for 3 parties"):
        CollabSettings.parse(parties=3, sharing=[0.1, 0.2])
    with pytest.raises(InputError, match="party 9"):
        CollabSettings.parse(parties=3, behaviours={9: "zero"})
    with pytest.raises(InputError, match="unknown behaviour"):
        CollabSettings.parse(behaviours={1: "lazy"})
    with pytest.raises(InputError, match="parties"):
        CollabSettings.parse(parties=1)
    s = CollabSettings.parse({"parties": 3}, sharing=[0.1, 0.2, 0.3])
    assert s.sharing_levels() == [0.1, 0.2, 0.3]
    assert s.total_epochs == 10 + 100 * 5


def test_agreement_skipping_tied_samples_by_hand() -> None:
    # 3 parties, 2 samples each; labels[i, j] = party j's labels of party i's samples
    labels = torch.tensor(
        [
            [[0, 0], [0, 1], [9, 2]],  # row 0: s0 votes (0,0,9) -> 0; s1 (0,1,2) a 3-way tie
            [[1, 1], [1, 1], [1, 1]],  # row 1: both samples unanimous 1
            [[3, 4], [4, 4], [3, 5]],  # row 2: s0 (3,4,3) -> 3; s1 (4,4,5) -> 4
        ]
    )
    # "highest": row 0's tie goes to class 2: party 1 hits s0 only (1/2), party 2 hits s1 (1/2)
    high, _ = fd.agreement(labels, 10, ties="highest")
    assert close(high[0], [0, 1 / 2, 1 / 2])
    # "skip": row 0 keeps s0 only: party 1 agrees (1/1), party 2 does not (0/1)
    skip, consensus = fd.agreement(labels, 10, ties="skip")
    assert close(skip[0], [0, 1, 0])
    assert consensus[0].tolist() == [0, -1]
    # rows without ties are the same either way. Row 2: consensus (3, 4); party 0 gave (3, 4):
    # hits both (2/2); party 1 gave (4, 4): hits s1 only (1/2)
    assert close(skip[1:], high[1:].tolist())
    assert close(skip[2], [1, 1 / 2, 0])
    with pytest.raises(InputError, match="ties"):
        fd.agreement(labels, 10, ties="random")


def test_expel_abstaining_rows_cast_no_vote() -> None:
    # 4 parties, tau = 1/9. Party 3's row is silent (no sample had a consensus): all zeros.
    # Parties 0 and 1 rate party 2 below tau (0.05); with party 3's zeros that would be 3
    # votes >= ceil(8/3) = 3 and party 2 would go. Abstaining, party 3 leaves it at 2 votes.
    c = t64([[0, 0.5, 0.05, 0.45], [0.5, 0, 0.05, 0.45], [0.4, 0.3, 0, 0.3], [0, 0, 0, 0]])
    assert fd.expel(c).tolist() == [T, T, F_, T]
    assert fd.expel(c, abstain=torch.tensor([F_, F_, F_, T])).tolist() == [T, T, T, T]


def test_store_exchange_one_verdict_per_arrival() -> None:
    """A late party is dropped by whoever times out first, every party reads that one verdict,
    and the late party itself stops when it finally posts."""
    import datetime

    import torch.distributed as dist

    from trustlab.collab.backends import PartyDropped, StoreExchange, encode

    store = dist.TCPStore(
        "127.0.0.1", 0, 1, True, timeout=datetime.timedelta(seconds=10), wait_for_workers=False
    )
    a = StoreExchange(store, 0, 3, timeout=0.2, prefix="t")
    b = StoreExchange(store, 1, 3, timeout=0.2, prefix="t")
    late = StoreExchange(store, 2, 3, timeout=0.2, prefix="t")
    store.set(b.key(0, 1), encode({"x": torch.ones(1)}))  # party 1 posted in time
    assert b.decide(0, 1, "posted") == "posted"
    inbox = a.exchange(0, {"x": torch.zeros(1)})  # party 2 never posts: dropped after 0.2 s
    assert sorted(inbox) == [0, 1] and a.gone == {2}
    assert b.decide(0, 2, "posted") == "dropped"  # the verdict is final for everyone
    with pytest.raises(PartyDropped, match="party 2 was dropped in phase 0"):
        late.exchange(0, {"x": torch.zeros(1)})
