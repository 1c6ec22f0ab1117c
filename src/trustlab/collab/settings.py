"""What an FDPDDL run is: its settings, and how the data is split among the parties.

:class:`CollabSettings` is validated (unknown keys are errors) and JSON-serialisable, so the
same settings reach every party process, whether the parties run in one process or one process
per party under ``torchrun``. :func:`party_shards` turns the settings' ``setting`` into disjoint
shards with :mod:`trustlab.data.partition`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trustlab.collab.parties import Party
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.generative.dpgan import DPGANSettings
from trustlab.train.dp import DPSettings
from trustlab.utils.validate import parse_config

SETTINGS = ("balanced", "imbalanced-size", "imbalanced-class")
#: the fewest training samples a run deals out per party on average
MIN_PER_PARTY = 10


class CollabSettings(BaseModel):
    """Settings of one FDPDDL run (Lyu et al., IEEE TDSC 2020, arXiv:2007.09370).

    Defaults follow the authors' public code (``lingjuanlv/FPPDL``: 4 parties, sharing level
    0.1, 10 epochs of pre-training, 100 rounds of 5 local epochs, batch 10, learning rate 0.15,
    fading 0.2, DPGAN at epsilon 4) where the paper's text does not fix them; the local updates
    are DP-SGD as the paper describes (the code only clips each coordinate of the update).

    Args:
        parties: number of parties ``n``; default 4.
        setting: ``"balanced"`` (equal random shards), ``"imbalanced-size"`` (shard sizes grow
            linearly, party ``i`` holding a share proportional to ``i + 1``) or
            ``"imbalanced-class"`` (party ``i`` holds from 1 class up to all classes, linearly);
            default ``"balanced"``.
        dataset: training/test data; default ``"digits"``.
        data_root: folder of file datasets; default None (the dataset's default place).
        model: classifier every party trains; default ``"mlp"``.
        samples: training samples dealt out in all (the authors use 600 per party); default None
            (the whole training split).
        sharing: sharing level ``s_i``, one value for all or one per party; default 0.1.
        pretrain_epochs: local epochs before collaborating (stage 1's standalone model);
            default 10.
        rounds: rounds of stage 2; default 100.
        local_epochs: local epochs per round; default 5.
        batch_size: expected DP-SGD (Poisson) batch size; default 10.
        lr: SGD learning rate; default 0.15.
        dp: DP-SGD of the local training (:class:`~trustlab.train.dp.DPSettings`); default
            ``noise_multiplier=1.0``, ``max_grad_norm=1.0``.
        dpgan: each party's DPGAN (:class:`~trustlab.generative.dpgan.DPGANSettings`); default
            epsilon 4 (the authors' code), 60 epochs of batch 32 (on a 360-image digits shard,
            20 epochs of batch 64 gave noise that trained models label arbitrarily; 60 of 32
            gave samples a classifier spreads over 8 classes).
        benchmark: samples each party publishes per benchmark; default None: ``max(1,
            floor(N_i s_i))`` (the authors' code).
        fade: share of the old credibility kept each round; default 0.2.
        update_clip: every coordinate of a round's update is bounded to ``[-update_clip,
            update_clip]`` before it is released and kept (the authors' code, range 0.001);
            None releases the whole DP-SGD update.
        ties: a benchmark sample whose majority vote is tied: ``"skip"`` (default) counts it
            for nobody; ``"highest"`` takes the highest tied class, as the authors' code does,
            which credits a party that gives every sample one high class (on digits, a
            never-trained free-rider kept credibility 0.18-0.28 with ``"highest"`` and was
            expelled with ``"skip"``).
        behaviours: ``{party: behaviour}`` for free-riders and faulty parties (see
            :data:`trustlab.collab.parties.BEHAVIOURS`); default none (all honest).
        crash_round: the round a ``"crash"`` party stops at; default 1.
        timeout: seconds a party waits for another's release before counting it as dropped (the
            process backends); default 300.
        exchange: how the process backends move releases: ``"store"`` (default; the job's
            key-value store, which survives a party that dies) or ``"collective"``
            (``all_gather`` over gloo on CPU or nccl on CUDA; a dead party stops everyone).

    Example:
        >>> s = CollabSettings(parties=3, rounds=2, setting="imbalanced-size")
        >>> s.sharing_levels()
        [0.1, 0.1, 0.1]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    parties: int = Field(4, ge=2)
    setting: Literal["balanced", "imbalanced-size", "imbalanced-class"] = "balanced"
    dataset: str = "digits"
    data_root: str | None = None
    model: str = "mlp"
    samples: int | None = Field(None, ge=2)
    sharing: float | list[float] = 0.1
    pretrain_epochs: int = Field(10, ge=0)
    rounds: int = Field(100, ge=0)
    local_epochs: int = Field(5, ge=1)
    batch_size: int = Field(10, ge=1)
    lr: float = Field(0.15, gt=0)
    dp: DPSettings = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
    dpgan: DPGANSettings = DPGANSettings(epochs=60, batch_size=32, epsilon=4.0)
    benchmark: int | None = Field(None, ge=1)
    fade: float = Field(0.2, ge=0, le=1)
    update_clip: float | None = Field(0.001, gt=0)
    ties: Literal["highest", "skip"] = "skip"
    behaviours: dict[int, str] = Field(default_factory=dict)
    crash_round: int = Field(1, ge=1)
    timeout: float = Field(300.0, gt=0)
    exchange: Literal["store", "collective"] = "store"

    @field_validator("sharing")
    @classmethod
    def _sharing(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if any(not 0 < x <= 1 for x in values):
            raise ValueError("sharing levels must be in (0, 1] (e.g. 0.1)")
        return v

    @model_validator(mode="after")
    def _check(self) -> CollabSettings:
        from trustlab.collab.parties import BEHAVIOURS

        if isinstance(self.sharing, list) and len(self.sharing) != self.parties:
            raise ValueError(
                f"sharing has {len(self.sharing)} levels for {self.parties} parties; give one "
                "value or one per party"
            )
        for party, behaviour in self.behaviours.items():
            if not 0 <= party < self.parties:
                raise ValueError(
                    f"behaviours names party {party}; parties are 0..{self.parties - 1}"
                )
            if behaviour not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {behaviour!r}; use one of {list(BEHAVIOURS)}")
        return self

    @classmethod
    def parse(cls, config: dict | None = None, **overrides: object) -> CollabSettings:
        """Validated settings from a dict and keyword overrides (an :class:`InputError` names a
        bad key)."""
        return parse_config(cls, {**(config or {}), **overrides})

    def sharing_levels(self) -> list[float]:
        if isinstance(self.sharing, list):
            return [float(x) for x in self.sharing]
        return [float(self.sharing)] * self.parties

    @property
    def total_epochs(self) -> int:
        """Every local epoch a party runs: pre-training plus all rounds."""
        return self.pretrain_epochs + self.rounds * self.local_epochs


def party_shards(settings: CollabSettings, train: ArrayDataset, seed: int) -> list[torch.Tensor]:
    """Disjoint index shards, one per party, for the settings' ``setting`` (seeded)."""
    from trustlab.data import partition as P

    n, total = settings.parties, settings.samples
    if total is not None and total > len(train):
        raise InputError(
            f"samples={total} is more than the {len(train)} training samples of "
            f"{settings.dataset!r}; use samples <= {len(train)}."
        )
    if settings.setting == "balanced":
        size = None if total is None else total // n
        return P.iid(train.y, n, seed, size=size)
    if settings.setting == "imbalanced-size":
        return P.size_imbalanced(train.y, n, seed, total=total)
    shards = P.class_imbalanced(train.y, n, seed)
    if total is not None:  # the same share of every shard, so the class mix is kept
        keep = total / len(train)
        gen = torch.Generator().manual_seed(seed)
        shards = [
            s[torch.randperm(len(s), generator=gen)[: max(1, round(len(s) * keep))]].sort().values
            for s in shards
        ]
    return shards


def check_run(
    settings: CollabSettings,
    seed: int,
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
) -> list[int]:
    """Everything a run needs, checked before any work: the data loads, its images suit the
    DPGAN, the split gives every party samples. Returns the shard sizes. With two parties the
    reputation system cannot judge anyone (a row over one other party is always 1): a warning
    says so."""
    import warnings

    from trustlab.generative.dpgan import check_images
    from trustlab.models.spec import ModelSpec

    train, _ = data if data is not None else load_data(settings)
    if train.x.dim() != 4:
        raise InputError(
            f"dataset {settings.dataset!r} holds {tuple(train.x.shape[1:])} inputs; FDPDDL's "
            "DPGAN benchmark takes images (C, H, W). Pick an image dataset (`trustlab datasets`)."
        )
    check_images(train.x[:2])
    ModelSpec.for_data(settings.model, train).build()  # an unknown or unfit model, up front
    total = len(train) if settings.samples is None else settings.samples
    if total < MIN_PER_PARTY * settings.parties:
        raise InputError(
            f"{total} training samples for {settings.parties} parties leave some party fewer "
            f"than {MIN_PER_PARTY}; use samples >= {MIN_PER_PARTY * settings.parties} (or fewer "
            "parties)."
        )
    if settings.parties == 2:
        warnings.warn(
            "FDPDDL with 2 parties: each party's credibility row has one entry, which is 1 "
            "whenever the other agrees at all, and nobody can be expelled (it takes 3); use "
            "3 or more parties to see the reputation system at work.",
            UserWarning,
            stacklevel=3,
        )
    return [len(s) for s in party_shards(settings, train, seed)]


def load_data(settings: CollabSettings) -> tuple[ArrayDataset, ArrayDataset]:
    """The settings' training and test splits."""
    from trustlab.data import load_dataset

    train = load_dataset(settings.dataset, "train", root=settings.data_root)
    test = load_dataset(settings.dataset, "test", root=settings.data_root)
    return train, test


def make_party(
    settings: CollabSettings,
    index: int,
    seed: int,
    device: torch.device | str = "cpu",
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
    *,
    indices: torch.Tensor | None = None,
    role: str = "collab",
) -> Party:
    """Party ``index`` of the run: its shard (the same split in every process for the seed),
    its model (the run's one public initialisation, from the seed) and its DP-SGD state.

    ``indices`` and ``role`` build the centralised baseline's single learner instead: those
    training samples, an honest behaviour, and its own initialisation and seeds (``role``
    ``"centralised"``)."""
    from trustlab.models.spec import ModelSpec
    from trustlab.utils.seed import derive_seed, seed_torch_rng

    train, test = data if data is not None else load_data(settings)
    if indices is None:
        indices = party_shards(settings, train, seed)[index]
    collab = role == "collab"
    # one public initialisation for all the parties (the centralised learner has its own)
    seed_torch_rng(derive_seed(seed, "collab-init" if collab else f"collab-{role}"))
    spec = ModelSpec.for_data(settings.model, train)
    model = ModelSpec(**{**spec.to_dict(), "group_norm": True}).build()
    return Party(
        index,
        train.subset(indices),
        test,
        model,
        settings.dp,
        total_epochs=settings.total_epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=seed if collab else derive_seed(seed, role),
        behaviour=settings.behaviours.get(index, "honest") if collab else "honest",
        crash_round=settings.crash_round,
        device=device,
    )


__all__ = ["SETTINGS", "CollabSettings", "check_run", "load_data", "make_party", "party_shards"]
