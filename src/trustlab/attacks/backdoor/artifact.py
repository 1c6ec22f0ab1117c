"""A trained backdoor as an artefact on disk, and the data-poisoning attacks that make one.

``train_backdoor("badnets", train, test, model_name, ...)`` poisons the training set
(:func:`~trustlab.attacks.backdoor.poison.poison_dataset`), trains with the one trainer and
measures C-Acc, ASR and RA (:mod:`trustlab.metrics.backdoor`). :func:`save_artifact` writes
everything a defense needs into a folder, independent of the paths it came from:

- ``model.safetensors``: the weights and the spec that rebuilds the model;
- ``trigger.safetensors``: the trigger's tensors, its parameters in the header;
- ``poison.safetensors``: the poisoned training indices, and the poisoned inputs and labels
  themselves (so a dataset filter sees exactly the training set, whatever transformed it);
- ``backdoor.json``: attack, label policy, trigger parameters, config, seed and metrics.

:func:`load_artifact` reads it back (safetensors and JSON only; nothing is unpickled).

The attacks are the recipes registered in :data:`~trustlab.registry.BACKDOORS`
(:mod:`~trustlab.attacks.backdoor.recipe`: a trigger, a label policy and an injector), e.g.
``badnets`` (3x3 checkerboard at the bottom-right, all-to-one), ``badnets-all2all`` (the same
patch, ``y -> y + 1``), ``pixel`` (one white pixel, all-to-one), ``blend`` (uniform-noise
pattern, alpha 0.2, all-to-one) and ``refool`` (an out-of-focus reflection of a bundled
photograph on target-class images only, clean-label) and ``sig`` (a horizontal sinusoid on
target-class images, clean-label): the ``"data"`` injector poisons a copy of the training set.
The others need more than a poisoned copy of the data (``lc``, the label-consistent attack,
works like ``clean-label`` below; ``wanet`` and ``iad`` like ``blind``, poisoning a fraction
``rate`` of each batch):

- ``clean-label`` (the ``"clean-label"`` injector): the clean-label adversarial-patch backdoor
  (:mod:`~trustlab.attacks.backdoor.clean_label`): a surrogate of the same architecture (its own
  initial weights) is trained on the clean data first; it gives the universal adversarial patch
  (a quarter of the image side, bottom-right) and the PGD feature erasing (8/255, 10 steps);
  ``rate`` is the fraction of the *target class* poisoned (the paper's convention);
- ``blind`` (the ``"loss"`` injector): the blind backdoor
  (:class:`~trustlab.attacks.backdoor.blind.BlindBackdoorLoss`, 3x3 checkerboard, all-to-one):
  the data stays clean, the compromised loss does the work (``rate`` is unused; no index is
  poisoned).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.attacks.backdoor.labels import LabelPolicy, policy_from_state
from trustlab.attacks.backdoor.poison import PoisonedDataset, poison_dataset
from trustlab.attacks.backdoor.recipe import BackdoorRecipe, LossFn
from trustlab.attacks.backdoor.triggers import Trigger, trigger_from_state
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.metrics.backdoor import attack_success_rate, backdoor_robust_accuracy
from trustlab.registry import BACKDOORS
from trustlab.train.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from trustlab.utils.io import write_json_atomic
from trustlab.utils.modules import frozen
from trustlab.utils.seed import derive_seed


@dataclass
class BackdoorArtifact:
    """A trained backdoor: the model, its trigger and label policy, the poisoned training
    indices (and the poisoned samples themselves), the config and the metrics.

    Args:
        model: the backdoored model.
        trigger: the attack's trigger.
        policy: the attack's label policy.
        poison_indices: ``(P,)`` int64 indices of the poisoned training samples (empty for the
            blind backdoor).
        config: attack, rate, target, seed, ``of`` (and what the caller adds).
        metrics: ``clean_acc``, ``asr``, ``ra`` on the test split.
        poisoned_x: ``(P, C, H, W)`` the poisoned inputs in index order (``None`` if not kept).
        poisoned_y: ``(P,)`` their training labels.

    Example::

        art = train_backdoor("badnets", train, test, model, settings)
        save_artifact("out/", art); load_artifact("out/").metrics
    """

    model: nn.Module
    trigger: Trigger
    policy: LabelPolicy
    poison_indices: torch.Tensor
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    poisoned_x: torch.Tensor | None = None  # the poisoned inputs, in index order
    poisoned_y: torch.Tensor | None = None  # and their training labels

    def training_set(self, train: ArrayDataset) -> PoisonedDataset:
        """The poisoned training set the model saw, rebuilt from the clean ``train`` split."""
        idx = self.poison_indices.long()
        if len(idx) and (self.poisoned_x is None or self.poisoned_y is None):
            raise InputError("this artefact does not hold its poisoned samples; retrain it.")
        if len(idx) and tuple(self.poisoned_x.shape[1:]) != tuple(train.x.shape[1:]):
            raise InputError(
                f"the artefact's poisoned inputs are {tuple(self.poisoned_x.shape[1:])} but the "
                f"training set holds {tuple(train.x.shape[1:])}; pass the split it was trained on."
            )
        if len(idx) and int(idx.max()) >= len(train):
            raise InputError(
                f"the artefact poisoned index {int(idx.max())} but the training set has "
                f"{len(train)} samples; pass the split it was trained on."
            )
        x, y = train.x.clone(), train.y.clone()
        if len(idx):
            x[idx], y[idx] = self.poisoned_x.to(x.dtype), self.poisoned_y.to(y.dtype)
        out = PoisonedDataset(x, y, train.classes, train.mean, train.std, f"{train.name}+poison")
        out.poison_mask = torch.zeros(len(train), dtype=torch.bool)
        out.poison_mask[idx] = True
        out.clean_y = train.y.clone()
        return out


def make_poisoning(
    name: str, data: ArrayDataset, target: int = 0, seed: int = 0
) -> tuple[Trigger, LabelPolicy, str]:
    """``(trigger, label policy, "dataset" or "eligible")`` of a registered data-poisoning
    recipe (injector ``"data"``) for ``data``."""
    card = BACKDOORS.get(name)
    if card.meta.get("injector") != "data":
        raise InputError(
            f"{name!r} is not a plain data poisoning (it needs a surrogate or a compromised "
            "loss); run it with train_backdoor."
        )
    recipe: BackdoorRecipe = card.build()
    return recipe.trigger(data, seed), recipe.policy(target, data.num_classes), recipe.of


def evaluate_backdoor(
    model: nn.Module,
    test: ArrayDataset,
    trigger: Trigger,
    policy: LabelPolicy,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """``{"clean_acc", "asr", "ra"}`` on a clean test set and its triggered copy."""
    clean, trig = [], []
    with frozen(model), torch.no_grad():
        for s in range(0, len(test), batch_size):
            x = test.x[s : s + batch_size].to(device)
            clean.append(model(x).argmax(1).cpu())
            trig.append(model(trigger(x)).argmax(1).cpu())
    pc, pt = torch.cat(clean), torch.cat(trig)
    t = policy.target_for(test.y)
    return {
        "clean_acc": float((pc == test.y).float().mean()),
        "asr": attack_success_rate(pt, test.y, t),
        "ra": backdoor_robust_accuracy(pt, test.y, t),
    }


def save_trigger(path: str | Path, trigger: Trigger) -> Path:
    """Write a trigger to a safetensors file (its tensors; its parameters in the header)."""
    tconf, tensors = trigger.state()
    save_checkpoint(path, tensors, {"kind": "trigger", "trigger": tconf})
    return Path(path)


def load_trigger(path: str | Path) -> Trigger:
    """Read a trigger written by :func:`save_trigger` (nothing is unpickled)."""
    tensors, meta = load_checkpoint(path)
    if "trigger" not in meta:
        raise InputError(f"{path} holds no trigger (its header has no 'trigger' entry).")
    return trigger_from_state(meta["trigger"], tensors)


def save_artifact(folder: str | Path, art: BackdoorArtifact) -> Path:
    """Write the artefact into ``folder`` (see the module); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(art.model, folder / "model.safetensors")
    save_trigger(folder / "trigger.safetensors", art.trigger)
    poison = {"indices": art.poison_indices.long()}
    if art.poisoned_x is not None and art.poisoned_y is not None:
        poison.update(inputs=art.poisoned_x.float(), labels=art.poisoned_y.long())
    save_checkpoint(folder / "poison.safetensors", poison, {"kind": "poison"})
    doc = {
        "config": art.config, "trigger": art.trigger.state()[0], "policy": art.policy.state(),
        "metrics": art.metrics, "poisoned": int(art.poison_indices.numel()),
    }  # fmt: skip
    write_json_atomic(folder / "backdoor.json", doc)
    return folder


