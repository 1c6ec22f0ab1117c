"""Membership-inference attacks: threshold attacks and Shokri et al.'s shadow-model attack.

Every attack returns one score per example, **higher = more likely a member** of the target's
training set; :func:`trustlab.metrics.privacy.membership_metrics` turns scores and the true
membership into AUC, TPR at 1% / 0.1% FPR and the membership advantage. LiRA lives in
:mod:`trustlab.attacks.privacy.lira`.

**Threshold attacks** (one forward pass, no shadow models):

- :func:`loss_scores`: the negative cross-entropy loss ``-CE(f(x), y) = log p_y`` (Yeom et al.,
  "Privacy Risk in Machine Learning", CSF 2018: members have lower loss). Its ranking equals the
  ranking by the true-class confidence ``p_y`` and by LiRA's ``phi`` (all three are monotone in
  each other), so the "confidence ``p_y``" attack is this one. It is computed as
  ``-softplus(-phi)`` in float64 from the logits, which keeps distinct scores for confident
  examples where ``p_y`` itself rounds to 1 (ties there would blur TPR at low FPR).
- :func:`confidence_scores`: the label-free maximum softmax probability, ``log max_j p_j``
  (Salem et al., "ML-Leaks", NDSS 2019, the adversary that needs no shadow model), computed the
  same stable way.

Both are threshold-free here: the metrics sweep every threshold. (Yeom's attack fixes the
threshold at the average training loss; the ROC contains that operating point.)

**Shokri et al.**, "Membership Inference Attacks Against Machine Learning Models" (S&P 2017):
:class:`ShokriAttack` trains ``shadows`` shadow models with the target's recipe on the attacker's
data (disjoint from the target's training set), each on a random half of it (its "in" set; the
other half is its "out" set); the shadows' softmax vectors on their in/out examples, labelled
in = 1 / out = 0, train one attack model per class (the class is the example's true label).
The target's softmax vector of an example goes to the attack model of its label; the score is
that model's logit. Defaults and choices:

- features: the full, unsorted softmax vector, as in the paper (``features="sorted"`` sorts it in
  decreasing order, which makes the per-class models label-agnostic in the input).
- attack model: an MLP with one hidden layer of 64 ReLU units (the paper's attack models are
  neural networks and it fixes no one architecture; this size is trustlab's choice), trained
  full-batch with Adam (lr 1e-2, 300 steps, binary cross-entropy), seeded, in torch; all classes'
  models train together in one batched pass (:class:`ClassAttackModels`).
- a class with no shadow examples, or with only one membership label among them, scores 0 (the
  attack model's "don't know", probability 1/2); :attr:`ShokriAttack.untrained_classes` lists
  them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trustlab.attacks.privacy.audit import (
    SHADOW_FIXED,
    MembershipAudit,
    shadow_summary,
)
from trustlab.attacks.privacy.shadows import ShadowModels, ShadowRecipe, train_shadows
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.errors import InputError
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.train.evaluate import predict_logits
from trustlab.utils.device import resolve_device
from trustlab.utils.executor import Executor
from trustlab.utils.seed import derive_seed
from trustlab.utils.validate import check_float, check_int

__all__ = [
    "ClassAttackModels",
    "ShokriAttack",
    "confidence_scores",
    "entropy_scores",
    "logit_confidence",
    "loss_scores",
]


def logit_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j`` in float64 (LiRA's
    logit-scaled confidence), computed from the logits without forming ``p_y``.

    ``logits``: ``(..., K)`` with ``K >= 2``; ``y``: integer labels of shape ``(...)``.
    """
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise InputError(f"phi needs logits (..., K) with K >= 2, got {tuple(logits.shape)}.")
    if y.shape != logits.shape[:-1]:
        raise InputError(f"labels {tuple(y.shape)} do not match logits {tuple(logits.shape)}.")
    z = logits.double()
    idx = y.long().unsqueeze(-1)
    z_y = z.gather(-1, idx).squeeze(-1)
    rest = z.scatter(-1, idx, float("-inf")).logsumexp(-1)
    return z_y - rest


def _logits(model: nn.Module, data: ArrayDataset, batch_size: int, device) -> torch.Tensor:
    return predict_logits(model, data, batch_size, device)


