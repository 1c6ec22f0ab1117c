"""Reproduction ``advcam``: Duan, Ma, Wang, Bailey, Qin & Yang, "Adversarial Camouflage: Hiding
Physical-World Attacks with Natural Styles", CVPR 2020.

One job trains the victim (``preset.model`` on ``preset.dataset``) and leaves it in the run's work
folder. Then, on the first ``n`` correctly classified test points, with a central square region
(``region`` of the side) and a style exemplar from scikit-image's bundled photographs:

- ``pgd``: PGD-10 at L-inf 8/255 (the baseline of equal or higher success);
- ``advcam``: AdvCam with the paper's weights (style 100, content 5, TV 1e-3 on the authors'
  total variation in 0..255 units, adversarial 5e3), Adam at 1/255 per step, ``steps``
  iterations, untargeted;
- ``advcam-eot``: the same with expectation over the authors' random physical transformations
  (the image shrunk to 0.4-0.6 of the side, rotated within +-25 degrees, placed anywhere in the
  frame on a background photograph, brightness times [0.7, 1.3]; the backgrounds while crafting
  are :data:`~trustlab.attacks.evasion.advcam.DEFAULT_BACKGROUNDS`);
- ``clean``: the unchanged images, the baseline of how often the transformations alone fool the
  victim.

Metrics: ``success`` (misclassified as crafted), ``transformed_success`` (misclassified under
``draws`` random transformations each from the same family, on held-out background photographs
:data:`TEST_BACKGROUNDS`; the mean over draws; every method sees the same draws) and
``style_loss`` (Gram distance to the exemplar in the region, the victim's features).
``transformed_success_clean_correct`` is the success on the (image, draw) pairs whose
transformed clean image the victim still classifies correctly: a victim trained on full-frame
images often misclassifies an image shrunk to half the frame on a photograph whatever the attack
(the ``clean`` row says how often), and only this rate tells the attacks apart there.
The PNG ``advcam.png`` in the run folder shows originals, camouflaged examples and differences.

Claims (methods.md): AdvCam fools the victim at >= 80% success while its style loss to the
exemplar is far lower (trustlab reads "far" as at most half) than that of PGD examples; the EOT
variant keeps >= 60% success under random transformations.
Each is one number per seed judged on its mean over seeds with the 95% bootstrap interval (PASS
when the whole interval is on the claimed side of the bar, FAIL when none of it is, INCONCLUSIVE
when it straddles the bar; one seed gives no interval and the value decides): AdvCam's success
(>= 80%), the ratio of AdvCam's style loss to PGD's on the same seed (<= 0.5), AdvCam-EOT's
success under the random transformations (>= 60%).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from trustlab.attacks.evasion import PGD
from trustlab.attacks.evasion.advcam import (
    AdvCam,
    central_mask,
    photo_backgrounds,
    random_transform,
)
from trustlab.attacks.evasion.grid import save_grid
from trustlab.data.synthetic import bundled_image
from trustlab.experiments.base import (
    Claim,
    Experiment,
    Preset,
    ResultTable,
    interval_check,
    noted,
    paired,
    register_experiment,
    train_and_save,
)
from trustlab.train.checkpoint import load_model
from trustlab.utils.seed import derive_seed, generator

METHODS = ("clean", "pgd", "advcam", "advcam-eot")

#: Bundled photographs the examples are pasted on when tested under transformations: none is
#: among the crafting backgrounds (``DEFAULT_BACKGROUNDS``) or the style presets.
TEST_BACKGROUNDS = ("gravel", "moon", "coins", "clock", "immunohistochemistry", "hubble_deep_field")


#: float slack of the success bars (a success of exactly 80% computed as 0.7999999...)
_TOL = 1e-9


def _style_ratio(t: ResultTable) -> dict[int, float]:
    """``{seed: AdvCam's style loss / PGD's}`` for the seeds that have both (NaN where PGD's is
    0)."""
    cam, pgd = t.per_seed("style_loss", method="advcam"), t.per_seed("style_loss", method="pgd")
    return paired(cam, pgd, lambda c, p: c / p if p else math.nan)


_success = interval_check(
    lambda t: t.per_seed("success", method="advcam"),
    ">=",
    0.8 - _TOL,
    what="AdvCam success",
    scale=100,
    unit="%",
    digits=1,
)
_style = noted(
    interval_check(_style_ratio, "<=", 0.5, what="style loss AdvCam / PGD"),
    lambda t: (
        f"style loss AdvCam {t.mean('style_loss', method='advcam'):.3g} vs PGD "
        f"{t.mean('style_loss', method='pgd'):.3g}, PGD success "
        f"{100 * t.mean('success', method='pgd'):.1f}% (means over seeds)"
    ),
)


def _eot_note(t: ResultTable) -> str:
    """The baselines of the EOT claim: AdvCam without EOT and the clean images under the same
    transformations, and both attacks where the transformation alone leaves the image correct."""

    def pct(metric: str, method: str) -> str:
        vals = t.per_seed(metric, method=method)
        return f"{100 * sum(vals.values()) / len(vals):.1f}%" if vals else "n/a"

    kept = "transformed_success_clean_correct"
    return (
        f"AdvCam without EOT {pct('transformed_success', 'advcam')}, clean images "
        f"{pct('transformed_success', 'clean')}; where the transformed clean image is still "
        f"classified correctly: AdvCam-EOT {pct(kept, 'advcam-eot')}, AdvCam "
        f"{pct(kept, 'advcam')} (means over seeds)"
    )


_eot = noted(
    interval_check(
        lambda t: t.per_seed("transformed_success", method="advcam-eot"),
        ">=",
        0.6 - _TOL,
        what="AdvCam-EOT success under random transformations",
        scale=100,
        unit="%",
        digits=1,
    ),
    _eot_note,
)


def transformed_success(
    model: torch.nn.Module,
    examples: dict[str, torch.Tensor],
    y: torch.Tensor,
    scenes: torch.Tensor,
    draws: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Per method of ``examples`` (which must hold ``"clean"``, the unchanged images): the
    success under ``draws`` random transformations of the authors' family on ``scenes``
    (``transformed_success``), and the success on the (image, draw) pairs whose transformed
    clean image the victim still classifies correctly (``transformed_success_clean_correct``,
    NaN when there is none). Every method sees the same draws."""
    hits: dict[str, list[torch.Tensor]] = {}
    for method, adv in examples.items():
        gen = generator(derive_seed(seed, "draws"))  # the same draws for every method
        with torch.no_grad():
            hits[method] = [
                model(random_transform(adv, gen, background=scenes)).argmax(1) != y
                for _ in range(draws)
            ]
    kept = ~torch.stack(hits["clean"])  # (draws, N): the transformation alone does not fool
    out = {}
    for method, h in hits.items():
        wrong = torch.stack(h)
        out[method] = {
            "transformed_success": float(wrong.float().mean()),
            "transformed_success_clean_correct": (
                float((wrong & kept).sum() / kept.sum()) if kept.any() else math.nan
            ),
        }
    return out


