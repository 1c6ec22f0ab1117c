"""Backdoor attacks: triggers, label policies, the poisoner (issue 7, in progress)."""

from trustlab.attacks.backdoor.advtrojan import AdvTrojanTraining, evaluate_advtrojan
from trustlab.attacks.backdoor.covert import BrightnessBand, evaluate_covert
from trustlab.attacks.backdoor.labels import AllToAll, AllToOne, CleanLabel, LabelPolicy
from trustlab.attacks.backdoor.poison import PoisonedDataset, poison_dataset
from trustlab.attacks.backdoor.semantic import SemanticBackdoor, evaluate_semantic
from trustlab.attacks.backdoor.triggers import (
    BlendTrigger,
    PatchTrigger,
    PixelTrigger,
    ReflectionTrigger,
    Trigger,
    trigger_from_state,
)

__all__ = [
    "AdvTrojanTraining",
    "AllToAll",
    "AllToOne",
    "BlendTrigger",
    "BrightnessBand",
    "CleanLabel",
    "LabelPolicy",
    "PatchTrigger",
    "PixelTrigger",
    "PoisonedDataset",
    "ReflectionTrigger",
    "SemanticBackdoor",
    "Trigger",
    "evaluate_advtrojan",
    "evaluate_covert",
    "evaluate_semantic",
    "poison_dataset",
    "trigger_from_state",
]
