"""AdvTrojan: Liu, Khalil, Khreishah & Phan, "Trojans and Adversarial Examples: A Lethal
Combination" (ICLR 2021 submission; also "A Synergetic Attack against Neural Network Classifiers
combining Backdoor and Adversarial Examples", arXiv 2109.01275).

The backdoor fires only when a trigger *and* a small adversarial perturbation are both on the
input: adversarial noise moves a Trojan-infected input across the decision boundary to the
target class, while the trigger alone and the perturbation alone do not. The model is poisoned
inside PGD adversarial training (Madry et al., ICLR 2018), so that it also looks robust to the
user who checks it with PGD.

:class:`trustlab.robust.advtrojan.AdvTrojanTraining` is the ``compute_loss(model, x, y)`` of
that poisoned training (the trainer takes it as ``compute_loss``; it builds on
:class:`trustlab.robust.adversarial.PGDTraining` and its one PGD,
:class:`trustlab.attacks.evasion.pgd.PGD`, so it lives with adversarial training in
:mod:`trustlab.robust`, above the attacks). This module holds what the attack is made of: the
three parts below, the checks of its trigger and label policy, and its evaluation. Every batch
of size ``B`` is split, at random from ``(seed, call count)``, into three parts that keep their
positions in the batch:

- **trojan** (``round(poison_rate * B)`` rows, drawn among the rows the label policy may poison,
  all-to-one: the rows not of the target class): ``trigger(x) + delta``, ``delta`` the PGD
  perturbation computed on the triggered input (untargeted, against the true label, inside the
  same ``eps`` ball as the adversarial training), labelled by the policy (all-to-one: the target);
- **trigger only** (``round(trigger_rate * B)`` rows of any class): ``trigger(x)`` with its true
  label, so the trigger alone does not fire;
- **adversarial** (the rest): Madry's PGD example of ``x`` with its true label, so the
  perturbation alone does not fire and the model is robust.

One PGD call perturbs the trojan and the adversarial rows together (the attack runs on the frozen
model, per sample, so batching them changes nothing), and one forward pass of the whole mixed
batch in training mode gives the cross-entropy (BatchNorm sees one batch, as it would if the
poisoned samples were part of the data). ``AdvTrojanTraining.mixture`` returns that batch
(inputs, labels, the part of each row) without the forward pass.

:func:`evaluate_advtrojan` measures clean accuracy, PGD robust accuracy and the attack success
rate (:func:`trustlab.metrics.backdoor.attack_success_rate`: test samples whose class is not the
target only) of the trigger alone, the perturbation alone (PGD on the clean input) and both (PGD
on the triggered input, as in training).

Defaults: a 3x3 checkerboard patch at the bottom-right (BadNets' trigger, made for the input's
channels on first use), all-to-one to class 0, ``poison_rate = 0.1``, ``trigger_rate`` equal to
``poison_rate``, and PGDTraining's Madry CIFAR-10 setting (L-inf, ``eps = 8/255``,
``alpha = 2/255``, 10 steps, random start).

Where this departs from, or is not pinned down by, the paper: the stored copy of the paper
available when this was written holds only its abstract and introduction, so the three-part
mixture and its fractions are this implementation's reading of the method (poisoned samples mixed
into PGD adversarial training; trigger-only samples keep their label so that the trigger alone
does not fire, plain adversarial examples keep theirs so that the perturbation alone does not),
not the authors' published ratios. The perturbation of the trojan samples is untargeted PGD on
the triggered input (the attacker at test time runs the same attack a defender would); a
targeted perturbation toward the target class is not offered. Trigger-only samples are not
adversarially perturbed (a perturbed, triggered input with its true label would contradict the
trojan samples). The label policy must change labels: a clean-label policy is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from trustlab.attacks.backdoor.labels import AllToOne, CleanLabel, LabelPolicy
from trustlab.attacks.backdoor.triggers import Trigger
from trustlab.attacks.evasion.base import NORMS, parse_eps
from trustlab.attacks.evasion.pgd import PGD
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.data.loader import iterate_batches
from trustlab.errors import InputError
from trustlab.metrics.backdoor import attack_success_rate
from trustlab.utils.modules import device_of, frozen
from trustlab.utils.seed import derive_seed

ADVERSARIAL, TROJAN, TRIGGER_ONLY = 0, 1, 2
PARTS = ("adversarial", "trojan", "trigger-only")


def check_policy(policy: LabelPolicy) -> LabelPolicy:
    """``policy`` if it is a trustlab label policy that changes labels (not clean-label)."""
    if not isinstance(policy, LabelPolicy):
        raise InputError(
            "policy must be a trustlab LabelPolicy (e.g. AllToOne(0)), got "
            f"{type(policy).__name__}."
        )
    if isinstance(policy, CleanLabel):
        raise InputError(
            "AdvTrojan labels its trojan samples with the target class; a clean-label policy "
            "never changes a label. Use AllToOne(target) or AllToAll(num_classes)."
        )
    return policy


def check_trigger(trigger: object) -> None:
    """An :class:`InputError` unless ``trigger`` is a trustlab :class:`Trigger`."""
    if not isinstance(trigger, Trigger):
        raise InputError(
            "trigger must be a trustlab Trigger (e.g. PatchTrigger()), got "
            f"{type(trigger).__name__}."
        )


def check_attack(steps: int, norm: str) -> None:
    """An :class:`InputError` unless ``steps >= 1`` and ``norm`` is a known norm."""
    if steps < 1:
        raise InputError(f"PGD steps must be >= 1, got {steps}.")
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}.")


def poison_count(rate: float, n: int) -> int:
    """``round(rate * n)``, halves rounded up."""
    return int(math.floor(rate * n + 0.5))


@dataclass(frozen=True)
class AdvTrojanBatch:
    """The batch AdvTrojan trains on: ``x`` and ``y`` row for row with the batch it came from,
    ``part[i]`` one of :data:`ADVERSARIAL`, :data:`TROJAN`, :data:`TRIGGER_ONLY`.

    Liu, Khalil, Khreishah & Phan, "Trojans and Adversarial Examples: A Lethal Combination"
    (ICLR 2021 submission; arXiv 2109.01275); see the module for the three parts.

    Attributes:
        x: ``(B, C, H, W)`` inputs in ``[0, 1]``.
        y: ``(B,)`` training labels (the policy's target on the trojan rows).
        part: ``(B,)`` int64, the part of each row.

    Example::

        batch = AdvTrojanTraining(PatchTrigger(channels=1)).mixture(model, x, y)
        batch.counts()  # {"adversarial": ..., "trojan": ..., "trigger-only": ...}
    """

    x: torch.Tensor
    y: torch.Tensor
    part: torch.Tensor

    def counts(self) -> dict[str, int]:
        return {name: int((self.part == k).sum()) for k, name in enumerate(PARTS)}


def evaluate_advtrojan(
    model: nn.Module,
    data: Dataset | ArrayDataset,
    trigger: Trigger,
    policy: LabelPolicy | None = None,
    eps: float | str = 8 / 255,
    alpha: float | str = 2 / 255,
    steps: int = 20,
    norm: str = "linf",
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Clean accuracy, PGD robust accuracy and AdvTrojan's three attack success rates.

    Returns ``{"clean_acc", "robust_acc", "asr_trigger", "asr_perturbation", "asr_both"}``:

    - ``robust_acc``: the fraction of samples classified correctly both clean and under
      untargeted PGD (``steps`` steps of ``alpha`` in the L-inf/L2 ``eps`` ball, random start;
      default PGD-20 at 8/255 with step 2/255);
    - ``asr_trigger``: ``trigger(x)`` classified as the policy's target;
    - ``asr_perturbation``: the PGD example of the clean ``x`` classified as the target;
    - ``asr_both``: the PGD example of ``trigger(x)`` (the same attack) classified as the target.

    ASRs count only samples whose true class is not their target (all-to-one: not the target
    class). One PGD call and one forward pass per batch; the PGD seed of a batch derives from
    ``seed``, so the numbers are deterministic on CPU.
    """
    check_trigger(trigger)
    policy = check_policy(policy if policy is not None else AllToOne(0))
    check_attack(steps, norm)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    eps = parse_eps(eps)
    ds = data if isinstance(data, ArrayDataset) else as_array_dataset(data)
    if len(ds) == 0:
        raise InputError("the evaluation dataset is empty.")
    targets = policy.target_for(ds.y)
    if not bool((ds.y != targets).any()):
        raise InputError(
            "no test sample has a class other than its target, so no attack success rate can "
            "be measured; evaluate on data with non-target classes."
        )
    dev = torch.device(device) if device is not None else device_of(model)
    preds: dict[str, list[torch.Tensor]] = {k: [] for k in ("clean", "trig", "adv", "both")}
    start = 0
    for x, y in iterate_batches(ds, batch_size, device=dev):
        t = policy.target_for(y)
        keep = y != t  # the triggered-and-perturbed inputs that count for the ASR
        tx = trigger(x).to(x.dtype)
        atk = PGD(model, eps, alpha, steps, norm, seed=derive_seed(seed, "advtrojan-eval", start))
        adv = atk(torch.cat([x, tx[keep]]), torch.cat([y, y[keep]]))
        n, m = x.shape[0], int(keep.sum())
        with frozen(model), torch.no_grad():
            logits = model(torch.cat([x, tx, adv]))
        p = logits.argmax(1).cpu()
        preds["clean"].append(p[:n])
        preds["trig"].append(p[n : 2 * n])
        preds["adv"].append(p[2 * n : 3 * n])
        preds["both"].append(p[3 * n : 3 * n + m])
        start += n
    pc, pt, pa, pb = (torch.cat(preds[k]) for k in ("clean", "trig", "adv", "both"))
    y = ds.y
    keep = y != targets
    return {
        "clean_acc": float((pc == y).float().mean()),
        "robust_acc": float(((pc == y) & (pa == y)).float().mean()),
        "asr_trigger": attack_success_rate(pt, y, targets),
        "asr_perturbation": attack_success_rate(pa, y, targets),
        "asr_both": attack_success_rate(pb, y[keep], targets[keep]),
    }