def load_artifact(folder: str | Path, device: str | torch.device = "cpu") -> BackdoorArtifact:
    """Read an artefact written by :func:`save_artifact` (a folder, e.g. a ``backdoor`` run)."""
    folder = Path(folder)
    doc_path = folder / "backdoor.json"
    if not doc_path.is_file():
        raise InputError(f"{folder} holds no backdoor artefact (backdoor.json is missing).")
    doc = json.loads(doc_path.read_text())
    poison, _ = load_checkpoint(folder / "poison.safetensors")
    return BackdoorArtifact(
        model=load_model(folder / "model.safetensors", device=device),
        trigger=load_trigger(folder / "trigger.safetensors"),
        policy=policy_from_state(doc["policy"]),
        poison_indices=poison["indices"],
        config=doc.get("config", {}),
        metrics=doc.get("metrics", {}),
        poisoned_x=poison.get("inputs"),
        poisoned_y=poison.get("labels"),
    )


#: what an injector returns: the trigger, the label policy, the training set the model sees
#: (a poisoned copy, or the clean data with an empty poison mask) and the trainer's
#: ``compute_loss`` (``None``: the plain loss)
Injected = tuple[Trigger, LabelPolicy, PoisonedDataset, LossFn | None]


def _inject_data(
    recipe: BackdoorRecipe, train: ArrayDataset, rate: float, target: int, seed: int, **_: Any
) -> Injected:
    """The ``"data"`` injector: a poisoned copy of the training set."""
    trigger, policy = recipe.trigger(train, seed), recipe.policy(target, train.num_classes)
    return trigger, policy, recipe.poison(train, trigger, policy, rate, seed), None


