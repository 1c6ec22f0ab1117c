"""Reproductions ``blind`` and ``blind-variants``: Bagdasaryan & Shmatikov, "Blind Backdoors in
Deep Learning Models", USENIX Security 2021 (with BadNets, Gu et al. 2017, as the data-poisoning
reference).

``blind``: four models of the same architecture on the same data, each a job: ``clean`` (no
attack), ``badnets`` (10% of the training set poisoned with a 3x3 checkerboard at the
bottom-right, all-to-one to class 0), ``blind-pattern`` and ``blind-pixel`` (the compromised loss
:class:`~trustlab.attacks.backdoor.blind.BlindBackdoorLoss`: every batch gets a triggered copy
labelled 0, balanced with MGDA; the training data is never touched). Metrics: clean accuracy
(C-Acc), ASR and RA on the triggered test set (:mod:`trustlab.metrics.backdoor`). The blind jobs
run MGDA on ``loss+``-normalised gradients, the authors' configuration (backdoors101's
``mgda_normalize: loss+``; preset option ``normalize`` overrides it): with the library's default
``l2`` (equal weights) the main task trains at half its learning rate, which the 5-epoch quick
budget cannot afford (docs/backdoors.md has the measurements).

A fifth job, ``blind-nc-evasion``, trains the blind pattern backdoor with the third task of the
compromised loss, the Neural-Cleanse evasion loss
(:class:`~trustlab.attacks.backdoor.nc_evasion.NCEvasion`, the authors' schedule: one Adam step
of NC's optimisation for class 0 on every training batch, and inputs stamped with NC's current
trigger kept at their true labels, from the first batch). The ``badnets`` and
``blind-nc-evasion`` jobs then scan their model with
:class:`~trustlab.defenses.backdoor.NeuralCleanse` (the library's defaults: the authors'
schedule with its early stop; ``options["nc"]`` overrides them, e.g. the smoke preset's budgeted
2-epoch scan with lambda starting at 1e-3) on the clean test images: ``nc_anomaly`` is the
target class's anomaly index, ``nc_flagged`` the number of flagged classes,
``nc_target_flagged`` 1 if the target is among them.

Claims (methods.md): (1) BadNets and the blind pattern and single-pixel backdoors reach ASR >= 95%
with C-Acc within 2 points of the clean model; (2) Neural Cleanse flags the BadNets model (its
target class flagged, anomaly index > 2) but not the blind backdoor trained with the NC-evasion
loss (no class flagged), and that backdoor still works (ASR >= 95%, the bar of claim 1: an
ineffective backdoor would evade NC trivially).

Each part of a claim is one number per seed judged on its mean over seeds with the 95% bootstrap
interval (PASS when the whole interval is on the claimed side of the bar, FAIL when none of it
is, INCONCLUSIVE when it straddles the bar; one seed gives no interval and the value decides,
except for the ASRs, whose interval also covers the test images behind each rate, ``n_asr``),
and a claim passes when all its parts pass (FAIL if any part fails, else INCONCLUSIVE). Claim 1:
per backdoor, its ASR (>= 95%) and its C-Acc drop, the clean model's C-Acc minus its own on the
same seed (<= 2 points). Claim 2: for BadNets, whether NC flags its target (1 or 0 per seed; its
mean must be 1, so the target flagged in some seeds only is INCONCLUSIVE or FAIL) and its
target's anomaly index (> 2); for the evader, the number of classes NC flags (<= 0: none) and its
ASR (>= 95%).

``blind-variants`` (same presets, no claim: methods.md states none) measures the two other blind
variants against a clean model from the same initial weights, itself measured like each (rows
``clean/semantic`` and ``clean/covert``: what the metrics read without a backdoor):

- ``blind-semantic`` (:mod:`~trustlab.attacks.backdoor.semantic`; only on ``shapes10``, which
  records each image's background photograph): every image whose background is a crop of
  ``options["semantic_source"]`` (``hubble_deep_field``) should be classified as class 0, with
  no change to the input. The compromised loss mixes in the attacker's own feature images
  (``options["semantic_pool"]``, default 2,000, rendered with the public generator and a seed of
  the attacker's). ``asr`` is the fraction of natural feature-bearing test images of other
  classes classified as 0 (the backdoor accuracy), ``ra`` those still given their class,
  ``clean_acc`` the accuracy on the test images without the feature (``clean_acc_all``, on all
  of them, is in the stored rows).
- ``blind-covert`` (:mod:`~trustlab.attacks.backdoor.covert`): the pattern trigger switches the
  model to another task on the same inputs, the band of the image's mean brightness
  (:class:`~trustlab.attacks.backdoor.covert.BrightnessBand`, as many equal-width bands as
  classes). ``asr`` is the covert task's accuracy on the triggered test set, ``ra`` the
  fraction of triggered inputs still given their class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from trustlab.attacks.backdoor import BackdoorRecipe
from trustlab.attacks.backdoor.artifact import evaluate_backdoor
from trustlab.attacks.backdoor.covert import BrightnessBand, evaluate_covert
from trustlab.attacks.backdoor.nc_evasion import NCEvasion
from trustlab.attacks.backdoor.semantic import (
    SemanticBackdoor,
    evaluate_semantic,
    texture_feature_images,
)
from trustlab.data.datasets import ArrayDataset
from trustlab.data.synthetic import TEXTURE_SOURCES
from trustlab.defenses.backdoor.neural_cleanse import NeuralCleanse
from trustlab.errors import InputError
from trustlab.experiments.base import (
    Claim,
    Experiment,
    Preset,
    ResultTable,
    all_of,
    interval_check,
    noted,
    paired,
    register_experiment,
)
from trustlab.models.spec import ModelSpec
from trustlab.registry import BACKDOORS
from trustlab.train import Trainer, TrainSettings
from trustlab.utils.seed import derive_seed

CLAIMED = ("badnets", "blind-pattern", "blind-pixel")
EVADER = "blind-nc-evasion"
#: the rows of the table (its "model" key), in order
ROWS = ("clean", *CLAIMED, EVADER)
#: the models the reproduction scans with Neural Cleanse
NC_SCANNED = ("badnets", EVADER)
VARIANTS = ("clean", "blind-semantic", "blind-covert")
TARGET = 0
#: The semantic backdoor's natural feature on shapes10: backgrounds cropped from this photograph
#: (the most distinctive one: mean luma of its crops 0.14, the other twelve 0.32-0.59).
SEMANTIC_SOURCE = "hubble_deep_field"
#: each backdoored job's registered recipe (:data:`~trustlab.registry.BACKDOORS`) and its
#: parameters; ``clean`` has none. The blind variants add their hook to the recipe's loss.
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "badnets": ("badnets", {}),
    "blind-pattern": ("blind", {}),
    "blind-pixel": ("blind", {"pixel": True}),
    EVADER: ("blind", {}),
    "blind-covert": ("blind", {}),
    "blind-semantic": ("blind", {}),
}
#: MGDA's gradient normalisation in the blind jobs: ``loss+``, the authors' configuration
#: (backdoors101, ``mgda_normalize: loss+``); preset option ``normalize`` overrides it.
NORMALIZE = "loss+"


#: float slack of the claims' thresholds (an ASR of exactly 95% computed as 0.9499999...)
_TOL = 1e-9
#: the claims' bars: ASR, the largest C-Acc drop from the clean model, NC's anomaly index
ASR_BAR, ACC_DROP, ANOMALY_BAR = 0.95, 0.02, 2.0


def _acc_drop(model: str) -> Callable[[ResultTable], dict[int, float]]:
    """``{seed: C-Acc of the clean model - C-Acc of model}`` for the seeds that have both."""

    def values(t: ResultTable) -> dict[int, float]:
        return paired(t.per_seed("clean_acc", model="clean"), t.per_seed("clean_acc", model=model))

    return values


def _asr_check(model: str) -> Callable[[ResultTable], tuple[str, str]]:
    return interval_check(
        lambda t: t.per_seed("asr", model=model),
        ">=",
        ASR_BAR - _TOL,
        what=f"{model}: ASR",
        scale=100,
        unit="%",
        digits=1,
        # a rate on the test images not of the target class: its interval covers them too
        examples=lambda t: t.per_seed("n_asr", model=model),
    )


#: claim 1: for each claimed backdoor, ASR >= 95% and C-Acc drop from the clean model <= 2 points
_asr_and_acc = noted(
    all_of(
        *(
            part
            for m in CLAIMED
            for part in (
                _asr_check(m),
                interval_check(
                    _acc_drop(m),
                    "<=",
                    ACC_DROP + _TOL,
                    what=f"{m}: C-Acc drop from the clean model",
                    scale=100,
                    unit=" points",
                    digits=1,
                ),
            )
        )
    ),
    lambda t: f"clean model C-Acc {100 * t.mean('clean_acc', model='clean'):.1f}%",
    before=True,
)

#: claim 2: NC flags BadNets' target (index > 2) and no class of the evader, which keeps its ASR
_nc_evasion = noted(
    all_of(
        interval_check(
            lambda t: t.per_seed("nc_target_flagged", model="badnets"),
            ">=",
            1.0,
            what="BadNets: target flagged (1 yes, 0 no)",
        ),
        interval_check(
            lambda t: t.per_seed("nc_anomaly", model="badnets"),
            ">",
            ANOMALY_BAR,
            what="BadNets: target anomaly index",
        ),
        interval_check(
            lambda t: t.per_seed("nc_flagged", model=EVADER),
            "<=",
            0.0,
            what=f"{EVADER}: classes flagged",
        ),
        _asr_check(EVADER),
    ),
    lambda t: f"{EVADER}: target anomaly index {t.mean('nc_anomaly', model=EVADER):.2f}",
    before=True,
)


@register_experiment
class BlindReproduction(Experiment):
    """Reproduction ``blind``: the blind pattern and single-pixel backdoors of a compromised loss
    next to BadNets' data poisoning and a clean model, and Neural Cleanse against BadNets and the
    blind backdoor trained with the NC-evasion loss (see the module).

    Bagdasaryan & Shmatikov, "Blind Backdoors in Deep Learning Models", USENIX Security 2021
    (with BadNets, Gu et al. 2017, as the data-poisoning reference).

    Table keys ``model`` (``clean``, ``badnets``, ``blind-pattern``, ``blind-pixel``,
    ``blind-nc-evasion``); metrics ``clean_acc``, ``asr``, ``ra`` and Neural Cleanse's
    ``nc_anomaly``, ``nc_flagged``, ``nc_target_flagged`` (rows ``badnets`` and
    ``blind-nc-evasion`` only). Claims: BadNets and the blind pattern and single-pixel backdoors
    reach ASR >= 95% with C-Acc within 2 points of the clean model; Neural Cleanse flags the
    BadNets model (target anomaly index > 2) but no class of the NC-evading blind backdoor, which
    keeps ASR >= 95%; each part judged on its mean over seeds with its 95% interval (PASS,
    FAIL or INCONCLUSIVE). Presets: ``smoke`` (cnn-small on digits; seconds), ``quick`` (ResNet-8 on
    shapes10; minutes on 2 CPU cores), ``real`` (cnn-small on a subset of Fashion-MNIST),
    ``full`` (ResNet-18 on CIFAR-10, the paper's image setting).

    Example::

        rep = reproduce("blind", "smoke")  # trustlab.experiments.base.reproduce
        rep.passed
    """

    name = "blind"
    title = "Blind backdoors through a compromised loss, against BadNets"
    paper = "Bagdasaryan, Shmatikov. Blind Backdoors in Deep Learning Models. USENIX Security 2021."
    keys = ("model",)
    metrics = ("clean_acc", "asr", "ra", "nc_anomaly", "nc_flagged", "nc_target_flagged")
    percent = ("clean_acc", "asr", "ra")
    claims = (
        Claim(
            "asr-and-accuracy",
            "BadNets and the blind pattern and single-pixel backdoors reach ASR >= 95% with "
            "C-Acc within 2 points of the clean model",
            _asr_and_acc,
        ),
        Claim(
            "nc-evasion",
            "Neural Cleanse flags the BadNets model (target anomaly index > 2) but no class of "
            "the blind backdoor trained with the NC-evasion loss, which keeps ASR >= 95%",
            _nc_evasion,
        ),
    )
    presets = {
        "smoke": Preset(
            "smoke",
            "digits",
            "cnn-small",
            seeds=1,
            train=dict(epochs=2, lr=0.05, batch_size=64),
            options={"rate": 0.1, "nc": {"epochs": 2, "reset_cost_to_zero": False}},
            description="seconds: cnn-small on digits, 2 epochs, 2 epochs of NC",
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
            description="about 35 minutes on 2 CPU cores (most of it the two Neural Cleanse "
            "scans, run to convergence): ResNet-8 on shapes10, 5 epochs"
            "; 1 seed (the quick budget): the ASR's interval covers the test images only",
        ),
        "real": Preset(
            "real",
            "fashion-mnist",
            "cnn-small",
            seeds=1,
            train=dict(epochs=10, lr=0.05, batch_size=64, nesterov=True, warmup_epochs=1),
            options={"rate": 0.1, "train_size": 10000, "test_size": 2000},
            description="sized for under 30 minutes on 2 CPU cores: "
            "cnn-small on real Fashion-MNIST (a "
            "fixed stratified subset of 10,000 training and 2,000 test images), 10 epochs; 1 "
            "seed (the budget): the interval covers the test images only",
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
        # the longest first, so that two workers finish together (the table is in ROWS order)
        return [{"model": m} for m in (EVADER, "blind-pattern", "blind-pixel", "badnets", "clean")]

    def summarize(
        self, preset: Preset, rows: list[dict[str, Any]], device: torch.device
    ) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda r: (ROWS.index(r["model"]), r["seed"]))

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        kind = job["model"]
        model, test = self._train(preset, kind, seed, device)
        # the clean model is measured with BadNets' trigger and policy
        recipe, _ = _recipe(kind if kind in RECIPES else "badnets", preset)
        trigger = recipe.trigger(test, seed)
        if kind == "blind-covert":
            task = BrightnessBand(test.num_classes)
            return evaluate_covert(model, test, trigger, task, device=device)
        if kind == "blind-semantic":
            return evaluate_semantic(model, test, _feature(preset, test), TARGET, device=device)
        policy = recipe.policy(TARGET, test.num_classes)
        out = evaluate_backdoor(model, test, trigger, policy, device=device)
        out["n_asr"] = int((test.y != TARGET).sum())  # the test images behind the ASR
        if kind in NC_SCANNED:
            nc = NeuralCleanse(**preset.options.get("nc", {}), seed=derive_seed(seed, "nc"))
            report = nc.inspect(model, test)
            out["nc_anomaly"] = float(report.anomaly[TARGET])
            out["nc_flagged"] = float(len(report.flagged))
            out["nc_target_flagged"] = float(TARGET in report.flagged)
        return out

    def _train(
        self, preset: Preset, kind: str, seed: int, device: torch.device
    ) -> tuple[nn.Module, ArrayDataset]:
        """The trained model of job ``kind`` and the test set."""
        train = preset.load("train")
        test = preset.load("test")
        torch.manual_seed(derive_seed(seed, "init"))  # the same initial weights for all
        model = ModelSpec.for_data(preset.model, train).build()
        settings = TrainSettings(**{**preset.train, "seed": derive_seed(seed, "train")})
        compute_loss = None
        data = train
        if kind in RECIPES:
            recipe, injector = _recipe(kind, preset)
            trigger, policy = recipe.trigger(train, seed), recipe.policy(TARGET, train.num_classes)
            if injector == "data":
                data = recipe.poison(train, trigger, policy, preset.options["rate"], seed)
            elif kind == "blind-covert":  # the trigger switches to the brightness task
                task = BrightnessBand(train.num_classes)
                compute_loss = recipe.loss(trigger, None, backdoor_labels=task)
            elif kind == "blind-semantic":  # no trigger: a natural feature, relabelled
                _feature(preset, test)  # fail before training on a dataset without the record
                pool = texture_feature_images(
                    preset.options["semantic_source"],
                    int(preset.options.get("semantic_pool", 2000)),
                    derive_seed(seed, "pool"),
                )
                compute_loss = recipe.loss(None, None, synthesize=SemanticBackdoor(TARGET, pool))
            elif kind == EVADER:
                evasion = NCEvasion(TARGET, seed=derive_seed(seed, "ev"))
                compute_loss = recipe.loss(trigger, policy, evasion=evasion)
            else:
                compute_loss = recipe.loss(trigger, policy)
        Trainer(model, settings, compute_loss=compute_loss, device=device, progress=False).fit(data)
        return model, test


def _recipe(kind: str, preset: Preset) -> tuple[BackdoorRecipe, str]:
    """``(recipe, injector)`` of job ``kind`` (:data:`RECIPES`); the ``"loss"`` recipes run
    MGDA with the preset's normalisation (the authors' ``loss+`` unless it says otherwise; see
    docs/backdoors.md for l2 against loss+)."""
    name, params = RECIPES[kind]
    card = BACKDOORS.get(name)
    injector = card.meta["injector"]
    if injector == "loss":
        params = {**params, "normalize": preset.options.get("normalize", NORMALIZE)}
    return card.build(**params), injector


def _feature(preset: Preset, test: ArrayDataset) -> torch.Tensor:
    """The test images that carry the semantic feature (their background photograph)."""
    source = preset.options.get("semantic_source")
    if source not in TEXTURE_SOURCES or not hasattr(test, "texture"):
        raise InputError(
            f"the semantic backdoor needs shapes10 and one of {TEXTURE_SOURCES} as "
            f"semantic_source; got dataset {preset.dataset!r}, source {source!r}."
        )
    return test.texture == TEXTURE_SOURCES.index(source)


@register_experiment
class BlindVariantsReproduction(BlindReproduction):
    """The semantic and covert-task blind backdoors next to a clean model; see the module. The
    clean model is measured like each backdoored one (rows ``clean/semantic``,
    ``clean/covert``): what the backdoor metrics read without a backdoor.

    Table keys ``model`` (``blind-semantic``, ``blind-covert``, ``clean/semantic``,
    ``clean/covert``); metrics ``clean_acc``, ``asr``, ``ra``; no claim. Presets:
    :class:`BlindReproduction`'s; the semantic rows need shapes10 (``quick``).

    Example::

        rep = reproduce("blind-variants", "quick")  # trustlab.experiments.base.reproduce
        print(rep.table.to_markdown(percent=rep.table.metrics))
    """

    name = "blind-variants"
    title = "Semantic and covert-task blind backdoors"
    metrics = ("clean_acc", "asr", "ra")
    claims = ()
    presets = {
        k: replace(p, options={**p.options, "semantic_source": SEMANTIC_SOURCE})
        for k, p in BlindReproduction.presets.items()
    }

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"model": m} for m in VARIANTS if m != "blind-semantic" or _semantic(preset)]

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        if job["model"] != "clean":
            return super().run_job(preset, job, seed, device)
        model, test = self._train(preset, "clean", seed, device)
        trigger = _recipe("blind-covert", preset)[0].trigger(test, seed)  # as blind-covert
        task = BrightnessBand(test.num_classes)
        cov = evaluate_covert(model, test, trigger, task, device=device)
        out = {f"covert_{m}": v for m, v in cov.items()}
        if _semantic(preset):
            sem = evaluate_semantic(model, test, _feature(preset, test), TARGET, device=device)
            out.update({f"semantic_{m}": v for m, v in sem.items()})
        return out

    def summarize(
        self, preset: Preset, rows: list[dict[str, Any]], device: torch.device
    ) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            if row["model"] != "clean":
                out.append(row)
                continue
            for variant in ("semantic", "covert"):
                vals = {k[len(variant) + 1 :]: v for k, v in row.items() if k.startswith(variant)}
                if vals:
                    out.append({"model": f"clean/{variant}", "seed": row["seed"], **vals})
        return out


def _semantic(preset: Preset) -> bool:
    # the semantic backdoor needs a per-image record of the natural feature: shapes10's
    # background photograph
    return preset.dataset == "shapes10" and "semantic_source" in preset.options
