"""FDPDDL's two stages, written once for every backend.

Lyu, Li, Nandakumar, Yu, Ma, "How to democratise and protect AI: fair and differentially private
decentralised deep learning", IEEE TDSC 2020 (arXiv:2007.09370).

:func:`party_protocol` is one party's side of the protocol as a generator: it computes locally,
**yields** what it releases (a dict of tensors) and is **sent** back what every party released in
that phase (``{party: release}``). A backend only moves releases around: the in-process backend
advances every party's generator in lock step, a process backend sends the release to the others
over torch.distributed's store. The same code computes the same numbers in both, and a party never
hands anything but its release to a backend (never its data, never its model).

Phases (each party yields once per phase, an expelled party yields an empty release):

1. **benchmark 0**: pre-train the standalone model (DP-SGD), train a DPGAN on the shard (the
   discriminator is DP, the generator is post-processing), release ``m_i`` generated samples.
2. **labels 0**: label every party's samples with the standalone model and release the labels.
   Every party now holds the same ``(n, n, m)`` label tensor and computes the same credibility
   (:func:`~trustlab.collab.fdpddl.credibility`), expulsions and initial tokens.
3. **round r** (``r = 1..R``): train ``local_epochs`` of DP-SGD, release the top
   ``floor(|theta| s_i)`` coordinates of the update (indices and values) and ``m_i`` fresh DPGAN
   samples; download from each credible ``j`` the top ``d[i, j]`` of ``j``'s release, weighted by
   ``1 + c[i, j] / max_k c[i, k]``, add the sum to the parameters, pay the tokens.
4. **labels r**: label the fresh samples with the updated model; credibility is faded
   (``0.2 c_old + 0.8 c_new``) and renormalised; expel.
5. **report**: release the party's history (accuracies, epsilon, tokens), so every party ends
   with everyone's numbers.

A party whose release does not arrive (its process died; the process backends wait
``timeout`` seconds) is recorded as dropped with the phase, and the others continue without it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import torch

from trustlab.collab import fdpddl as fd
from trustlab.collab.parties import Party, flat_parameters
from trustlab.collab.settings import CollabSettings
from trustlab.utils.seed import derive_seed

Release = dict[str, torch.Tensor]
Inbox = dict[int, Release]


@dataclass
class Ledger:
    """What every party agrees on: the credible set, credibility, tokens, and who dropped.

    Args:
        n: number of parties.
        active: ``(n,)`` bool, parties still collaborating (not expelled, not dropped); default
            all.
        credibility: ``(n, n)`` float64; default zeros.
        tokens: ``(n,)`` int64; default None (before stage 1 ends).
        dropped / expelled: ``{party: phase}``; default empty.

    Example:
        >>> led = Ledger(3)
        >>> led.arrived({0: {}, 2: {}}, "round 1")
        >>> led.dropped, led.active.tolist()
        ({1: 'round 1'}, [True, False, True])
    """

    n: int
    active: torch.Tensor = None  # type: ignore[assignment]
    credibility: torch.Tensor = None  # type: ignore[assignment]
    tokens: torch.Tensor | None = None
    dropped: dict[int, str] = field(default_factory=dict)
    expelled: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.active is None:
            self.active = torch.ones(self.n, dtype=torch.bool)
        if self.credibility is None:
            self.credibility = torch.zeros(self.n, self.n, dtype=torch.float64)

    def arrived(self, inbox: Inbox, phase: str) -> None:
        """Parties missing from ``inbox`` dropped out during ``phase``."""
        missing = [j for j in range(self.n) if j not in inbox and j not in self.dropped]
        for j in missing:
            self.dropped[j] = phase
            self.active[j] = False
        if missing:  # the others' rows sum to 1 again, over the parties left
            self.credibility = fd.normalise_rows(self.credibility, self.active)

    def expel(self, phase: str, abstain: torch.Tensor | None = None) -> None:
        """Normalise, vote (``abstain``: rows that cast no vote), normalise again."""
        before = self.active.clone()
        self.credibility = fd.normalise_rows(self.credibility, self.active)
        self.active = fd.expel(self.credibility, self.active, abstain)
        for j in torch.nonzero(before & ~self.active).flatten().tolist():
            self.expelled[j] = phase
        self.credibility = fd.normalise_rows(self.credibility, self.active)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "active": self.active.tolist(),
            "credibility": self.credibility.tolist(),
            "tokens": None if self.tokens is None else self.tokens.tolist(),
            "dropped": {str(k): v for k, v in self.dropped.items()},
            "expelled": {str(k): v for k, v in self.expelled.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ledger:
        return cls(
            n=int(d["n"]),
            active=torch.tensor(d["active"], dtype=torch.bool),
            credibility=torch.tensor(d["credibility"], dtype=torch.float64),
            tokens=None if d["tokens"] is None else torch.tensor(d["tokens"], dtype=torch.int64),
            dropped={int(k): v for k, v in d["dropped"].items()},
            expelled={int(k): v for k, v in d["expelled"].items()},
        )


@dataclass
class PartyResult:
    """One party's account of the run (every party ends with everyone's reports).

    Attributes:
        index: the party.
        history: per round ``{"round", "accuracy", "epsilon", "tokens" (n,), "credibility"
            (this party's row), "active", "bytes_sent", "seconds"}`` (``seconds``: the round's
            wall-clock time at this party, waiting for the others included).
        standalone_pretrain_accuracy: accuracy of the stage-1 standalone model.
        final_accuracy: accuracy at the end.
        dpsgd_epsilon / dpgan_epsilon / epsilon: the privacy spent on the party's data by its
            DP-SGD, its DPGAN, and both (basic composition: the sum, at the sum of deltas).
        ledger: the agreed credibility, tokens, expulsions and drops at the end.
        reports: every party's final report as it arrived (``{party: {key: value}}``).
        parameters_sha256: a digest of the final parameters (the backends compare it).
        wire_bytes: bytes its process sent through the store (process backends; else None).

    Example::

        result = run_fdpddl(settings).parties[0]
        result.final_accuracy, result.epsilon, result.history[-1]["credibility"]
    """

    index: int
    history: list[dict[str, Any]]
    standalone_pretrain_accuracy: float
    final_accuracy: float
    dpsgd_epsilon: float
    dpgan_epsilon: float
    epsilon: float
    delta: float
    tokens_earned: int
    tokens_spent: int
    ledger: Ledger
    reports: dict[int, dict[str, Any]]
    parameters_sha256: str = ""  # digest of the final parameters (backends compare it)
    wire_bytes: int | None = None  # bytes this party's process sent (process backends)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "ledger"}
        out["ledger"] = self.ledger.to_dict()
        out["reports"] = {str(k): v for k, v in self.reports.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartyResult:
        d = dict(d)
        d["ledger"] = Ledger.from_dict(d["ledger"])
        d["reports"] = {int(k): v for k, v in d["reports"].items()}
        return cls(**d)


def release_bytes(release: Release) -> int:
    """Bytes of the tensors in a release (what a party must send; headers excluded)."""
    return sum(t.numel() * t.element_size() for t in release.values())


def _labels_tensor(inbox: Inbox, n: int, m: int) -> torch.Tensor:
    out = torch.full((n, n, m), -1, dtype=torch.long)
    for j, rel in inbox.items():
        if "labels" in rel:
            lab = rel["labels"]  # (n, m): j's labels of every party's samples, -1 padded
            out[:, j, : lab.shape[1]] = lab.long()
    return out


def _label_all(party: Party, inbox: Inbox, n: int, num_classes: int, round_: int) -> Release:
    """Label every party's published samples: ``(n, m_max)``, -1 where a party published none."""
    sizes = [inbox[j]["samples"].shape[0] if "samples" in inbox.get(j, {}) else 0 for j in range(n)]
    m = max(sizes) if sizes else 0
    # int16: the class labels and the -1 padding, in 2 bytes rather than int64's 8
    labels = torch.full((n, m), -1, dtype=torch.int16)
    for j in range(n):
        if sizes[j]:
            labels[j, : sizes[j]] = party.label(inbox[j]["samples"], num_classes, round_).short()
    return {"labels": labels}


def party_protocol(
    party: Party, settings: CollabSettings, num_classes: int, seed: int
) -> Generator[Release, Inbox, PartyResult]:
    """One party's side of FDPDDL (see the module docstring); drive it with a backend."""
    from trustlab.generative.dpgan import train_dpgan

    n, i = settings.parties, party.index
    sharing = torch.tensor(settings.sharing_levels(), dtype=torch.float64)
    num_params = party.num_params
    keep = int(fd.shared_size(num_params, sharing)[i])
    bench = settings.benchmark or max(1, math.floor(len(party.train) * float(sharing[i])))
    ledger = Ledger(n)
    history: list[dict[str, Any]] = []
    sent = 0

    # ---- stage 1: standalone model, DPGAN, mutual benchmark
    party.train_epochs(settings.pretrain_epochs)
    pretrain_acc = party.accuracy()
    gan = train_dpgan(
        party.train.x, settings.dpgan, seed=party.private_seed("dpgan"), device=party.device
    )
    dpgan_eps = float(gan.epsilon)
    release: Release = {"samples": gan.sample(bench, seed=derive_seed(seed, "bench", i, 0))}
    sent += release_bytes(release)
    inbox = yield release
    ledger.arrived(inbox, "benchmark 0")
    release = _label_all(party, inbox, n, num_classes, 0)
    sent += release_bytes(release)
    inbox = yield release
    ledger.arrived(inbox, "labels 0")
    m = max(r["labels"].shape[1] for r in inbox.values())
    agree, consensus = fd.agreement(
        _labels_tensor(inbox, n, m), num_classes, ledger.active, settings.ties
    )
    ledger.credibility = agree
    ledger.expel("labels 0", abstain=(consensus < 0).all(1))
    ledger.tokens = fd.initial_tokens(num_params, sharing)
    tokens0 = int(ledger.tokens[i])
    earned = spent = 0

    # ---- stage 2: rounds of release, download, tokens, re-benchmark
    for r in range(1, settings.rounds + 1):
        started = time.perf_counter()
        member = bool(ledger.active[i])
        round_sent = 0
        if member:
            update = party.local_update(settings.local_epochs, r, settings.update_clip)  # may crash
            index, value = fd.top_k(update, keep)
            release = {
                "index": index.to(torch.int32),
                "value": value.to(torch.float32),
                "samples": gan.sample(bench, seed=derive_seed(seed, "bench", i, r)),
            }
        else:  # expelled: trains alone, releases nothing
            party.train_epochs(settings.local_epochs)
            release = {}
        round_sent += release_bytes(release)
        inbox = yield release
        ledger.arrived(inbox, f"round {r}")
        d = fd.download_sizes(ledger.credibility, ledger.tokens, num_params, sharing, ledger.active)
        if member:
            w = fd.download_weights(ledger.credibility)
            delta = torch.zeros(num_params, dtype=torch.float32)
            for j in torch.nonzero(d[i] > 0).flatten().tolist():
                k = int(d[i, j])
                idx = inbox[j]["index"][:k].long()
                delta.index_add_(0, idx, inbox[j]["value"][:k] * float(w[i, j]))
            party.apply(delta)
        spent += int(d[i].sum())
        earned += int(d[:, i].sum())
        ledger.tokens = fd.transfer_tokens(ledger.tokens, d)
        # re-benchmark on fresh samples with the updated models
        release = _label_all(party, inbox, n, num_classes, r) if member else {}
        round_sent += release_bytes(release)
        inbox = yield release
        ledger.arrived(inbox, f"labels {r}")
        labelled = {j: rel for j, rel in inbox.items() if "labels" in rel}
        if labelled:
            m = max(rel["labels"].shape[1] for rel in labelled.values())
            labels = _labels_tensor(labelled, n, m)
            new, consensus = fd.agreement(labels, num_classes, ledger.active, settings.ties)
            old = fd.normalise_rows(ledger.credibility, ledger.active)
            silent = (consensus < 0).all(1)  # no sample of this row had a consensus: keep it
            faded = fd.fade(old, new, settings.fade)
            ledger.credibility = torch.where(silent[:, None], old, faded)
            abstain = silent
        else:
            abstain = None
        ledger.expel(f"labels {r}", abstain=abstain)
        sent += round_sent
        history.append(
            {
                "round": r,
                "accuracy": party.accuracy(),
                "epsilon": party.epsilon(),
                "tokens": ledger.tokens.tolist(),
                "credibility": ledger.credibility[i].tolist(),
                "active": ledger.active.tolist(),
                "bytes_sent": round_sent,
                "seconds": time.perf_counter() - started,
            }
        )

    # ---- report: everyone ends with everyone's numbers
    final_acc = history[-1]["accuracy"] if history else party.accuracy()  # evaluated once
    dpsgd_eps = party.epsilon()
    delta_total = settings.dp.delta + (settings.dpgan.delta if settings.dpgan.private else 0.0)
    mine = {
        "standalone_pretrain_accuracy": torch.tensor(pretrain_acc, dtype=torch.float64),
        "final_accuracy": torch.tensor(final_acc, dtype=torch.float64),
        "dpsgd_epsilon": torch.tensor(dpsgd_eps, dtype=torch.float64),
        "dpgan_epsilon": torch.tensor(dpgan_eps, dtype=torch.float64),
        "accuracy": torch.tensor([h["accuracy"] for h in history], dtype=torch.float64),
        "tokens_earned": torch.tensor(earned),
        "tokens_spent": torch.tensor(spent),
        "bytes_sent": torch.tensor(sent),
    }
    inbox = yield mine
    ledger.arrived(inbox, "report")
    reports = {
        j: {k: (v.tolist() if v.ndim else v.item()) for k, v in rel.items()}
        for j, rel in sorted(inbox.items())
    }
    if tokens0 - spent + earned != int(ledger.tokens[i]):
        raise RuntimeError(f"party {i}'s tokens do not add up: the ledgers diverged.")
    return PartyResult(
        index=i,
        history=history,
        standalone_pretrain_accuracy=pretrain_acc,
        final_accuracy=final_acc,
        dpsgd_epsilon=dpsgd_eps,
        dpgan_epsilon=dpgan_eps,
        epsilon=dpsgd_eps + dpgan_eps,
        delta=delta_total,
        tokens_earned=earned,
        tokens_spent=spent,
        ledger=ledger,
        reports=reports,
        parameters_sha256=hashlib.sha256(
            flat_parameters(party.model).numpy().tobytes()
        ).hexdigest(),
    )


__all__ = ["Inbox", "Ledger", "PartyResult", "Release", "party_protocol", "release_bytes"]
