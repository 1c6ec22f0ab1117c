"""Collaborative learning: FDPDDL (Lyu et al., IEEE TDSC 2020), fair and differentially private
decentralised learning.

- :mod:`~trustlab.collab.fdpddl`: the reputation system as pure functions over ``n x n``
  matrices (credibility, expulsion, tokens, the download rule);
- :mod:`~trustlab.collab.parties`: a party (its shard, model, DP-SGD state, behaviour);
- :mod:`~trustlab.collab.protocol`: the two stages as one generator per party;
- :mod:`~trustlab.collab.backends`: in one process, one process per party, under torchrun;
- :mod:`~trustlab.collab.baselines`: standalone, centralised and distributed (DSSGD) training;
- :mod:`~trustlab.collab.settings` and :mod:`~trustlab.collab.runner`: :class:`CollabSettings`,
  :func:`run_fdpddl`, :class:`CollabResult`.
"""

from trustlab.collab.runner import CollabResult, run_fdpddl, run_torchrun_party
from trustlab.collab.settings import SETTINGS, CollabSettings, party_shards

__all__ = [
    "SETTINGS",
    "CollabResult",
    "CollabSettings",
    "party_shards",
    "run_fdpddl",
    "run_torchrun_party",
]