def _audit_loss(a: MembershipAudit) -> torch.Tensor:
    return loss_scores(a.model, a.data, device=a.device)


def _audit_confidence(a: MembershipAudit) -> torch.Tensor:
    return confidence_scores(a.model, a.data, device=a.device)


def _audit_entropy(a: MembershipAudit) -> torch.Tensor:
    return entropy_scores(a.model, a.data, device=a.device)


@PRIVACY_ATTACKS.register(
    "loss",
    "loss threshold: -CE(f(x), y), members have lower loss",
    paper="Yeom, Giacomelli, Fredrikson, Jha. Privacy Risk in Machine Learning: Analyzing the "
    "Connection to Overfitting. CSF 2018.",
    threat="black-box: the target's outputs (logits) on labelled examples; no shadow models",
    inputs=("model", "data"),
    shadows=False,
    audit=_audit_loss,
)
def loss_scores(
    model: nn.Module,
    data: ArrayDataset | Dataset,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``-CE(f(x), y)`` per example (float64, higher = member); Yeom et al.'s loss attack."""
    ds = as_array_dataset(data)
    phi = logit_confidence(_logits(model, ds, batch_size, device), ds.y)
    return -F.softplus(-phi)


@PRIVACY_ATTACKS.register(
    "confidence",
    "confidence threshold: the maximum softmax probability, label-free",
    paper="Salem, Zhang, Humbert, Berrang, Fritz, Backes. ML-Leaks: Model and Data Independent "
    "Membership Inference Attacks and Defenses on Machine Learning Models. NDSS 2019 (the "
    "adversary that needs no shadow model).",
    threat="black-box: the target's outputs; needs no labels and no shadow models",
    inputs=("model", "data"),
    shadows=False,
    audit=_audit_confidence,
)
def confidence_scores(
    model: nn.Module,
    data: ArrayDataset | Dataset,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``log max_j p_j(x)`` per example (float64, higher = member); needs no labels."""
    ds = as_array_dataset(data)
    logits = _logits(model, ds, batch_size, device)
    phi = logit_confidence(logits, logits.argmax(-1))
    return -F.softplus(-phi)


@PRIVACY_ATTACKS.register(
    "entropy",
    "entropy threshold: minus the entropy of the softmax, label-free",
    paper="Salem, Zhang, Humbert, Berrang, Fritz, Backes. ML-Leaks: Model and Data Independent "
    "Membership Inference Attacks and Defenses on Machine Learning Models. NDSS 2019 (the "
    "adversary that needs no shadow model, with the entropy of the posterior as its statistic).",
    threat="black-box: the target's outputs; needs no labels and no shadow models",
    inputs=("model", "data"),
    shadows=False,
    audit=_audit_entropy,
)
def entropy_scores(
    model: nn.Module,
    data: ArrayDataset | Dataset,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``sum_j p_j log p_j`` per example (minus the softmax's entropy; float64, higher = more
    confident = member); needs no labels."""
    ds = as_array_dataset(data)
    logp = torch.log_softmax(_logits(model, ds, batch_size, device).double(), -1)
    return (logp.exp() * logp).sum(-1)


class ClassAttackModels(nn.Module):
    """One MLP per class (``Linear(K, hidden) -> ReLU -> Linear(hidden, 1)``), held as stacked
    weights so that all of them train in one batched pass: the loss is the sum of the per-class
    mean losses, so each model gets the gradients (and, with Adam's element-wise updates, the
    steps) it would get trained alone, up to floating-point rounding. Model ``c`` starts from
    ``nn.Linear``'s default initialisation under ``seeds[c]``. The attack models of Shokri et
    al. (S&P 2017); the paper fixes no architecture, the size is trustlab's.

    Args:
        num_features: ``K``, the length of a softmax vector.
        hidden: hidden ReLU units per model (:class:`ShokriAttack`: 64).
        seeds: one seed per model; ``C = len(seeds)`` models.

    Shapes: ``forward`` ``(C, M, K) -> (C, M)`` logits; ``one(c, x)`` ``(M, K) -> (M,)``.

    Example::

        net = ClassAttackModels(10, 64, seeds=[1, 2, 3])
        logits = net(torch.rand(3, 5, 10))  # (3, 5)
    """

    def __init__(self, num_features: int, hidden: int, seeds: list[int]) -> None:
        super().__init__()
        w1, b1, w2, b2 = [], [], [], []
        for s in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                first, last = nn.Linear(num_features, hidden), nn.Linear(hidden, 1)
            w1.append(first.weight.detach().T)
            b1.append(first.bias.detach())
            w2.append(last.weight.detach()[0])
            b2.append(last.bias.detach()[0])
        self.w1 = nn.Parameter(torch.stack(w1))  # (C, K, H)
        self.b1 = nn.Parameter(torch.stack(b1))  # (C, H)
        self.w2 = nn.Parameter(torch.stack(w2))  # (C, H)
        self.b2 = nn.Parameter(torch.stack(b2))  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(C, M, K)``: model ``c`` on ``x[c]``; logits ``(C, M)``."""
        h = torch.relu(torch.baddbmm(self.b1.unsqueeze(1), x, self.w1))
        return (h * self.w2.unsqueeze(1)).sum(-1) + self.b2.unsqueeze(1)

    def one(self, c: int, x: torch.Tensor) -> torch.Tensor:
        """Model ``c`` on ``x`` ``(M, K)``; logits ``(M,)``."""
        return torch.relu(x @ self.w1[c] + self.b1[c]) @ self.w2[c] + self.b2[c]


def _fit_class_models(
    groups: list[tuple[torch.Tensor, torch.Tensor]],
    seeds: list[int],
    hidden: int,
    steps: int,
    lr: float,
    device: torch.device | str = "cpu",
) -> ClassAttackModels:
    """Train one attack model per ``(features, labels)`` group, full-batch Adam, in one pass."""
    size = max(len(f) for f, _ in groups)
    k = groups[0][0].shape[1]
    x = torch.zeros(len(groups), size, k)
    target = torch.zeros(len(groups), size)
    weight = torch.zeros(len(groups), size)
    for i, (f, lab) in enumerate(groups):  # a loop over classes: pad each to the largest
        x[i, : len(f)], target[i, : len(f)], weight[i, : len(f)] = f, lab.float(), 1.0 / len(f)
    x, target, weight = x.to(device), target.to(device), weight.to(device)
    net = ClassAttackModels(k, hidden, seeds).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(net(x), target, reduction="none")
        loss = (loss * weight).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def _audit_shokri(a: MembershipAudit) -> torch.Tensor:
    """Shadows on the test split (the attacker's data, disjoint from the target's training
    set); the audited examples scored by the attack models."""
    shokri = ShokriAttack(
        a.shadow_recipe(), a.test, a.shadows, seed=a.seed, cache=a.cache, device=a.device,
        progress=a.progress, executor=a.executor, **a.options,
    ).fit()  # fmt: skip
    sm = shokri.shadow_models
    scores = shokri.score(a.model, a.data)
    a.extra["untrained_classes"] = shokri.untrained_classes
    assert sm is not None
    a.extra.update(shadow_summary(sm))
    return scores


@PRIVACY_ATTACKS.register(
    "shokri",
    "shadow models and one attack model per class on the softmax vector",
    paper="Shokri, Stronati, Song, Shmatikov. Membership Inference Attacks Against Machine "
    "Learning Models. IEEE S&P 2017.",
    threat="black-box: the target's softmax outputs; the attacker knows the training recipe "
    "and holds labelled data disjoint from the training set",
    inputs=("recipe", "shadow_data"),
    shadows=True,
    min_shadows=1,
    audit=_audit_shokri,
    options=True,
    options_fixed=SHADOW_FIXED,
)
class ShokriAttack:
    """Shokri et al.'s shadow-model attack; see the module for the method.

    Shokri, Stronati, Song, Shmatikov, "Membership Inference Attacks Against Machine Learning
    Models", IEEE S&P 2017.

    Args:
        recipe: the target's training recipe (the attacker knows it).
        shadow_data: the attacker's labelled data, disjoint from the target's training set.
        shadows: number of shadow models (default 16; the paper uses up to 100).
        features: ``"probs"`` (default, the paper's full softmax vector) or ``"sorted"``.
        hidden, steps, lr: the attack MLP (default 64 hidden units, 300 Adam steps, lr 1e-2).
        seed: seeds the in/out splits, every shadow and the attack models.
        cache: the shadow-model cache (see :func:`~trustlab.attacks.privacy.train_shadows`).
        device: where shadows and attack models train and predict.
        batch_size: inference batch size.
        progress: a progress bar over the shadows (only on a terminal).
        executor: where the shadows train (default None: in this process; ``"local"``,
            ``"ray"``: :func:`~trustlab.attacks.privacy.train_shadows`).

    Shapes: ``score`` returns ``(len(data),)`` float64, higher = member; a class without
    a trained attack model scores 0.

    Example::

        attack = ShokriAttack(recipe, attacker_data, shadows=16).fit()
        scores = attack.score(target_model, data)
    """

    def __init__(
        self,
        recipe: ShadowRecipe,
        shadow_data: ArrayDataset,
        shadows: int = 16,
        *,
        features: Literal["probs", "sorted"] = "probs",
        hidden: int = 64,
        steps: int = 300,
        lr: float = 1e-2,
        seed: int = 0,
        cache: bool | str | Path = True,
        device: str | torch.device = "auto",
        batch_size: int = 512,
        progress: bool = True,
        executor: str | Executor | None = None,
    ) -> None:
        self.shadows = check_int("shadows", shadows, minimum=1, fix="Shokri needs >= 1 shadow.")
        self.executor = executor
        if features not in ("probs", "sorted"):
            raise InputError(f"features must be 'probs' or 'sorted', got {features!r}.")
        self.recipe = recipe
        self.shadow_data = as_array_dataset(shadow_data)
        self.features = features
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.steps = check_int("steps", steps, minimum=1)
        self.lr = check_float("lr", lr, minimum=0.0)
        if self.lr <= 0:
            raise InputError(f"lr must be > 0 (the attack models' learning rate), got {lr}.")
        self.seed = seed
        self.cache = cache
        self.device = resolve_device(device)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.progress = progress
        self.shadow_models: ShadowModels | None = None
        self.attack_models: ClassAttackModels | None = None
        self.trained_classes: list[int] = []
        self.untrained_classes: list[int] = []

    def _features(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(-1)
        return probs.sort(-1, descending=True).values if self.features == "sorted" else probs

    def fit(self) -> ShokriAttack:
        """Train (or load) the shadow models, then one attack model per class."""
        data = self.shadow_data
        self.shadow_models = train_shadows(
            self.recipe, data, self.shadows, scheme="half", seed=self.seed, cache=self.cache,
            device=self.device, progress=self.progress, executor=self.executor,
        )  # fmt: skip
        feats = torch.cat(
            [
                self._features(_logits(m, data, self.batch_size, self.device))
                for m in self.shadow_models.models(self.device)
            ]
        )
        member = self.shadow_models.masks.reshape(-1)
        label = data.y.repeat(self.shadows)
        self.trained_classes, self.untrained_classes, groups = [], [], []
        for c in range(data.num_classes):  # one attack model per class (a loop over classes)
            sel = label == c
            if not bool(member[sel].any()) or bool(member[sel].all()):
                self.untrained_classes.append(c)
                continue
            self.trained_classes.append(c)
            groups.append((feats[sel], member[sel]))
        self.attack_models = None
        if groups:
            seeds = [derive_seed(self.seed, "attack-model", c) for c in self.trained_classes]
            self.attack_models = _fit_class_models(
                groups, seeds, self.hidden, self.steps, self.lr, self.device
            )
        return self

    @torch.no_grad()
    def score(self, model: nn.Module, data: ArrayDataset | Dataset) -> torch.Tensor:
        """The attack models' logits (float64, higher = member) for ``model`` on ``data``."""
        if self.shadow_models is None:
            raise InputError("call fit() before score(): the attack models are not trained yet.")
        ds = as_array_dataset(data)
        feats = self._features(_logits(model, ds, self.batch_size, self.device))
        if feats.shape[1] != self.shadow_data.num_classes:
            raise InputError(
                f"the model outputs {feats.shape[1]} classes but the shadow data has "
                f"{self.shadow_data.num_classes}; attack a model of the same task."
            )
        out = torch.zeros(len(ds), dtype=torch.float64)
        if self.attack_models is None:
            return out
        for i, c in enumerate(self.trained_classes):  # a loop over classes
            sel = ds.y == c
            if bool(sel.any()):
                logit = self.attack_models.one(i, feats[sel].to(self.device))
                out[sel] = logit.double().cpu()
        return out