def _inject_loss(
    recipe: BackdoorRecipe, train: ArrayDataset, rate: float, target: int, seed: int, **_: Any
) -> Injected:
    """The ``"loss"`` injector: clean data (nothing poisoned), a compromised loss (given
    ``rate``, the fraction of each batch it poisons, when the recipe takes it)."""
    policy = recipe.policy(target, train.num_classes)
    trigger = recipe.trigger(train, seed)
    per_batch = {"rate": rate} if recipe.loss_uses_rate else {}
    compute_loss = recipe.loss(trigger, policy, **per_batch)
    clean = poison_dataset(train, trigger, policy, rate=0.0, seed=seed)
    return trigger, policy, clean, compute_loss


def _inject_clean_label(
    recipe: BackdoorRecipe,
    train: ArrayDataset,
    rate: float,
    target: int,
    seed: int,
    *,
    model: nn.Module,
    settings: Any,
    device: torch.device | str,
    progress: bool,
) -> Injected:
    """The ``"clean-label"`` injector: a surrogate of ``model``'s architecture (its own initial
    weights) trained on the clean data; the recipe learns its trigger and poisons with it."""
    from trustlab.models.spec import ModelSpec
    from trustlab.train import Trainer

    spec = ModelSpec.from_model(model)
    if spec is None:
        raise InputError("the clean-label attack builds its surrogate from a trustlab model.")
    torch.manual_seed(derive_seed(seed, "surrogate"))
    surrogate = spec.build()
    Trainer(surrogate, settings, device=device, progress=progress).fit(train)
    trigger = recipe.trigger(train, seed, surrogate=surrogate, target=target, device=device)
    policy = recipe.policy(target, train.num_classes)
    poisoned = recipe.poison(train, trigger, policy, rate, seed, surrogate=surrogate)
    return trigger, policy, poisoned, None


#: the injectors by the cards' meta ``injector``
INJECT = {"data": _inject_data, "loss": _inject_loss, "clean-label": _inject_clean_label}


def train_backdoor(
    attack: str,
    train: ArrayDataset,
    test: ArrayDataset,
    model: nn.Module,
    settings: Any,
    rate: float = 0.1,
    target: int = 0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    options: dict[str, Any] | None = None,
) -> BackdoorArtifact:
    """Poison ``train`` with the registered attack (:data:`~trustlab.registry.BACKDOORS`),
    train ``model`` with ``settings`` (:class:`~trustlab.train.TrainSettings`) and measure it;
    see the module. The recipe's injector decides how the backdoor gets in; ``options`` are
    the recipe's parameters (``trustlab list backdoors`` shows them; an unknown or mistyped
    one is an error naming the allowed ones), recorded in the artefact's config."""
    from trustlab.train import Trainer

    card = BACKDOORS.get(attack)
    card.validate(options or {})
    recipe: BackdoorRecipe = card.build(**(options or {}))
    inject = INJECT[card.meta["injector"]]
    trigger, policy, poisoned, compute_loss = inject(
        recipe, train, rate, target, seed,
        model=model, settings=settings, device=device, progress=progress,
    )  # fmt: skip
    trainer = Trainer(model, settings, compute_loss=compute_loss, device=device, progress=progress)
    trainer.fit(poisoned, test)
    metrics = evaluate_backdoor(model, test, trigger, policy, device=device)
    of = recipe.of
    config = {"attack": card.name, "rate": rate, "target": target, "seed": seed, "of": of}
    if options:
        config["options"] = dict(options)
    idx = poisoned.poison_indices
    return BackdoorArtifact(
        model, trigger, policy, idx, config, metrics, poisoned.x[idx], poisoned.y[idx]
    )
