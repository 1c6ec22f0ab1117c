"""Label policies: which samples may carry the trigger and what label they get.

- :class:`AllToOne` (BadNets): any sample not of the target class; label -> ``target``.
- :class:`AllToAll` (BadNets): any sample; label ``y -> (y + 1) mod K``.
- :class:`CleanLabel` (Turner et al. 2019; Refool; the clean-label video backdoor): only samples
  already of the target class; labels never change.

``policy.eligible(y)`` is the mask of samples that may be poisoned, ``policy(y)`` the poisoned
labels, ``policy.target_for(y)`` the class a triggered test sample should be pushed to (for the
attack success rate).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from trustlab.errors import InputError


class LabelPolicy:
    """Base class of the label policies: ``eligible(y)`` (which samples may carry the
    trigger), ``policy(y)`` (their poisoned labels), ``target_for(y)`` (the class a triggered
    test input should reach) and ``state()`` (to store it); see the module.

    Example::

        policy = AllToOne(0, num_classes=10)
        policy(y), policy.eligible(y)
    """

    name = "policy"
    #: every policy class by its ``name`` (filled as subclasses are defined)
    kinds: ClassVar[dict[str, type[LabelPolicy]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            LabelPolicy.kinds[cls.name] = cls

    @classmethod
    def from_state(cls, state: dict[str, object]) -> LabelPolicy:
        """Rebuild a policy of this kind from :meth:`state`."""
        raise NotImplementedError  # pragma: no cover - every stored kind defines it

    def eligible(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def target_for(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def state(self) -> dict[str, object]:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_class(target: int, num_classes: int | None) -> int:
    if target < 0 or (num_classes is not None and target >= num_classes):
        raise InputError(f"target class {target} is out of range for {num_classes} classes.")
    return int(target)


class AllToOne(LabelPolicy):
    """All-to-one (BadNets, Gu et al., arXiv 2017): any sample not of ``target`` may carry
    the trigger; its label becomes ``target``.

    Args:
        target: the target class (default 0).
        num_classes: checks ``target`` against it when given.

    Example::

        AllToOne(1, 10)(torch.tensor([3, 4]))  # tensor([1, 1])
    """

    name = "all-to-one"

    def __init__(self, target: int = 0, num_classes: int | None = None) -> None:
        self.target = _check_class(target, num_classes)

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        return y != self.target

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, self.target)

    def target_for(self, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, self.target)

    def state(self) -> dict[str, object]:
        return {"policy": self.name, "target": self.target}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> LabelPolicy:
        return cls(int(state["target"]))  # type: ignore[arg-type]


class AllToAll(LabelPolicy):
    """All-to-all (BadNets, Gu et al., arXiv 2017): any sample; label ``y -> (y + 1) mod K``.

    Args:
        num_classes: ``K`` (at least 2).

    Example::

        AllToAll(10)(torch.tensor([3, 9]))  # tensor([4, 0])
    """

    name = "all-to-all"

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise InputError(f"all-to-all needs at least 2 classes, got {num_classes}.")
        self.num_classes = int(num_classes)

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(y, dtype=torch.bool)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) % self.num_classes

    def target_for(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) % self.num_classes

    def state(self) -> dict[str, object]:
        return {"policy": self.name, "num_classes": self.num_classes}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> LabelPolicy:
        return cls(int(state["num_classes"]))  # type: ignore[arg-type]


class CleanLabel(LabelPolicy):
    """Clean label (Turner et al. 2019; Refool; Zhao et al., CVPR 2020): only samples of
    ``target`` may carry the trigger, and labels never change.

    Args:
        target: the target class (default 0).
        num_classes: checks ``target`` against it when given.

    Example::

        CleanLabel(1, 10).eligible(torch.tensor([1, 2]))  # tensor([True, False])
    """

    name = "clean-label"

    def __init__(self, target: int = 0, num_classes: int | None = None) -> None:
        self.target = _check_class(target, num_classes)

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        return y == self.target

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def target_for(self, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, self.target)

    def state(self) -> dict[str, object]:
        return {"policy": self.name, "target": self.target}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> LabelPolicy:
        return cls(int(state["target"]))  # type: ignore[arg-type]


def policy_from_state(state: dict[str, object]) -> LabelPolicy:
    """Rebuild a label policy from its :meth:`~LabelPolicy.state`: the class of its ``name``
    (:attr:`LabelPolicy.kinds`) rebuilds it."""
    kind = state.get("policy")
    if kind not in LabelPolicy.kinds:
        raise InputError(f"unknown label policy {kind!r} in the artefact.")
    return LabelPolicy.kinds[str(kind)].from_state(state)
