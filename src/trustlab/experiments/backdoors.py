"""Reproduction ``blind``: Bagdasaryan & Shmatikov, "Blind Backdoors in Deep Learning Models",
USENIX Security 2021 (with BadNets, Gu et al. 2017, as the data-poisoning reference).

Four models of the same architecture on the same data, each a job: ``clean`` (no attack),
``badnets`` (10% of the training set poisoned with a 3x3 checkerboard at the bottom-right,
all-to-one to class 0), ``blind-pattern`` and ``blind-pixel`` (the compromised loss
:class:`~trustlab.attacks.backdoor.blind.BlindBackdoorLoss`: every batch gets a triggered copy
labelled 0, balanced with MGDA; the training data is never touched). Metrics: clean accuracy
(C-Acc), ASR and RA on the triggered test set (:mod:`trustlab.metrics.backdoor`).

Claim (methods.md, the part this issue can check): BadNets and the blind pattern and
single-pixel backdoors reach ASR >= 95% with C-Acc within 2 points of the clean model. The Neural
Cleanse part of the claim is checked by the backdoor-defenses issue.
"""

from __future__ import annotations

from typing import Any

import torch

from trustlab.attacks.backdoor import AllToOne, PatchTrigger, PixelTrigger, poison_dataset
from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.attacks.backdoor.blind import BlindBackdoorLoss
from trustlab.data import load_dataset
from trustlab.experiments.base import Claim, Experiment, Preset, ResultTable
from trustlab.models.spec import ModelSpec
from trustlab.train import Trainer, TrainSettings
from trustlab.utils.seed import derive_seed

MODELS = ("clean", "badnets", "blind-pattern", "blind-pixel")
TARGET = 0


def _asr_and_acc(t: ResultTable) -> tuple[bool, str]:
    clean = t.mean("clean_acc", model="clean")
    ok, parts = True, []
    for m in MODELS[1:]:
        asr, acc = t.mean("asr", model=m), t.mean("clean_acc", model=m)
        ok &= asr >= 0.95 - 1e-9 and acc >= clean - 0.02 - 1e-9
        parts.append(f"{m}: ASR {100 * asr:.1f}%, C-Acc {100 * acc:.1f}%")
    return ok, f"clean model C-Acc {100 * clean:.1f}%; " + "; ".join(parts)


class BlindReproduction(Experiment):
    name = "blind"
    title = "Blind backdoors through a compromised loss, against BadNets"
    paper = "Bagdasaryan, Shmatikov. Blind Backdoors in Deep Learning Models. USENIX Security 2021."
    keys = ("model",)
    metrics = ("clean_acc", "asr", "ra")
    percent = ("clean_acc", "asr", "ra")
    claims = (
        Claim(
            "asr-and-accuracy",
            "BadNets and the blind pattern and single-pixel backdoors reach ASR >= 95% with "
            "C-Acc within 2 points of the clean model",
            _asr_and_acc,
        ),
    )
    presets = {
        "smoke": Preset(
            "smoke",
            "digits",
            "cnn-small",
            seeds=1,
            train=dict(epochs=2, lr=0.05, batch_size=64),
            options={"rate": 0.1},
            description="seconds: cnn-small on digits, 2 epochs",
        ),
        "quick": Preset(
            "quick",
            "shapes10",
            "resnet8",
            seeds=1,
            train=dict(
                epochs=5, lr=0.05, batch_size=64, nesterov=True, warmup_epochs=1, augment="flip"
            ),
            options={"rate": 0.1},
            description="minutes on 2 CPU cores: ResNet-8 on shapes10, 5 epochs",
        ),
        "full": Preset(
            "full",
            "cifar10",
            "resnet18",
            seeds=1,
            train=dict(epochs=100, lr=0.1, batch_size=128, augment="crop-flip", schedule="step"),
            options={"rate": 0.1},
            description="CIFAR-10, ResNet-18 (the paper's image setting)",
        ),
    }

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"model": m} for m in MODELS]

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        root = preset.options.get("data_root")
        train = load_dataset(preset.dataset, "train", root=root)
        test = load_dataset(preset.dataset, "test", root=root)
        c = train.x.shape[1]
        kind = job["model"]
        torch.manual_seed(derive_seed(seed, "init"))  # the same initial weights for all four
        model = ModelSpec.for_data(preset.model, train).build()
        settings = TrainSettings(**{**preset.train, "seed": derive_seed(seed, "train")})
        policy = AllToOne(TARGET, train.num_classes)
        trigger = PixelTrigger(channels=c) if kind == "blind-pixel" else PatchTrigger(channels=c)
        compute_loss = None
        data = train
        if kind == "badnets":
            data = poison_dataset(train, trigger, policy, preset.options["rate"], seed=seed)
        elif kind.startswith("blind"):
            compute_loss = BlindBackdoorLoss(trigger, policy)
        Trainer(model, settings, compute_loss=compute_loss, device=device, progress=False).fit(data)
        return evaluate_backdoor(model, test, trigger, policy, device=device)