@register_experiment
class AdvCamReproduction(Experiment):
    """Reproduction ``advcam``: AdvCam's camouflaged examples against PGD's, their success (also
    under physical transformations) and their style loss (see the module).

    Duan, Ma, Wang, Bailey, Qin & Yang, "Adversarial Camouflage: Hiding Physical-World Attacks
    with Natural Styles", CVPR 2020.

    Presets: ``smoke`` (seconds, in the test suite), ``quick`` (minutes on CPU), ``full``. Table
    keys ``method`` (``clean``, ``pgd``, ``advcam``, ``advcam-eot``); metrics ``success``,
    ``transformed_success``, ``transformed_success_clean_correct``, ``style_loss``.

    Example::

        trustlab reproduce advcam --preset smoke
        reproduce("advcam", "smoke")  # trustlab.experiments.base.reproduce
    """

    name = "advcam"
    title = "Adversarial camouflage with natural styles"
    paper = (
        "Duan, Ma, Wang, Bailey, Qin, Yang. Adversarial Camouflage: Hiding Physical-World "
        "Attacks with Natural Styles. CVPR 2020."
    )
    keys = ("method",)
    metrics = ("success", "transformed_success", "transformed_success_clean_correct", "style_loss")
    percent = ("success", "transformed_success", "transformed_success_clean_correct")
    claims = (
        Claim("success", "AdvCam fools the victim at >= 80% success", _success),
        Claim(
            "style",
            "AdvCam's style loss to the exemplar is far lower (<= half) than PGD's",
            _style,
        ),
        Claim("eot", "the EOT variant keeps >= 60% success under random transformations", _eot),
    )
    presets = {
        "smoke": Preset(
            "smoke",
            "digits",
            "resnet8",
            seeds=1,
            train=dict(epochs=1, lr=0.05, batch_size=64),
            options={"n": 16, "steps": 20, "style": "chelsea", "region": 0.6, "draws": 2},
            description="seconds: a 1-epoch ResNet-8 on digits (grey style), 16 images, 20 steps",
        ),
        "quick": Preset(
            "quick",
            "shapes10",
            "resnet8",
            seeds=1,
            train=dict(
                epochs=5, lr=0.05, batch_size=64, nesterov=True, warmup_epochs=1, augment="flip"
            ),
            options={"n": 100, "steps": 300, "style": "chelsea", "region": 0.6, "draws": 10},
            description="minutes on 2 CPU cores: ResNet-8 on shapes10, 100 images, 300 steps"
            "; 1 seed (the quick budget): its verdicts carry no interval",
        ),
        "full": Preset(
            "full",
            "cifar10",
            "resnet20",
            seeds=1,
            train=dict(epochs=100, lr=0.1, batch_size=128, augment="crop-flip", schedule="step"),
            options={"n": 1000, "steps": 2000, "style": "chelsea", "region": 0.6, "draws": 20},
            description="CIFAR-10, ResNet-20, 1000 images, 2000 steps",
        ),
    }

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        return [{"model": "victim"}]

    def check(self, preset: Preset) -> None:
        super().check(preset)
        bundled_image(preset.options["style"])

    def _path(self, seed: int) -> Path:
        return self.work_path(f"victim-seed{seed}.safetensors")

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        train = preset.load("train")
        test = preset.load("test")
        acc = train_and_save(preset, preset.model, train, test, seed, device, self._path(seed))
        return {"clean_acc": acc}

    def summarize(
        self, preset: Preset, rows: list[dict[str, Any]], device: torch.device
    ) -> list[dict[str, Any]]:
        o = preset.options
        test = preset.load("test")
        out = []
        for seed in sorted({r["seed"] for r in rows}):
            model = load_model(self._path(seed), device=device).eval()
            with torch.no_grad():
                pred = torch.cat([model(b.to(device)).argmax(1).cpu() for b in test.x.split(512)])
            keep = torch.nonzero(pred == test.y).flatten()[: o["n"]]
            x, y = test.x[keep].to(device), test.y[keep].to(device)
            mask = central_mask(tuple(x.shape[-2:]), o["region"])
            style = bundled_image(o["style"])
            cam = AdvCam(model, style, mask=mask, steps=o["steps"], seed=seed)
            eot = AdvCam(model, style, mask=mask, steps=o["steps"], eot=True, seed=seed)
            scenes = photo_backgrounds(TEST_BACKGROUNDS, tuple(x.shape[-2:]), x.shape[1])
            examples = {
                "clean": x,
                "pgd": PGD(model, 8 / 255, 2 / 255, 10, seed=seed)(x, y),
                "advcam": cam(x, y),
                "advcam-eot": eot(x, y),
            }
            moved = transformed_success(model, examples, y, scenes, o["draws"], seed)
            for method, adv in examples.items():
                with torch.no_grad():
                    success = float((model(adv).argmax(1) != y).float().mean())
                out.append(
                    {
                        "method": method,
                        "seed": seed,
                        "success": success,
                        **moved[method],
                        "style_loss": float(cam.style_loss(adv).mean()),
                    }
                )
            k = min(8, len(x))
            labels = ("original", "camouflaged")
            save_grid(self.workdir.parent / "advcam.png", x[:k], examples["advcam"][:k],
                      labels=labels, title="AdvCam")  # fmt: skip
            save_grid(self.workdir.parent / "advcam-eot.png", x[:k], examples["advcam-eot"][:k],
                      labels=labels, title="AdvCam + EOT")  # fmt: skip
        return out
