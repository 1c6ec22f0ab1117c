"""What the clean-label backdoor reproductions (``refool``, ``video-backdoor``) share: the
chosen trigger's ASR on the clean model, measured in ``summarize`` once both jobs are done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trustlab.attacks.backdoor import CleanLabel
from trustlab.attacks.backdoor.artifact import evaluate_backdoor, load_trigger
from trustlab.experiments.base import Experiment, Preset
from trustlab.train.checkpoint import load_model


def clean_model_path(exp: Experiment, seed: int) -> Path:
    return exp.work_path(f"clean-seed{seed}.safetensors")


def trigger_path(exp: Experiment, seed: int) -> Path:
    return exp.work_path(f"trigger-seed{seed}.safetensors")


def add_natural_asr(
    exp: Experiment,
    preset: Preset,
    rows: list[dict[str, Any]],
    device: torch.device,
    target: int,
) -> list[dict[str, Any]]:
    """Rows with the ``clean`` model's ASR and RA under the attack's trigger (how often the
    trigger alone, without poisoning, sends inputs to the target)."""
    test = preset.load("test")
    policy = CleanLabel(target, test.num_classes)
    out = []
    for row in rows:
        row = dict(row)
        if row["model"] == "clean":
            model = load_model(clean_model_path(exp, row["seed"]), device=device)
            trigger = load_trigger(trigger_path(exp, row["seed"]))
            m = evaluate_backdoor(model, test, trigger, policy, device=device)
            row.update(asr=m["asr"], ra=m["ra"])
        out.append(row)
    return out
