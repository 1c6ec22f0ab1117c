"""FDPDDL's baselines: standalone, centralised and distributed (DSSGD) training.

Lyu et al. (IEEE TDSC 2020, arXiv:2007.09370) compare every party's FDPDDL accuracy with

- **standalone**: the party trains alone on its shard for as many local epochs as it runs in
  FDPDDL (pre-training plus every round), with the same DP-SGD; the same seed gives the same
  pre-training as the FDPDDL run, so the two differ only by the collaboration. Its accuracy is
  the party's *contribution* in the fairness correlation.
- **centralised**: one model trained with the same DP-SGD on the union of the shards for the
  same number of epochs.
- **distributed**: Shokri and Shmatikov's DSSGD ("Privacy-Preserving Deep Learning", CCS 2015):
  each round every party downloads the global model, trains ``local_epochs`` of DP-SGD and
  uploads the ``floor(|theta| s_i)`` largest-magnitude coordinates of its update, which the
  server adds to the global model; the parties update in parallel from the same global model
  (DSSGD's synchronous variant) and the global model's accuracy is the baseline. It runs
  ``ceil(total_epochs / local_epochs)`` rounds, the same number of local epochs per party.

Every baseline computes with one thread (as the FDPDDL backends do).
"""

from __future__ import annotations

import math

import torch

from trustlab.collab import fdpddl as fd
from trustlab.collab.parties import Party, add_flat_, flat_parameters
from trustlab.collab.settings import CollabSettings, load_data, make_party, party_shards
from trustlab.data.datasets import ArrayDataset
from trustlab.utils.device import single_threaded


def standalone(
    settings: CollabSettings,
    seed: int = 0,
    device: torch.device | str = "cpu",
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
) -> list[float]:
    """Every party's test accuracy after training alone for ``settings.total_epochs``."""
    with single_threaded(device):
        data = data if data is not None else load_data(settings)
        out = []
        for i in range(settings.parties):
            party = make_party(settings, i, seed, device, data)
            party.train_epochs(settings.total_epochs)
            out.append(party.accuracy())
            party.close()
    return out


def centralised(
    settings: CollabSettings,
    seed: int = 0,
    device: torch.device | str = "cpu",
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
) -> float:
    """Test accuracy of one model trained with the same DP-SGD on every party's shard."""
    with single_threaded(device):
        train, test = data if data is not None else load_data(settings)
        union = torch.cat(party_shards(settings, train, seed)).sort().values
        party = make_party(
            settings, 0, seed, device, (train, test), indices=union, role="centralised"
        )
        party.train_epochs(settings.total_epochs)
        acc = party.accuracy()
        party.close()
    return acc


def distributed(
    settings: CollabSettings,
    seed: int = 0,
    device: torch.device | str = "cpu",
    data: tuple[ArrayDataset, ArrayDataset] | None = None,
) -> float:
    """Test accuracy of DSSGD's global model (see the module docstring)."""
    rounds = math.ceil(settings.total_epochs / settings.local_epochs)
    with single_threaded(device):
        data = data if data is not None else load_data(settings)
        parties = [make_party(settings, i, seed, device, data) for i in range(settings.parties)]
        global_params = flat_parameters(parties[0].model)
        sharing = torch.tensor(settings.sharing_levels(), dtype=torch.float64)
        sizes = fd.shared_size(global_params.numel(), sharing)
        for _ in range(rounds):
            upload = torch.zeros_like(global_params)
            for p in parties:
                add_flat_(p.model, global_params - flat_parameters(p.model))  # download all
                before = flat_parameters(p.model)
                p.train_epochs(settings.local_epochs)
                index, value = fd.top_k(flat_parameters(p.model) - before, int(sizes[p.index]))
                upload.index_add_(0, index, value)
            global_params = global_params + upload
        final: Party = parties[0]
        add_flat_(final.model, global_params - flat_parameters(final.model))
        acc = final.accuracy()
        for p in parties:
            p.close()
    return acc


__all__ = ["centralised", "distributed", "standalone"]
