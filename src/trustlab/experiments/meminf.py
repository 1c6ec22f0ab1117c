"""Reproduction ``meminf-jem``: membership inference against an overfit target, and two defenses.

Papers: Carlini et al., "Membership Inference Attacks From First Principles" (S&P 2022, LiRA);
Yeom et al. (CSF 2018, the loss-threshold attack); Chen et al., "Protect Privacy of Deep
Classification Networks by Exploiting Their Generative Power" (Machine Learning 2021, the JEM
defense, :mod:`trustlab.defenses.privacy.jem`); Abadi et al. (CCS 2016, DP-SGD through Opacus,
:mod:`trustlab.train.dp`).

Setting (the LiRA paper's): a *population* of ``options["population"]`` examples drawn (seeded)
from the training split; the target trains on a random half of it (the members), the other half
are the non-members, and every attack scores the whole population. The target's recipe is the
preset's ``train`` (no augmentation, no weight decay: an overfit target). Three jobs, each a row:

- ``undefended``: the target. Attacks: the loss threshold (``-CE``, Yeom et al.), the
  confidence threshold (``log max_j p_j``), the label-only noise attack (Choquette-Choo et al.,
  ICML 2021: how often the predicted label survives Gaussian noise; ``options["attack_options"]
  ["label-only"]`` sets its budget), LiRA online with ``options["shadows"]`` shadow models
  trained by the target's recipe on balanced random halves of the population (cached in the
  results store, so a resumed run does not retrain them), and RMIA online (Zarifzadeh et al.,
  ICML 2024) with those same shadows as its reference models and the whole population as its
  samples ``z`` (the authors take the target's non-members; that would hand the attack the
  membership labels here, where members and non-members share one population).
- ``jem``: the same target (same seed, bit-identical), defended by :class:`~trustlab.defenses.
  privacy.jem.JEMDefense` with the library's defaults (JEM fine-tuning, a class-conditional
  synthetic set as large as the private set, a fresh network retrained on it alone with the authors'
  recipe, Adam at 1e-4 for 50 epochs), except that the quick, real and full presets fine-tune for
  the authors' 50 epochs (``options["jem_finetune_epochs"]``; the library's default is 10, a CPU
  budget), and that the quick and real presets warm the fine-tuning lr up over 11 steps: the
  authors' recipe warms up over 1,000 of its 35,150 steps (45,000 CIFAR-10 images, batch 64, 50
  epochs), 2.8%, and 2.8% of these presets' 400 steps (500 members, batch 64, 50 epochs) is 11;
  their absolute 1,000 steps would keep the lr below 40% of its peak for the whole run.
- ``dp-sgd``: the target's recipe trained with DP-SGD at ``options["epsilon"]`` (8, delta 1e-5,
  C 1.0, Opacus' RDP accountant); the row records the epsilon actually spent.

Metrics per row: ``test_acc`` (the test split), ``train_acc`` (the members), and for each
attack ``<attack>_auc``, ``<attack>_tpr_at_1fpr``, ``<attack>_tpr_at_01fpr``,
``<attack>_advantage`` (:func:`~trustlab.metrics.privacy.membership_metrics`). ``advantage`` is
the membership advantage of the strongest threshold attack (the larger of loss and confidence):
the attacks that need no shadow models, so every row is measured alike; ``advantage_chance`` is
what it reads with the member labels shuffled (mean of 50), the floor of a maximum over
thresholds on finite sets, reported next to it. (LiRA against a defended
model would need shadows trained through the defense itself, sixteen JEM pipelines; it is not
run on the defended rows; the threshold and label-only attacks are.)

Claims (methods.md): (1) on the overfit target, LiRA's TPR at 1% FPR exceeds the loss-threshold
attack's; (2) the JEM defense cuts the membership advantage by >= 50% relative to the undefended
model while losing <= 10 points of test accuracy; (3) DP-SGD at epsilon <= 8 also cuts it (a
lower advantage than the undefended model's), with its epsilon reported; (4) with the same
shadow models, RMIA's TPR at 1% FPR exceeds LiRA's (Zarifzadeh et al.'s headline: RMIA beats
LiRA, most of all with few reference models).

Each is judged on one number per seed (the rows of a seed share its population and members),
by its mean over seeds and 95% bootstrap interval: PASS when the whole interval is on the
claimed side of the threshold, FAIL when none of it is, INCONCLUSIVE when it straddles it (one
seed: no interval, the verdict is on the value). (1) LiRA's TPR at 1% FPR minus the loss
attack's, > 0. (2) Both of: the relative cut ``1 - advantage(jem) / advantage(undefended)``,
>= 50% (a seed whose undefended advantage is 0 counts as no cut), and the test accuracy lost,
``test_acc(undefended) - test_acc(jem)``, <= 10 points. (3) Both of: the advantage undefended
minus DP-SGD, > 0, and every seed's spent epsilon <= 8; the epsilon is the accountant's bound
on each model, not a noisy estimate, so it is checked on the largest over seeds, without an
interval. (4) RMIA's TPR at 1% FPR minus LiRA's, > 0.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from trustlab.data.datasets import ArrayDataset
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
from trustlab.registry import PRIVACY_ATTACKS
from trustlab.train import TrainSettings
from trustlab.train.evaluate import evaluate
from trustlab.utils.seed import derive_seed, generator

#: the rows of the table (its "model" key), in order
ROWS = ("undefended", "jem", "dp-sgd")
#: the attacks the table reports (registered names, :data:`~trustlab.registry.PRIVACY_ATTACKS`):
#: the threshold and label-only attacks on every row, the shadow attacks (LiRA, and RMIA on
#: LiRA's shadows) on the undefended target only
REPORTED_ATTACKS = ("loss", "confidence", "label-only", "lira", "rmia")
MEASURES = ("auc", "tpr_at_1fpr", "tpr_at_01fpr", "advantage")


def _lira_gain(t: ResultTable) -> dict[int, float]:
    """Per seed, on the undefended target: LiRA's TPR at 1% FPR - the loss threshold's."""
    return paired(
        t.per_seed("lira_tpr_at_1fpr", model="undefended"),
        t.per_seed("loss_tpr_at_1fpr", model="undefended"),
    )


def _lira_context(t: ResultTable) -> str:
    return (
        f"means: TPR at 1% FPR {100 * t.mean('lira_tpr_at_1fpr', model='undefended'):.1f}% "
        f"(LiRA) vs {100 * t.mean('loss_tpr_at_1fpr', model='undefended'):.1f}% (loss "
        f"threshold); AUC {t.mean('lira_auc', model='undefended'):.3f} vs "
        f"{t.mean('loss_auc', model='undefended'):.3f}"
    )


def _rmia_gain(t: ResultTable) -> dict[int, float]:
    """Per seed, on the undefended target: RMIA's TPR at 1% FPR - LiRA's (same shadows)."""
    return paired(
        t.per_seed("rmia_tpr_at_1fpr", model="undefended"),
        t.per_seed("lira_tpr_at_1fpr", model="undefended"),
    )


def _rmia_context(t: ResultTable) -> str:
    return (
        f"means: TPR at 1% FPR {100 * t.mean('rmia_tpr_at_1fpr', model='undefended'):.1f}% "
        f"(RMIA) vs {100 * t.mean('lira_tpr_at_1fpr', model='undefended'):.1f}% (LiRA); AUC "
        f"{t.mean('rmia_auc', model='undefended'):.3f} vs "
        f"{t.mean('lira_auc', model='undefended'):.3f}; label-only AUC "
        + ", ".join(
            f"{m} {t.mean('label-only_auc', model=m):.3f}" for m in ("undefended", "jem", "dp-sgd")
        )
    )


def _cut(base: float, defended: float) -> float:
    """The relative cut of the membership advantage, ``1 - defended / base``; an undefended
    advantage of 0 leaves nothing to cut and counts as no cut (0)."""
    return 1 - defended / base if base > 0 else 0.0


def _undefended_vs(t: ResultTable, metric: str, model: str) -> tuple[dict, dict]:
    return t.per_seed(metric, model="undefended"), t.per_seed(metric, model=model)


def _jem_cut(t: ResultTable) -> dict[int, float]:
    return paired(*_undefended_vs(t, "advantage", "jem"), _cut)


def _jem_acc_loss(t: ResultTable) -> dict[int, float]:
    return paired(*_undefended_vs(t, "test_acc", "jem"))


def _jem_context(t: ResultTable) -> str:
    return (
        f"means: advantage {t.mean('advantage', model='undefended'):.3f} -> "
        f"{t.mean('advantage', model='jem'):.3f}, test accuracy "
        f"{100 * t.mean('test_acc', model='undefended'):.1f}% -> "
        f"{100 * t.mean('test_acc', model='jem'):.1f}%"
    )


def _dp_gain(t: ResultTable) -> dict[int, float]:
    """Per seed: the undefended target's advantage - the DP-SGD model's (> 0: a cut)."""
    return paired(*_undefended_vs(t, "advantage", "dp-sgd"))


def _dp_epsilon(t: ResultTable) -> tuple[bool, str]:
    """Every DP-SGD model's spent epsilon <= 8: a bound the accountant guarantees for each
    model, not a noisy measurement, so it is checked on the largest over seeds (no interval)."""
    eps = t.per_seed("epsilon", model="dp-sgd")
    delta = t.per_seed("delta", model="dp-sgd")
    if not eps:
        return False, "DP-SGD: no epsilon recorded"
    top = max(eps.values())
    per = "/".join(f"{eps[k]:.2f}" for k in sorted(eps))
    return top <= 8 + 1e-6, (
        f"DP-SGD epsilon {per} per seed (largest {top:.2f}, needs <= 8), "
        f"delta {max(delta.values()) if delta else float('nan'):g}"
    )


def _dp_context(t: ResultTable) -> str:
    return (
        f"means: advantage {t.mean('advantage', model='undefended'):.3f} -> "
        f"{t.mean('advantage', model='dp-sgd'):.3f}, test accuracy "
        f"{100 * t.mean('test_acc', model='undefended'):.1f}% -> "
        f"{100 * t.mean('test_acc', model='dp-sgd'):.1f}%"
    )


def _chance_advantage(scores: list[torch.Tensor], members: torch.Tensor, seed: int) -> float:
    """What ``advantage`` reads with no membership signal: its mean over 50 shuffles of the
    member labels (the best threshold of the best attack, found on the same examples, is
    biased upwards; on 500 + 500 examples this floor is ~0.04-0.05)."""
    from trustlab.metrics.privacy import membership_advantage

    g = generator(seed)
    vals = []
    for _ in range(50):
        perm = members[torch.randperm(len(members), generator=g)]
        vals.append(max(membership_advantage(s, perm) for s in scores))
    return float(sum(vals) / len(vals))


_QUICK = Preset(
    "quick",
    "digits",
    "cnn-small",
    seeds=3,
    train=dict(epochs=30, lr=0.05, batch_size=32, weight_decay=0.0),
    options={
        "population": 1000,
        "shadows": 16,
        "epsilon": 8.0,
        "jem_finetune_epochs": 50,
        "jem": {"warmup_iters": 11},  # the authors' 2.8% of fine-tuning steps
        # 25 noisy queries per sigma (the authors' 9 sigmas; their 2,500 per sigma is hours)
        "attack_options": {"label-only": {"samples": 25}},
    },
    description="minutes on 2 CPU cores: cnn-small on 1,000 digits (500 members), 30 "
    "epochs, 16 LiRA shadows, JEM (the authors' 50 fine-tuning epochs, lr warm-up over "
    "their 2.8% of the steps) and DP-SGD at epsilon 8; 3 seeds",
)


@register_experiment
class MembershipInferenceJEM(Experiment):
    """Membership inference against an overfit target and two defenses (module docstring).

    Carlini et al. (LiRA, S&P 2022), Yeom et al. (CSF 2018), Chen et al. (the JEM defense,
    Machine Learning 2021), Abadi et al. (DP-SGD, CCS 2016). Rows ``undefended``, ``jem``,
    ``dp-sgd``; the attacks of :data:`REPORTED_ATTACKS` come from
    :data:`~trustlab.registry.PRIVACY_ATTACKS`. Options of a preset: ``population``,
    ``shadows``, ``epsilon``, ``jem`` (:class:`~trustlab.defenses.privacy.JEMSettings`
    overrides), ``jem_finetune_epochs``, ``attack_options`` (attack name -> its own keyword
    arguments, e.g. the label-only attack's ``samples``).

    Example::

        trustlab reproduce meminf-jem --preset smoke
    """

    name = "meminf-jem"
    title = (
        "Membership inference (threshold, label-only, LiRA, RMIA) and the JEM and DP-SGD defenses"
    )
    paper = (
        "Carlini et al. Membership Inference Attacks From First Principles. S&P 2022; "
        "Zarifzadeh, Liu, Chang, Shokri. Low-Cost High-Power Membership Inference Attacks. ICML "
        "2024; Choquette-Choo, Tramer, Carlini, Papernot. Label-Only Membership Inference "
        "Attacks. ICML 2021; Chen et "
        "al. Protect Privacy of Deep Classification Networks by Exploiting Their Generative "
        "Power. Machine Learning 2021; Abadi et al. Deep Learning with Differential Privacy. "
        "CCS 2016."
    )
    keys = ("model",)
    # shown in the table (every attack's four numbers are in the stored rows)
    metrics = (
        "test_acc",
        "train_acc",
        "advantage",
        "advantage_chance",
        "loss_tpr_at_1fpr",
        "lira_auc",
        "lira_tpr_at_1fpr",
        "lira_advantage",
        "rmia_tpr_at_1fpr",
        "label-only_auc",
        "epsilon",
    )
    percent = ("test_acc", "train_acc")
    claims = (
        Claim(
            "lira-beats-threshold",
            "on the overfit target, LiRA's TPR at 1% FPR exceeds the loss-threshold attack's",
            noted(
                interval_check(
                    _lira_gain,
                    ">",
                    0.0,
                    what="TPR at 1% FPR LiRA - loss",
                    scale=100,
                    unit=" pts",
                    digits=1,
                ),
                _lira_context,
            ),
        ),
        Claim(
            "jem-defense",
            "the JEM defense cuts membership advantage by >= 50% while losing <= 10 points of "
            "accuracy",
            noted(
                all_of(
                    # 1e-9 on each threshold: slack for floating-point rounding, as the numbers are
                    # ratios and differences of rates
                    interval_check(
                        _jem_cut,
                        ">=",
                        0.5 - 1e-9,
                        what="JEM advantage cut",
                        scale=100,
                        unit="%",
                        digits=0,
                    ),
                    interval_check(
                        _jem_acc_loss,
                        "<=",
                        0.10 + 1e-9,
                        what="JEM test accuracy lost",
                        scale=100,
                        unit=" pts",
                        digits=1,
                    ),
                ),
                _jem_context,
            ),
        ),
        Claim(
            "dp-sgd",
            "DP-SGD at epsilon <= 8 also cuts membership advantage",
            noted(
                all_of(
                    _dp_epsilon,
                    interval_check(
                        _dp_gain, ">", 0.0, what="advantage undefended - DP-SGD", digits=3
                    ),
                ),
                _dp_context,
            ),
        ),
        Claim(
            "rmia-beats-lira",
            "with the same shadow (reference) models, RMIA's TPR at 1% FPR exceeds LiRA's "
            "(Zarifzadeh et al., ICML 2024)",
            noted(
                interval_check(
                    _rmia_gain,
                    ">",
                    0.0,
                    what="TPR at 1% FPR RMIA - LiRA",
                    scale=100,
                    unit=" pts",
                    digits=1,
                ),
                _rmia_context,
            ),
        ),
    )
    presets = {
        "smoke": Preset(
            "smoke",
            "digits",
            "mlp",
            seeds=1,
            train=dict(epochs=10, lr=0.05, batch_size=32, weight_decay=0.0, schedule="constant"),
            options={
                "population": 200,
                "shadows": 4,
                "epsilon": 8.0,
                "jem": {"buffer_size": 200, "steps": 5},
                "jem_finetune_epochs": 1,
                "attack_options": {"label-only": {"samples": 4}},
            },
            description="seconds: mlp on 200 digits, 4 shadows, a 1-epoch JEM",
        ),
        "quick": _QUICK,
        "real": replace(
            _QUICK,
            name="real",
            dataset="fashion-mnist",
            description="sized for under 30 minutes on 2 CPU cores: "
            "the quick preset on real Fashion-MNIST "
            "(1,000 images drawn from its training set, 500 members), 30 epochs, 16 LiRA "
            "shadows, JEM's 50 fine-tuning epochs (warm-up over 2.8% of the steps) and DP-SGD "
            "at epsilon 8; 3 seeds",
        ),
        "full": Preset(
            "full",
            "cifar10",
            "resnet18",
            seeds=1,
            train=dict(epochs=100, lr=0.1, batch_size=128, weight_decay=0.0),
            options={"population": 50000, "shadows": 64, "epsilon": 8.0, "jem_finetune_epochs": 50},
            description="CIFAR-10, ResNet-18, 25,000 members, 64 shadows (LiRA's setting; GPU)",
        ),
    }

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        # LiRA's shadows make the undefended job the longest: first
        return [{"model": m} for m in ROWS]

    def check(self, preset: Preset) -> None:
        super().check(preset)
        PRIVACY_ATTACKS.check(REPORTED_ATTACKS)
        from trustlab.attacks.privacy.audit import check_options

        for attack, opts in preset.options.get("attack_options", {}).items():
            if attack not in REPORTED_ATTACKS:
                raise InputError(
                    f"attack_options names {attack!r}, which this reproduction does not run; "
                    f"it runs: {', '.join(REPORTED_ATTACKS)}."
                )
            check_options(PRIVACY_ATTACKS.get(attack), opts)
        n = int(preset.options["population"])
        size = len(preset.load("train"))
        if not 4 <= n <= size:
            raise InputError(
                f"population must be between 4 and the training split's {size} examples, got {n}."
            )

    def _population(self, preset: Preset, seed: int) -> tuple[ArrayDataset, torch.Tensor]:
        """``(population, member mask)``: a seeded draw from the training split and the random
        half the target trains on."""
        train = preset.load("train")
        n = int(preset.options["population"])
        pick = torch.randperm(len(train), generator=generator(derive_seed(seed, "population")))
        population = train.subset(pick[:n])
        order = torch.randperm(n, generator=generator(derive_seed(seed, "members")))
        members = torch.zeros(n, dtype=torch.bool)
        members[order[: n // 2]] = True
        return population, members

    def _recipe(self, preset: Preset, population: ArrayDataset, seed: int) -> Any:
        from trustlab.attacks.privacy import ShadowRecipe

        spec = ModelSpec.for_data(preset.model, population)
        return ShadowRecipe(spec, TrainSettings(**{**preset.train, "seed": seed}))

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        from trustlab.metrics.privacy import membership_metrics

        kind = job["model"]
        population, members = self._population(preset, seed)
        private = population.subset(torch.nonzero(members).flatten())
        test = preset.load("test")
        recipe = self._recipe(preset, population, derive_seed(seed, "target"))
        out: dict[str, float] = {}
        if kind == "dp-sgd":
            dp = {"epsilon": float(preset.options["epsilon"])}
            settings = TrainSettings(**{**recipe.settings.model_dump(), "dp": dp})
            dp_recipe = type(recipe)(recipe.spec, settings)
            result = dp_recipe.fit(private, recipe.settings.seed, device)
            model = result.model.eval()
            assert result.privacy is not None
            out.update({k: result.privacy[k] for k in ("epsilon", "delta", "noise_multiplier")})
        else:
            model = recipe.train(private, recipe.settings.seed, device)
        if kind == "jem":
            model = self._defend(preset, model, private, test, seed, device)
        out["test_acc"] = evaluate(model, test, device=device)["accuracy"]
        out["train_acc"] = evaluate(model, private, device=device)["accuracy"]
        scores: dict[str, torch.Tensor] = {}
        more = preset.options.get("attack_options", {})
        for attack in REPORTED_ATTACKS:  # the attacks without shadows score every row
            card = PRIVACY_ATTACKS.get(attack)
            if not card.meta["shadows"]:
                scores[attack] = card.build(
                    model, population, device=device, **more.get(attack, {})
                )
        if kind == "undefended":
            cache = self.work_path("shadows")
            lira = PRIVACY_ATTACKS.build(
                "lira",
                recipe,
                population,
                shadows=int(preset.options["shadows"]),
                seed=derive_seed(seed, "shadows"),
                cache=cache,
                device=device,
                progress=False,
            ).fit()
            scores["lira"] = lira.score(model)
            # RMIA's reference models are LiRA's shadows (the same call: the cache serves them);
            # its population samples z: the whole population (no membership labels used)
            rmia = PRIVACY_ATTACKS.build(
                "rmia", recipe, population, int(preset.options["shadows"]),
                seed=derive_seed(seed, "shadows"), cache=cache, device=device, progress=False,
                **more.get("rmia", {}),
            ).fit()  # fmt: skip
            scores["rmia"] = rmia.score(model)
        for attack, s in scores.items():
            for m, v in membership_metrics(s, members).items():
                out[f"{attack}_{m}"] = v
        out["advantage"] = max(out["loss_advantage"], out["confidence_advantage"])
        out["advantage_chance"] = _chance_advantage(
            [scores["loss"], scores["confidence"]], members, derive_seed(seed, "chance")
        )
        return out

    def _defend(
        self,
        preset: Preset,
        model: Any,
        private: ArrayDataset,
        test: ArrayDataset,
        seed: int,
        device: torch.device,
    ) -> Any:
        from trustlab.defenses.privacy.jem import FINETUNE, JEMDefense, JEMSettings

        o = preset.options
        settings = JEMSettings(**{**o.get("jem", {}), "seed": derive_seed(seed, "jem") % 2**31})
        finetune = FINETUNE
        if "jem_finetune_epochs" in o:
            finetune = FINETUNE.model_copy(update={"epochs": int(o["jem_finetune_epochs"])})
        # retraining: the defense's default, the authors' recipe (Adam 1e-4, 50 epochs)
        defense = JEMDefense(settings, finetune=finetune)
        return defense.defend(model, private, device=device).model
