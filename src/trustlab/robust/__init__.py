"""Robust training: adversarial training losses, a layer above the attacks they run and below
the defenses that train with them.

- :class:`~trustlab.robust.adversarial.PGDTraining` (Madry et al., ICLR 2018) and
  :class:`~trustlab.robust.adversarial.TRADES` (Zhang et al., ICML 2019): the trainer's
  ``compute_loss(model, x, y)``;
- :class:`~trustlab.robust.advtrojan.AdvTrojanTraining`: PGD adversarial training with
  AdvTrojan's poisoned samples mixed in (the attack's parts and evaluation are in
  :mod:`trustlab.attacks.backdoor.advtrojan`).
"""

from trustlab.robust.adversarial import TRADES, PGDTraining
from trustlab.robust.advtrojan import AdvTrojanTraining

__all__ = ["TRADES", "AdvTrojanTraining", "PGDTraining"]
