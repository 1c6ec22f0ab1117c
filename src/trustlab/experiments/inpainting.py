"""Reproduction ``lid-inpainting``: do the iLID and pLID regularisers improve GAN inpainting?

Paper: Li, Qi, Zhang, Ma, Ramamohanarao, "Generative Image Inpainting with Submanifold
Alignment", IJCAI 2019 (arXiv:1908.00211); the method is :mod:`trustlab.generative.inpainting`
(its docstring and ``docs/inpainting.md`` say where trustlab had to choose).

One job per variant and seed: the same inpainting model, data, masks and seed trained with no
regulariser (``none``), with iLID only, with pLID only and with both (weights from the preset's
``lambda``), then evaluated on the test split with centred holes of a quarter of the image.
Every variant of a seed uses the same fixed feature extractor (trained from that seed), so the
LID gap of all four is measured in one feature space. Each job leaves its masked / restored /
original grid in the run's ``work/`` folder (``<variant>-seed<k>.png``).

Metrics per row: ``psnr`` (dB), ``ssim``, ``l1_hole`` (mean absolute error in the hole),
``lid_gap`` (|mean LID of the restored images' features - mean LID of the originals'|, both
against the originals in minibatches of 64), ``lid_restored``, ``lid_original``, and the last
epoch's training ``rec`` loss.

Claims (methods.md): with both regularisers (1) PSNR and (2) SSIM are higher than without, and
(3) the LID gap is smaller, each judged on the paired difference ``both - none`` per seed: its
mean over seeds and 95% bootstrap interval, PASS when the whole interval is on the claimed side
of 0, FAIL when none of it is, INCONCLUSIVE otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trustlab.experiments.base import (
    Claim,
    Experiment,
    Preset,
    ResultTable,
    interval_check,
    paired,
    register_experiment,
)
from trustlab.generative.inpainting import (
    InpaintSettings,
    check_batch,
    check_setup,
    parse_settings,
    train_inpainter,
)
from trustlab.workflows.inpaint import spread

#: the four models compared
VARIANTS = ("none", "ilid", "plid", "both")


def _paired(metric: str) -> Callable[[ResultTable], dict[int, float]]:
    """``{seed: both - none}`` of ``metric`` for the seeds that have both variants."""

    def values(t: ResultTable) -> dict[int, float]:
        return paired(t.per_seed(metric, variant="both"), t.per_seed(metric, variant="none"))

    return values


@register_experiment
class LIDInpaintingReproduction(Experiment):
    """iLID and pLID regularisers on a GAN inpainting model (module docstring).

    Li et al., IJCAI 2019 (arXiv:1908.00211). Rows: one per variant (``none``, ``ilid``,
    ``plid``, ``both``); options of a preset: ``lambda`` (the weight of each regulariser when it
    is on) and any :class:`~trustlab.generative.inpainting.InpaintSettings` field (except the
    regularisers' weights; ``extractor`` comes from the preset's model).

    Example::

        trustlab reproduce lid-inpainting --preset quick
    """

    name = "lid-inpainting"
    title = "LID-regularised GAN inpainting (iLID and pLID submanifold alignment)"
    paper = (
        "Li, Qi, Zhang, Ma, Ramamohanarao. Generative Image Inpainting with Submanifold "
        "Alignment. IJCAI 2019."
    )
    keys = ("variant",)
    metrics = ("psnr", "ssim", "l1_hole", "lid_gap", "lid_restored", "lid_original", "rec")
    percent = ()
    claims = (
        Claim(
            "psnr",
            "PSNR with both regularisers > without",
            interval_check(_paired("psnr"), ">", 0.0, what="PSNR both - none", unit=" dB"),
        ),
        Claim(
            "ssim",
            "SSIM with both regularisers > without",
            interval_check(_paired("ssim"), ">", 0.0, what="SSIM both - none", digits=3),
        ),
        Claim(
            "lid-gap",
            "LID gap between restored and original features smaller with both regularisers",
            interval_check(_paired("lid_gap"), "<", 0.0, what="LID gap both - none"),
        ),
    )
    presets = {
        "smoke": Preset(
            "smoke",
            "lfw-faces",
            "cnn-small",
            seeds=1,
            options={
                "lambda": 0.001,
                "epochs": 1,
                "batch_size": 16,
                "width": 4,
                "k": 5,
                "extractor_epochs": 0,
            },  # fmt: skip
            description="seconds: 80 LFW faces (24x24 grey), 1 epoch of a width-4 model, "
            "random fixed extractor; checks that the pipeline runs, its verdicts mean nothing",
        ),
        "quick": Preset(
            "quick",
            "photo-patches",
            "cnn-small",
            seeds=2,
            options={"lambda": 0.001, "epochs": 3, "width": 16, "extractor_epochs": 1},
            description="minutes on 2 CPU cores: 9,553 photo patches (32x32), 3 epochs of a "
            "width-16 model per variant, a cnn-small extractor trained 1 epoch, 2 seeds (the "
            "budget allows no third)",
        ),
        "full": Preset(
            "full",
            "photo-patches",
            "cnn-small",
            seeds=3,
            options={"lambda": 0.001, "epochs": 40, "width": 32, "extractor_epochs": 5},
            description="hours on a CPU: 40 epochs of the width-32 model, 3 seeds",
        ),
    }

    def settings(self, preset: Preset, variant: str) -> InpaintSettings:
        opts = {k: v for k, v in preset.options.items() if k not in ("data_root", "lambda")}
        lam = float(preset.options.get("lambda", 0.001))
        return parse_settings(
            {
                **opts,
                "extractor": preset.model,
                "lambda_ilid": lam if variant in ("ilid", "both") else 0.0,
                "lambda_plid": lam if variant in ("plid", "both") else 0.0,
            }
        )

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"variant": v} for v in VARIANTS]

    def check(self, preset: Preset) -> None:
        train = preset.load("train")
        check_batch(preset.load("test").x, train.x.shape[1:])
        for v in VARIANTS:
            check_setup(self.settings(preset, v), train)

    def describe(self, preset: Preset) -> dict[str, Any]:
        return {v: self.settings(preset, v).model_dump(mode="json") for v in VARIANTS}

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        s = self.settings(preset, job["variant"])
        train, test = preset.load("train"), preset.load("test")
        inp = train_inpainter(train, s, seed=seed, device=device, progress=False)
        ev = inp.evaluate(test.x)
        if self.workdir is not None:
            inp.save_grid(
                self.work_path(f"{job['variant']}-seed{seed}.png"),
                spread(test.x, 8),
                title=f"{job['variant']} (seed {seed})",
            )
        return {
            "psnr": ev["psnr"],
            "ssim": ev["ssim"],
            "l1_hole": ev["l1_hole"],
            "lid_gap": ev["lid_gap"],
            "lid_restored": ev["lid_restored"],
            "lid_original": ev["lid_original"],
            "rec": inp.history[-1]["rec"],
        }


__all__ = ["VARIANTS", "LIDInpaintingReproduction"]
