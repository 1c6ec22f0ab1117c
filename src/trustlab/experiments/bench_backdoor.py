"""``trustlab bench backdoor``: the attack x defense matrix.

One job per (attack, defense) cell, spread over the workers: the first job of an attack trains
its backdoored model (:func:`~trustlab.attacks.backdoor.artifact.train_backdoor`, stored as an
artefact in the run's ``work/<attack>-seed<s>/``; the attacks' first cells are queued first, so
the workers train different attacks at once), every cell runs its defense against the stored
model (:func:`~trustlab.defenses.backdoor.evaluate.run_defense`), and each finished cell is
stored at once. A resumed run (``trustlab resume ID``) reuses the stored artefacts and runs
only the cells that did not finish. The table has one row per (attack, defense) with the
defense's numbers (see ``run_defense``; a number a defense does not produce is empty; a cell
that does not apply, :func:`applies`, has none), and ``matrix.html`` in the run folder shows
the matrix: attacks down, defenses across, each cell with the defense's headline number.

Presets: ``smoke`` (digits, cnn-small, BadNets and blind x every defense, small budgets;
seconds), ``quick`` (every attack x every defense on shapes10: a fixed 5,000 training and 1,000
test images, ResNet-8 8 epochs; the defenses' CPU budgets: 2 training epochs for the models
they train, Neural Cleanse a budgeted 5 epochs from lambda 1e-3, STRIP 20 overlays, ANP 100
iterations of 64, IAD the MNIST-size generator with 2 mask epochs; the longest trainings
first). ``--attacks`` and ``--defenses`` pick a sub-matrix; ``defense_epochs`` ``None`` lets
every defense train with its own defaults. There is no claim: the bench measures; the claims
live in the reproductions (``backdoor-breadth`` for the newer methods).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trustlab.attacks.backdoor.artifact import load_artifact, save_artifact, train_backdoor
from trustlab.attacks.backdoor.poison import poison_count
from trustlab.defenses.backdoor.evaluate import run_defense
from trustlab.errors import InputError
from trustlab.experiments.base import Experiment, Preset, register_experiment
from trustlab.models.spec import ModelSpec
from trustlab.registry import BACKDOORS, DEFENSES, Registry
from trustlab.train import TrainSettings
from trustlab.utils.format import NOT_APPLICABLE
from trustlab.utils.io import file_lock, write_text_atomic
from trustlab.utils.seed import derive_seed

METRICS = (
    "clean_acc", "asr", "anomaly", "max_anomaly", "detected", "flagged", "auroc", "tpr_at_5fpr",
    "tpr", "fpr", "precision", "recall", "pruned", "clean_acc_after", "asr_after", "der",
)  # fmt: skip


def _names(value: Any, registry: Registry, what: str) -> list[str]:
    """The comma-separated (or listed) names, each registered in ``registry``."""
    known = registry.names()
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n.strip()]
    bad = [n for n in names if n not in known]
    if not names or bad:
        raise InputError(f"unknown {what} {', '.join(bad) or '(none)'}; use {', '.join(known)}.")
    return names


def _headline(defense: str) -> tuple[str, str]:
    """``(metric, label)``: the number of ``defense`` shown in the matrix (its card's meta)."""
    try:
        return DEFENSES.get(defense).meta["headline"]
    except InputError:  # a stored run's defense that is no longer registered
        return "auroc", defense


@register_experiment
class BackdoorBench(Experiment):
    """The backdoor bench (``trustlab bench backdoor``): each attack's model trained once, then
    every defense run against it (see the module).

    After Wu, Chen, Zhang, Zhu, Wei, Yuan & Shen, "BackdoorBench: A Comprehensive Benchmark of
    Backdoor Learning", NeurIPS 2022 Datasets and Benchmarks (the attack x defense matrix and its
    measures, C-Acc, ASR, DER).

    Table keys ``attack``, ``defense``; metrics the defense's numbers (:data:`METRICS`, e.g.
    ``auroc``, ``clean_acc_after``, ``asr_after``, ``der``; empty where a defense produces none);
    ``matrix.html`` in the run folder shows each cell's headline number. No claim: the bench
    measures. Presets: ``smoke`` (cnn-small on digits, BadNets and blind x every defense;
    seconds), ``quick`` (ResNet-8 on shapes10, 8 epochs, every attack x every defense; about 30
    minutes on 2 CPU cores); options ``attacks`` and ``defenses`` (:func:`bench_options`) pick
    a sub-matrix.

    Example::

        rep = reproduce("bench-backdoor", "smoke", options=bench_options("badnets", "strip"))
        rep.table.summary()
    """

    name = "bench-backdoor"
    title = "Backdoor attacks x defenses"
    paper = (
        "Wu, Chen, Zhang, Zhu, Wei, Yuan, Shen. BackdoorBench: A Comprehensive Benchmark of "
        "Backdoor Learning. NeurIPS 2022 Datasets and Benchmarks (the attack x defense matrix "
        "and its measures, C-Acc, ASR, DER)."
    )
    keys = ("attack", "defense")
    metrics = METRICS
    percent = ("clean_acc", "asr", "clean_acc_after", "asr_after")
    claims = ()
    presets = {
        "smoke": Preset(
            "smoke",
            "digits",
            "cnn-small",
            seeds=1,
            train=dict(epochs=3, lr=0.05, batch_size=64),
            options={
                "attacks": ["badnets", "blind"],
                "defenses": DEFENSES.names(),
                "rate": 0.1,
                "defense_epochs": 1,
                "attack_options": {},
                "defense_options": {
                    "nc": {"epochs": 2, "reset_cost_to_zero": False},
                    "strip": {"overlays": 10},
                    "adv-filter": {"eps": 0.1, "alpha": 0.05, "steps": 2},
                    "anp": {"iterations": 5},
                },
            },  # fmt: skip
            description="seconds: digits, cnn-small, BadNets and blind x every defense",
        ),
        "quick": Preset(
            "quick",
            "shapes10",
            "resnet8",
            seeds=1,
            train=dict(
                epochs=8, lr=0.05, batch_size=64, nesterov=True, warmup_epochs=1, augment="flip"
            ),
            options={
                # the longest trainings first (IAD's generators, the surrogates of the
                # clean-label attacks), so that the last cells do not wait on a model
                "attacks": [
                    "iad",
                    "clean-label",
                    "lc",
                    "refool",
                    "sig",
                    "badnets",
                    "blend",
                    "wanet",
                    "blind",
                ],
                "defenses": DEFENSES.names(),
                "train_size": 5000,
                "test_size": 1000,
                "rate": 0.1,
                "defense_epochs": 2,
                "attack_options": {"iad": {"mask_epochs": 2, "channel_init": 16, "steps": 2}},
                "defense_options": {
                    "nc": {"epochs": 5, "reset_cost_to_zero": False},
                    "strip": {"overlays": 20},
                    "adv-filter": {"steps": 3},
                    "anp": {"iterations": 100, "batch_size": 64},
                },
            },  # fmt: skip
            description="about 30 minutes on 2 CPU cores: shapes10 (5,000 training and 1,000 "
            "test images), ResNet-8 8 epochs, every attack x every defense at CPU budgets",
        ),
    }

    def jobs(self, preset: Preset) -> list[dict[str, Any]]:
        """One job per applicable (attack, defense) cell. The first cell of each attack comes
        first, in the preset's attack order, so that the workers train the attacks' models in
        parallel before the other cells need them (a cell whose model another worker is still
        training waits for it: :meth:`artifact`)."""
        attacks = _names(preset.options["attacks"], BACKDOORS, "attack")
        defenses = _names(preset.options["defenses"], DEFENSES, "defense")
        cells = {a: [d for d in defenses if applies(a, d) is None] for a in attacks}
        first = [{"attack": a, "defense": ds[0]} for a, ds in cells.items() if ds]
        rest = [{"attack": a, "defense": d} for a, ds in cells.items() for d in ds[1:]]
        return first + rest

    def _rate(self, preset: Preset, attack: str) -> float:
        """The attack's own rate where its card names one (meta ``rate``: the adversarial-patch
        clean-label attack 30% of the target class, its paper's convention; Refool 5% of the
        training set, its claim's regime, within the target class); else the preset's
        ``rate`` of the training set (the dirty-label attacks)."""
        return BACKDOORS.get(attack).meta.get("rate", preset.options["rate"])

    def check(self, preset: Preset) -> None:
        super().check(preset)
        train = preset.load("train")
        for attack in _names(preset.options["attacks"], BACKDOORS, "attack"):
            card = BACKDOORS.get(attack)
            if card.meta["injector"] != "data":
                continue
            recipe = card.build()
            try:  # the count poison_dataset takes, for the target run_job attacks (class 0)
                poison_count(train, recipe.policy(0, train.num_classes), self._rate(preset, attack),
                             recipe.of)  # fmt: skip
            except InputError as exc:
                raise InputError(f"{attack} on {preset.dataset}: {exc}") from None

    def artifact(self, preset: Preset, attack: str, seed: int, device: torch.device) -> Any:
        """The attack's backdoored model for ``seed``: trained by the first job that needs it
        and stored in ``work/<attack>-seed<s>/``; a job of another worker that needs it
        meanwhile waits on the folder's lock and then loads it (so does a resumed run)."""
        folder = self.work_path(f"{attack}-seed{seed}")
        with file_lock(self.work_path(f"{attack}-seed{seed}.lock")):
            if (folder / "backdoor.json").is_file():
                return load_artifact(folder, device=device)
            train, test = preset.load("train"), preset.load("test")
            torch.manual_seed(derive_seed(seed, "init"))
            model = ModelSpec.for_data(preset.model, train).build()
            settings = TrainSettings(**{**preset.train, "seed": derive_seed(seed, "train")})
            art = train_backdoor(
                attack, train, test, model, settings, self._rate(preset, attack), 0, seed, device,
                options=preset.options.get("attack_options", {}).get(attack),
            )  # fmt: skip
            art.config["dataset"] = preset.dataset
            save_artifact(folder, art)
            return load_artifact(folder, device=device)  # what the other cells load

    def run_job(
        self, preset: Preset, job: dict[str, Any], seed: int, device: torch.device
    ) -> dict[str, float]:
        o = preset.options
        art = self.artifact(preset, job["attack"], seed, device)
        budget = (  # None: each defense trains with its own (its paper's) defaults
            None
            if o.get("defense_epochs") is None
            else TrainSettings(
                **{**preset.train, "epochs": o["defense_epochs"], "seed": derive_seed(seed, "def")}
            )
        )
        defense = job["defense"]
        opts = o.get("defense_options", {}).get(defense, {})
        out = run_defense(
            defense, art, preset.load("train"), preset.load("test"), budget, opts, seed=seed
        )
        return {k: float(v) for k, v in out.items() if k in METRICS}

    def summarize(
        self, preset: Preset, rows: list[dict[str, Any]], device: torch.device
    ) -> list[dict[str, Any]]:
        """The cells in matrix order (attack-major, the preset's orders), with a row per cell
        that does not apply (no numbers; :func:`applies` says why)."""
        attacks = _names(preset.options["attacks"], BACKDOORS, "attack")
        defenses = _names(preset.options["defenses"], DEFENSES, "defense")
        seeds = sorted({r["seed"] for r in rows})
        by_cell = {(r["attack"], r["defense"], r["seed"]): r for r in rows}
        out = [
            by_cell.get((a, d, s), {"attack": a, "defense": d, "seed": s})
            for a in attacks for d in defenses for s in seeds
        ]  # fmt: skip
        assert self.workdir is not None
        write_text_atomic(self.workdir.parent / "matrix.html", matrix_html(out, preset))
        return out


def applies(attack: str, defense: str) -> str | None:
    """Why ``defense`` cannot be measured against ``attack`` (``None`` when it can): a defense
    that reads the poisoned training set (card meta ``filter``: the dataset filters, ABL) has
    nothing to read when the attacker controls training instead of the data (injector
    ``"loss"``: the blind backdoor, WaNet, IAD poison their batches on the fly)."""
    try:
        injector = BACKDOORS.get(attack).meta.get("injector")
        reads_data = DEFENSES.get(defense).meta.get("filter")
    except InputError:  # a name no longer registered (a stored run read back later)
        return None
    if reads_data and injector == "loss":
        return (
            "the attacker controls training, not the data: there is no poisoned training set "
            "to inspect"
        )
    return None


def matrix(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """``(header, lines)`` of the matrix: one line per attack (C-Acc and ASR of its model, then
    each defense's headline number, the mean over seeds; "—" where there is none, ``n/a``
    where the defense does not apply to the attack (:func:`applies`)). Accuracies
    and success rates are percentages, as in the run's ``report.md``; the other measures
    (AUROC, DER, anomaly index, ...) are shown as they are."""
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    defenses = list(dict.fromkeys(r["defense"] for r in rows))

    def mean(attack: str, defense: str | None, key: str) -> str:
        if defense is not None and applies(attack, defense) is not None:
            return "n/a"
        vals = [
            float(r[key]) for r in rows
            if r["attack"] == attack and (defense is None or r["defense"] == defense) and key in r
        ]  # fmt: skip
        vals = [v for v in vals if not math.isnan(v)]
        if not vals:
            return NOT_APPLICABLE
        m = sum(vals) / len(vals)
        return f"{100 * m:.1f}%" if key in BackdoorBench.percent else f"{m:.2f}"

    header = ["attack", "C-Acc", "ASR", *(f"{d}: {_headline(d)[1]}" for d in defenses)]
    lines = [
        [a, mean(a, None, "clean_acc"), mean(a, None, "asr"),
         *(mean(a, d, _headline(d)[0]) for d in defenses)]
        for a in attacks
    ]  # fmt: skip
    return header, lines


def matrix_html(rows: list[dict[str, Any]], preset: Preset) -> str:
    """The matrix (:func:`matrix`) as a standalone HTML page (:mod:`trustlab.results.html`)."""
    from trustlab.results.html import page, paragraph, table

    header, lines = matrix(rows)
    title = f"trustlab bench backdoor: {preset.dataset}, {preset.model} ({preset.name})"
    return page(
        title,
        table(header, lines, sortable=False, row_headers=True),
        paragraph(
            "Every number of every cell is in table.json and report.md of the run; C-Acc and "
            "ASR are the attacked model's on the evaluation half of the test split. n/a: the "
            "defense reads the poisoned training set, and the attack controls training instead "
            "of the data (it poisons its batches on the fly), so there is none to read."
        ),
    )


def bench_options(attacks: str | None, defenses: str | None) -> dict[str, Any]:
    """Preset option overrides from ``--attacks`` / ``--defenses`` (comma-separated)."""
    out: dict[str, Any] = {}
    if attacks:
        out["attacks"] = _names(attacks, BACKDOORS, "attack")
    if defenses:
        out["defenses"] = _names(defenses, DEFENSES, "defense")
    return out


__all__ = ["BackdoorBench", "bench_options", "matrix", "matrix_html"]
