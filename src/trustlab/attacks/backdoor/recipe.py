"""A backdoor attack as a recipe of the design's parts: trigger, label policy, injector.

Every backdoor attack trustlab trains is the same three choices:

- the **trigger** (:mod:`~trustlab.attacks.backdoor.triggers`): ``recipe.trigger(data, seed)``
  builds it for inputs shaped like ``data`` (channels, size), drawing whatever is random from
  ``seed``;
- the **label policy** (:mod:`~trustlab.attacks.backdoor.labels`): ``recipe.policy(target,
  num_classes)``: which samples may carry the trigger and what label they get (default
  all-to-one);
- the **injector**, how the backdoor gets into the model, the card's meta ``injector``:

  - ``"data"``: a poisoned copy of the training set (``recipe.poison``:
    :func:`~trustlab.attacks.backdoor.poison.poison_dataset` of ``rate`` of the dataset
    (``of = "dataset"``, BadNets' convention) or of the eligible samples (``of = "eligible"``));
  - ``"loss"``: the data stays clean and a compromised loss (``recipe.loss(trigger, policy)``,
    the trainer's ``compute_loss``) does the work (the blind backdoor);
  - ``"clean-label"``: a surrogate of the same architecture is trained on the clean data first;
    the recipe learns its trigger on the surrogate (``recipe.trigger(data, seed, surrogate=...)``)
    and perturbs the poisoned target-class inputs with it (``recipe.poison(...,
    surrogate=...)``).

A new data-poisoning attack is one small class with a decorator, in one file::

    @BACKDOORS.register("white-square", "a 5x5 white square, all-to-one", paper="...",
                        threat="data poisoning, dirty label", injector="data")
    class WhiteSquare(BackdoorRecipe):
        def trigger(self, data, seed=0):
            return PatchTrigger("white", size=5, channels=data.x.shape[1])

and :func:`~trustlab.attacks.backdoor.artifact.train_backdoor`, ``trustlab backdoor`` and the
bench matrix take it by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from trustlab.attacks.backdoor.labels import AllToOne, LabelPolicy
from trustlab.attacks.backdoor.poison import PoisonedDataset, poison_dataset
from trustlab.attacks.backdoor.triggers import Trigger
from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError

__all__ = ["INJECTORS", "BackdoorRecipe", "LossFn"]

#: the ways a backdoor gets into a model (the card's meta ``injector``)
INJECTORS = ("data", "loss", "clean-label")

#: ``compute_loss(model, x, y) -> loss``: what a ``"loss"`` recipe hands the trainer
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class BackdoorRecipe:
    """Base class of the backdoor recipes registered in :data:`~trustlab.registry.BACKDOORS`.

    A subclass implements :meth:`trigger`; it overrides :meth:`policy` when the attack is not
    all-to-one, sets :attr:`of` when its rate counts the eligible samples, and implements
    :meth:`loss` (``injector="loss"``) or the surrogate arguments (``injector="clean-label"``).
    The injector itself is the card's meta, which
    :func:`~trustlab.attacks.backdoor.artifact.train_backdoor` dispatches on.

    Example::

        recipe = BACKDOORS.build("badnets")
        trigger, policy = recipe.trigger(train), recipe.policy(0, train.num_classes)
    """

    #: what ``rate`` counts: ``"dataset"`` (the whole training set) or ``"eligible"``
    of: ClassVar[str] = "dataset"
    #: a ``"loss"`` recipe whose :meth:`loss` takes ``rate=`` (the fraction of each batch it
    #: poisons: WaNet, IAD); the others (the blind backdoor) ignore the rate
    loss_uses_rate: ClassVar[bool] = False

    def trigger(self, data: ArrayDataset, seed: int = 0, **surrogate: Any) -> Trigger:
        """The trigger for inputs shaped like ``data``'s (random parts drawn from ``seed``)."""
        raise NotImplementedError

    def policy(self, target: int, num_classes: int) -> LabelPolicy:
        """The label policy (default all-to-one to ``target``)."""
        return AllToOne(target, num_classes)

    def poison(
        self,
        data: ArrayDataset,
        trigger: Trigger,
        policy: LabelPolicy,
        rate: float,
        seed: int = 0,
        **surrogate: Any,
    ) -> PoisonedDataset:
        """The poisoned copy of ``data``: ``rate`` of it (see :attr:`of`) triggered and
        relabelled (:func:`~trustlab.attacks.backdoor.poison.poison_dataset`)."""
        return poison_dataset(data, trigger, policy, rate=rate, of=self.of, seed=seed)

    def loss(self, trigger: Trigger | None, policy: LabelPolicy | None, **kw: Any) -> LossFn:
        """The compromised ``compute_loss`` of a ``"loss"`` recipe."""
        raise InputError(f"{type(self).__name__} poisons data; it has no compromised loss.")
