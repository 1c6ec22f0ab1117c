"""Fixtures shared by the backdoor-defense tests."""

from __future__ import annotations

import pytest
import torch

from trustlab.train import TrainSettings


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny BadNets backdoor (resnet8, 400 digits, 3 epochs), trained once per session and
    shared through the session's temporary folder by the repair-defense tests."""
    from trustlab.attacks.backdoor.artifact import load_artifact, save_artifact, train_backdoor
    from trustlab.data import load_dataset
    from trustlab.defenses.backdoor.evaluate import split_clean
    from trustlab.models.spec import ModelSpec

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    folder = tmp_path_factory.getbasetemp() / "planted-badnets-resnet8"
    if (folder / "backdoor.json").is_file():
        art = load_artifact(folder)
    else:
        torch.manual_seed(0)
        net = ModelSpec.for_data("resnet8", train).build()
        settings = TrainSettings(epochs=3, lr=0.05, batch_size=32)
        art = train_backdoor("badnets", train.subset(range(400)), test, net, settings, 0.1, 0, 0)
        save_artifact(folder, art)
    clean, ev = split_clean(test, 0)
    return art, clean, ev
