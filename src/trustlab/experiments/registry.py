"""Registers every reproduction in :data:`trustlab.registry.EXPERIMENTS` (imported lazily)."""

from __future__ import annotations

from trustlab.experiments.advtrojan import AdvTrojanReproduction
from trustlab.experiments.backdoors import BlindReproduction, BlindVariantsReproduction
from trustlab.experiments.bench_backdoor import BackdoorBench
from trustlab.experiments.camouflage import AdvCamReproduction
from trustlab.experiments.imbalanced_gradients import MDReproduction
from trustlab.experiments.medical import MedicalReproduction
from trustlab.experiments.meminf import MembershipInferenceJEM
from trustlab.experiments.noisy_labels import APLReproduction, SCEReproduction
from trustlab.experiments.refool import RefoolReproduction
from trustlab.experiments.transferability import SGMReproduction
from trustlab.experiments.video_backdoor import VideoBackdoorReproduction
from trustlab.registry import EXPERIMENTS

for _cls in (
    APLReproduction,
    SCEReproduction,
    MDReproduction,
    SGMReproduction,
    AdvCamReproduction,
    MedicalReproduction,
    BlindReproduction,
    BlindVariantsReproduction,
    RefoolReproduction,
    VideoBackdoorReproduction,
    AdvTrojanReproduction,
    BackdoorBench,
    MembershipInferenceJEM,
):
    if _cls.name not in EXPERIMENTS:
        EXPERIMENTS.register(_cls.name, _cls.title, paper=_cls.paper)(_cls)
