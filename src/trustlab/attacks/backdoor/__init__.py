"""Backdoor attacks: triggers, label policies, the poisoner, and the recipes registered in
:data:`~trustlab.registry.BACKDOORS` (imported here in their catalogue order: ``badnets``,
``badnets-all2all``, ``pixel``, ``blend``, ``sig``, ``refool``, ``clean-label``, ``lc``,
``wanet``, ``iad``, ``blind``)."""

# the recipes register in BACKDOORS when imported: this import fixes the catalogue's order
from trustlab.attacks.backdoor import (  # noqa: F401, I001
    badnets,
    blend,
    sig,
    refool,
    clean_label,
    label_consistent,
    wanet,
    iad,
    blind,
)

from trustlab.attacks.backdoor.advtrojan import evaluate_advtrojan
from trustlab.attacks.backdoor.badnets import BadNets, BadNetsAllToAll, PixelBackdoor
from trustlab.attacks.backdoor.blend import BlendBackdoor
from trustlab.attacks.backdoor.blind import BlindBackdoor
from trustlab.attacks.backdoor.clean_label import CleanLabelBackdoor
from trustlab.attacks.backdoor.refool import RefoolBackdoor
from trustlab.attacks.backdoor.covert import BrightnessBand, evaluate_covert
from trustlab.attacks.backdoor.iad import InputAwareBackdoor, InputAwareTrigger
from trustlab.attacks.backdoor.label_consistent import CornersTrigger, LabelConsistentBackdoor
from trustlab.attacks.backdoor.sig import SIGBackdoor, SignalTrigger
from trustlab.attacks.backdoor.wanet import WaNet, WarpTrigger
from trustlab.attacks.backdoor.labels import AllToAll, AllToOne, CleanLabel, LabelPolicy
from trustlab.attacks.backdoor.poison import PoisonedDataset, poison_dataset
from trustlab.attacks.backdoor.recipe import BackdoorRecipe
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
    "AllToAll",
    "AllToOne",
    "BackdoorRecipe",
    "BadNets",
    "BadNetsAllToAll",
    "BlendBackdoor",
    "BlendTrigger",
    "BlindBackdoor",
    "BrightnessBand",
    "CleanLabel",
    "CleanLabelBackdoor",
    "CornersTrigger",
    "InputAwareBackdoor",
    "InputAwareTrigger",
    "LabelConsistentBackdoor",
    "LabelPolicy",
    "PatchTrigger",
    "PixelBackdoor",
    "PixelTrigger",
    "PoisonedDataset",
    "ReflectionTrigger",
    "RefoolBackdoor",
    "SIGBackdoor",
    "SemanticBackdoor",
    "SignalTrigger",
    "Trigger",
    "WaNet",
    "WarpTrigger",
    "evaluate_advtrojan",
    "evaluate_covert",
    "evaluate_semantic",
    "poison_dataset",
    "trigger_from_state",
]
