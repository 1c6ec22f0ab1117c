"""Versioned benchmarks: what a submission is scored on, fixed down to the seeds.

A :class:`Benchmark` is a plain, JSON-able definition: its name and version, the kind of
submission it takes (``"defense"`` or ``"model"``), the data, the model the benchmark trains where
it trains one, the attacks, the seeds, the budget (the training recipes, the evaluation's sizes and
the default time and memory limits of the sandbox) and the metrics with their direction. Its
:attr:`Benchmark.hash` is the SHA-256 of the canonical JSON of the whole definition, so changing
any attack, datum, seed or budget changes the hash; a submission's evaluation is cached under its
source's hash and the benchmark's hash. :meth:`Benchmark.scaled` makes a smaller (or larger)
variant, with its own version and hash (tests use it; the registered benchmarks are never
special-cased).

The three registered benchmarks (:data:`BENCHMARKS`; ``trustlab benchmarks`` lists them), each
about a minute on 2 CPU cores:

- ``backdoor-quick`` takes a backdoor **defense** class. The benchmark plants BadNets and blend
  (10% poisoning, target class 0) in a ``cnn-small`` on ``digits`` for each seed and runs the
  defense against each planted model through the backdoor bench's own evaluation
  (:func:`~trustlab.defenses.backdoor.evaluate.run_defense`: the defender's clean half of the
  test split, the evaluation half, DER against the attacked model). Its protocol decides
  (:func:`defense_protocol`): a repairer (``repair(model, clean) -> model``), a model inspector
  (``inspect(model, clean) ->`` the flagged classes), a dataset filter (``flag(dataset) ->
  indices``; the kept samples retrain a fresh model) or an input detector (``fit(clean)``,
  ``score(x) -> (N,)``); a defense of the catalogue runs its own ``run_case``. Scores:
  ``asr_after``, ``clean_acc_after``, ``der`` (repairers, filters), ``precision``, ``recall``,
  ``auroc`` (filters), ``auroc``, ``tpr_at_5fpr`` (detectors), ``detected``, ``false_flags``
  (inspectors); each the mean over the seeds (per seed: the mean over the attacks) with its
  95% bootstrap interval.
- ``robustness-quick`` takes a **model** (a user's ``nn.Module`` class and its safetensors
  weights, or a trustlab checkpoint) for ``digits`` (inputs ``(N, 1, 16, 16)`` in [0, 1], 10
  logits): clean accuracy and the worst-case robust accuracy of the ``quick`` cascade (PGD-20,
  then MD) at L-inf eps 0.1 on a fixed, class-stratified 200 test examples, with Jeffreys
  intervals over the examples; the details (``evaluation.json``) hold the AutoAttack-style
  sanity checks (:func:`~trustlab.attacks.evasion.sanity.sanity_checks`) and the
  imbalanced-gradient diagnostic, which say when the number may be overestimated.
- ``privacy-quick`` takes a training **defense**: ``train(dataset, seed) -> nn.Module`` (it trains
  its own model on the private set) or the privacy defenses' ``defend(model, private_train,
  test)`` (returning the released model, or a result with ``.model``; the benchmark first trains
  the undefended model). Scores over the seeds: test accuracy, and the worst of the loss and
  confidence threshold attacks' membership advantage, AUC and TPR at 1% FPR on the 300 private
  examples against 300 test examples.

Example::

    bench = get_benchmark("backdoor-quick")
    bench.hash[:12], bench.version
    small = bench.scaled(seeds=(0,), budget={"epochs": 1})  # another version, another hash
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trustlab.errors import InputError
from trustlab.registry import BENCHMARKS

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "MalformedSubmission",
    "Metric",
    "STAGES",
    "benchmark_from_dict",
    "canonical_json",
    "defense_protocol",
    "get_benchmark",
]


TAKES = ("defense", "model")
#: the stages of a sandboxed evaluation, in order, and whose work each is (``"benchmark"``: the
#: benchmark's own set-up, no code of the submission runs; ``"submission"``: the submission's
#: code runs, or is scored)
STAGES = {
    "starting": "benchmark",
    "loading the submission": "submission",
    "loading data": "benchmark",
    "planting attacks": "benchmark",
    "training the benchmark's model": "benchmark",
    "running the submission": "submission",
    "scoring": "submission",
}


def _no_stage(stage: str, detail: str = "") -> None:
    """The default stage callback: nothing."""


EVALUATORS = ("backdoor", "robustness", "privacy")


class MalformedSubmission(InputError):
    """A submission whose output has the wrong type or shape (a repairer that returns no
    module, a detector whose scores are not one per input, a model without 10 logits).

    Example::

        raise MalformedSubmission("repair() returned str, not a torch.nn.Module.")
    """


def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj`` that its hash is computed from: sorted keys, no spaces,
    ASCII, no NaN.

    Example:
        >>> canonical_json({"b": 1, "a": [1.5, "x"]})
        '{"a":[1.5,"x"],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)  # fmt: skip


@dataclass(frozen=True)
class Metric:
    """One score of a benchmark.

    Args:
        name: the key in the scores (``"asr_after"``).
        label: its column title (``"ASR after"``).
        higher_is_better: its direction.
        description: one line (default "").

    Example:
        >>> Metric("der", "DER", True).higher_is_better
        True
    """

    name: str
    label: str
    higher_is_better: bool
    description: str = ""


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts (so that a definition and its JSON compare equal)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Benchmark:
    """A fixed, versioned benchmark (see the module).

    Args:
        name: its name (``"backdoor-quick"``).
        version: its version (``"1"``); a changed definition gets a new one.
        takes: the kind of submission: ``"defense"`` or ``"model"``.
        evaluator: how it scores: ``"backdoor"``, ``"robustness"`` or ``"privacy"``.
        description: one line.
        data: the dataset and its sizes (``{"dataset": "digits", ...}``).
        model: the network the benchmark trains, where it trains one (``{"arch": "cnn-small"}``).
        attacks: the attacks, in order (names of the catalogue, or their settings).
        seeds: the seeds.
        budget: the recipes and sizes (epochs, PGD steps, ...) and the sandbox's default limits
            ``timeout_s`` and ``memory_mb``.
        metrics: the scores, with their direction.
        primary: the score a leaderboard sorts by (default: the first metric).

    Example::

        bench = get_benchmark("robustness-quick")
        bench.hash  # sha256 of canonical_json(bench.to_dict())
    """

    name: str
    version: str
    takes: str
    evaluator: str
    description: str
    data: Mapping[str, Any]
    model: Mapping[str, Any]
    attacks: tuple[Any, ...]
    seeds: tuple[int, ...]
    budget: Mapping[str, Any]
    metrics: tuple[Metric, ...]
    primary: str = ""

    def __post_init__(self) -> None:
        if self.takes not in TAKES:
            raise InputError(f"a benchmark takes one of {', '.join(TAKES)}, not {self.takes!r}.")
        if self.evaluator not in EVALUATORS:
            raise InputError(
                f"unknown evaluator {self.evaluator!r}; use one of {', '.join(EVALUATORS)}."
            )
        if not self.seeds:
            raise InputError(f"benchmark {self.name!r} needs at least one seed.")
        names = [m.name for m in self.metrics]
        if not names:
            raise InputError(f"benchmark {self.name!r} needs at least one metric.")
        if self.primary and self.primary not in names:
            raise InputError(f"primary metric {self.primary!r} is not one of {', '.join(names)}.")
        if not self.primary:
            object.__setattr__(self, "primary", names[0])

    # -- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The whole definition as JSON values (what the hash covers)."""
        return _plain(
            {
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "metrics": [dataclasses.asdict(m) for m in self.metrics],
            }
        )

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of :func:`canonical_json` of :meth:`to_dict`."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        """The first 12 hex digits of :attr:`hash`."""
        return self.hash[:12]

    def metric(self, name: str) -> Metric:
        """The metric called ``name``."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise InputError(f"benchmark {self.name!r} has no metric {name!r}.")

    def higher_is_better(self) -> dict[str, bool]:
        """Each metric's direction."""
        return {m.name: m.higher_is_better for m in self.metrics}

    def scaled(self, version: str | None = None, **changes: Any) -> Benchmark:
        """A variant with ``changes`` (mapping fields ``data``, ``model``, ``budget`` are
        merged key by key; the others replaced) and its own version (default
        ``"<version>+scaled.<8 hex digits of the changes>"``), hence its own hash.

        Example::

            tiny = get_benchmark("backdoor-quick").scaled(seeds=(0,), budget={"epochs": 1})
        """
        unknown = [k for k in changes if k not in {f.name for f in dataclasses.fields(self)}]
        if unknown or "name" in changes or "version" in changes:
            raise InputError(
                f"scaled() changes the definition's fields, not {', '.join(unknown) or 'name'}."
            )
        merged: dict[str, Any] = {}
        for key, value in changes.items():
            old = getattr(self, key)
            merged[key] = {**old, **value} if isinstance(old, Mapping) else value
        tag = hashlib.sha256(canonical_json(_plain(merged)).encode()).hexdigest()[:8]
        return dataclasses.replace(self, version=version or f"{self.version}+scaled.{tag}",
                                   **merged)  # fmt: skip

    # -- evaluation (in the sandbox's child process) ----------------------------------------
    def evaluate(
        self, submission: Any, stage: Callable[[str, str], None] | None = None
    ) -> dict[str, Any]:
        """Score ``submission`` (the loaded defense class, or the loaded ``nn.Module``):
        ``{"scores": {metric: {"mean", "lo", "hi", "values"}}, "primary", "higher_is_better",
        "details"}``. Runs the user's code: call it in the sandbox
        (:func:`trustlab.platform.sandbox.run_sandboxed`), not in your own process.

        Args:
            submission: the loaded defense class or model.
            stage: called with ``(stage, detail)`` as the evaluation moves on (default None):
                the stages of :data:`STAGES` from ``"loading data"`` on (``"planting attacks"``
                and ``"training the benchmark's model"`` are the benchmark's own work), the
                detail e.g. ``"badnets, seed 0"``. The sandbox writes them down, so that a
                timeout says where it hit.

        Raises:
            MalformedSubmission: the submission's output has the wrong type or shape.

        Example::

            bench.evaluate(MyDefense, stage=lambda s, d: print(s, d))
        """
        fn = {"backdoor": _evaluate_backdoor, "robustness": _evaluate_robustness,
              "privacy": _evaluate_privacy}[self.evaluator]  # fmt: skip
        scores, primary, details = fn(self, submission, stage or _no_stage)
        return {
            "scores": scores,
            "primary": primary,
            "higher_is_better": {k: self.metric(k).higher_is_better for k in scores},
            "details": details,
        }


def benchmark_from_dict(doc: Mapping[str, Any]) -> Benchmark:
    """The :class:`Benchmark` of :meth:`Benchmark.to_dict` (the sandbox's child reads its
    benchmark this way, so a scaled one travels whole).

    Example::

        assert benchmark_from_dict(bench.to_dict()).hash == bench.hash
    """
    try:
        return Benchmark(
            **{
                **doc,
                "attacks": tuple(doc["attacks"]),
                "seeds": tuple(doc["seeds"]),
                "metrics": tuple(Metric(**m) for m in doc["metrics"]),
            }
        )
    except (KeyError, TypeError) as exc:
        raise InputError(f"not a benchmark definition: {exc}.") from None


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name`` (an unknown name: an InputError listing them).

    Example::

        get_benchmark("privacy-quick").takes  # "defense"
    """
    return BENCHMARKS.get(name).build()


def _register(factory: Callable[[], Benchmark]) -> Callable[[], Benchmark]:
    bench = factory()
    BENCHMARKS.register(bench.name, bench.description, takes=bench.takes,
                        evaluator=bench.evaluator)(factory)  # fmt: skip
    return factory


# -- the registered benchmarks ----------------------------------------------------------------
_TRAIN = {"epochs": 6, "lr": 0.05, "batch_size": 64}


@_register
def backdoor_quick() -> Benchmark:
    """BadNets and blend in a cnn-small on digits, 3 seeds (see the module)."""
    return Benchmark(
        name="backdoor-quick",
        version="1",
        takes="defense",
        evaluator="backdoor",
        description="a backdoor defense against BadNets and blend planted in a cnn-small on "
        "digits (3 seeds)",
        data={"dataset": "digits", "rate": 0.1, "target": 0},
        model={"arch": "cnn-small", "train": dict(_TRAIN)},
        attacks=("badnets", "blend"),
        seeds=(0, 1, 2),
        budget={"defense_epochs": 2, "timeout_s": 600, "memory_mb": 4096},
        metrics=(
            Metric("der", "DER", True, "defense effectiveness rating (repairers, filters)"),
            Metric("asr_after", "ASR after", False, "attack success after the defense"),
            Metric("clean_acc_after", "C-Acc after", True, "clean accuracy after the defense"),
            Metric("auroc", "AUROC", True, "detection AUROC (detectors, filters)"),
            Metric("tpr_at_5fpr", "TPR@5%FPR", True, "detectors: triggered inputs flagged"),
            Metric("precision", "precision", True, "filters: flagged samples that are poisoned"),
            Metric("recall", "recall", True, "filters: poisoned samples flagged"),
            Metric("detected", "detected", True, "inspectors: the target class flagged"),
            Metric("false_flags", "false flags", False, "inspectors: other classes flagged"),
        ),
        primary="der",
    )


@_register
def robustness_quick() -> Benchmark:
    """The quick cascade at eps 0.1 on 200 digits test examples (see the module)."""
    return Benchmark(
        name="robustness-quick",
        version="1",
        takes="model",
        evaluator="robustness",
        description="a digits classifier (1x16x16 in [0, 1], 10 logits): worst-case robust "
        "accuracy of PGD-20 then MD at L-inf eps 0.1 on 200 test examples",
        data={
            "dataset": "digits",
            "split": "test",
            "size": 200,
            "shape": [1, 16, 16],
            "classes": 10,
        },  # fmt: skip
        model={},
        attacks=("quick",),
        seeds=(0,),
        budget={"eps": 0.1, "batch_size": 200, "timeout_s": 600, "memory_mb": 4096},
        metrics=(
            Metric("robust_accuracy", "robust acc", True, "worst case over the cascade"),
            Metric("clean_accuracy", "clean acc", True, "on the same examples"),
        ),
        primary="robust_accuracy",
    )


@_register
def privacy_quick() -> Benchmark:
    """Threshold membership inference on 300 private digits (see the module)."""
    return Benchmark(
        name="privacy-quick",
        version="1",
        takes="defense",
        evaluator="privacy",
        description="a training defense on 300 private digits: test accuracy and the worst "
        "threshold membership-inference attack (3 seeds)",
        data={"dataset": "digits", "members": 300, "non_members": 300},
        model={
            "arch": "cnn-small",
            "train": {"epochs": 15, "lr": 0.05, "batch_size": 32, "weight_decay": 0.0},
        },  # fmt: skip
        attacks=("loss", "confidence"),
        seeds=(0, 1, 2),
        budget={"timeout_s": 600, "memory_mb": 4096},
        metrics=(
            Metric("advantage", "MIA advantage", False, "max over the attacks of TPR - FPR"),
            Metric("test_accuracy", "test acc", True, "on the whole test split"),
            Metric("tpr_at_1fpr", "TPR@1%FPR", False, "max over the attacks"),
            Metric("auc", "MIA AUC", False, "max over the attacks"),
        ),
        primary="advantage",
    )


# -- scoring helpers ----------------------------------------------------------------------------
def _interval(values: list[float], counts: list[int] | None = None) -> dict[str, Any]:
    """``{"mean", "lo", "hi", "values"}`` (bootstrap over the values, or Jeffreys over the
    examples with ``counts``); ``lo``/``hi`` None when they are not finite."""
    from trustlab.metrics.stats import bootstrap_ci

    mean, lo, hi = bootstrap_ci(values, counts=counts)

    def finite(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {"mean": finite(mean), "lo": finite(lo), "hi": finite(hi),
            "values": [finite(float(v)) for v in values]}  # fmt: skip


def _number(value: Any, what: str) -> float:
    """A float from a defense's output, or MalformedSubmission."""
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedSubmission(f"{what} must be a number, got {type(value).__name__}.")
    return float(value)


def _scores(per_seed: list[dict[str, float]], bench: Benchmark) -> dict[str, Any]:
    """The benchmark's metrics that every seed produced (finite somewhere), with intervals."""
    scores = {}
    for m in bench.metrics:
        vals = [row.get(m.name, math.nan) for row in per_seed]
        if any(math.isfinite(v) for v in vals):
            scores[m.name] = _interval(vals)
    return scores


def _mean_over(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in rows for k in r}
    out = {}
    for k in sorted(keys):
        vals = [r[k] for r in rows if k in r and math.isfinite(r[k])]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    return out


# -- backdoor-quick ----------------------------------------------------------------------------
def defense_protocol(defense: Any) -> str:
    """``"repairer"`` (``repair``), ``"inspector"`` (``inspect``), ``"dataset-filter"``
    (``flag``), ``"input-detector"`` (``fit`` and ``score``) or ``"case"`` of a submitted backdoor
    defense class (or instance).

    ``"case"`` (the classmethod ``run_case(case)``) is taken only from a defense of the
    catalogue (:data:`~trustlab.registry.DEFENSES`, the built-in ones and installed plug-ins):
    the case holds the attack's ground truth (its trigger, the poison indices), which a
    submission must not see, so a submitted class follows one of the three protocols.

    Raises:
        MalformedSubmission: it follows none of them.

    Example::

        defense_protocol(FinePruning)  # "case" (a registered defense)
    """
    from trustlab.registry import DEFENSES

    if callable(getattr(defense, "run_case", None)) and any(
        card.factory is defense for card in DEFENSES
    ):
        return "case"
    if callable(getattr(defense, "repair", None)):
        return "repairer"
    if callable(getattr(defense, "inspect", None)):
        return "inspector"
    if callable(getattr(defense, "flag", None)):
        return "dataset-filter"
    if callable(getattr(defense, "fit", None)) and callable(getattr(defense, "score", None)):
        return "input-detector"
    name = getattr(defense, "__name__", type(defense).__name__)
    if callable(getattr(defense, "run_case", None)):
        raise MalformedSubmission(
            f"{name} has only run_case(case), which is for the catalogue's own defenses (the "
            "case holds the attack's ground truth); give it repair(model, clean), "
            "inspect(model, clean), flag(dataset) or fit(clean) and score(x)."
        )
    raise MalformedSubmission(
        f"{name} follows no backdoor-defense protocol: give it repair(model, clean), "
        "inspect(model, clean), flag(dataset) or fit(clean) and score(x)."
    )


def _instance(defense: Any, model: Any) -> Any:
    """The submitted class built with the model when its constructor takes an argument."""
    if not inspect.isclass(defense):
        return defense
    try:
        params = list(inspect.signature(defense).parameters.values())
    except (TypeError, ValueError):
        params = []
    needs = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
             p.POSITIONAL_OR_KEYWORD)]  # fmt: skip
    return defense(model) if needs else defense()


def _check_logits(model: Any, x: Any, classes: int, what: str) -> None:
    """``model(x)`` must be ``(len(x), classes)`` floats."""
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        raise MalformedSubmission(f"{what} must be a torch.nn.Module, got {type(model).__name__}.")
    from trustlab.utils.modules import device_of, eval_mode

    with torch.no_grad(), eval_mode(model):
        out = model(x.to(device_of(model)))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise MalformedSubmission(
            f"{what} maps {len(x)} inputs to {shape}; it must return logits ({len(x)}, {classes})."
        )
    if not out.is_floating_point():
        raise MalformedSubmission(f"{what} returns {out.dtype} logits; they must be floats.")


def _adapter(defense: Any, protocol: str) -> type:
    """A defense class for the DEFENSES catalogue whose ``run_case`` measures ``defense`` the
    way the built-in defenses of its protocol are measured."""
    import torch

    from trustlab.defenses.backdoor.adversarial_filter import filter_then_retrain
    from trustlab.defenses.backdoor.base import FilterReport
    from trustlab.defenses.backdoor.case import DefenseCase, after_repair, filter_metrics
    from trustlab.metrics.detection import auroc, tpr_at_fpr
    from trustlab.models.spec import ModelSpec

    def run_case(cls: type, c: DefenseCase) -> dict[str, float]:
        k = c.art.model
        if protocol == "case":
            out = defense.run_case(c)
            if not isinstance(out, Mapping):
                raise MalformedSubmission(
                    f"run_case returned {type(out).__name__}; it must return a dict of numbers."
                )
            return {str(key): _number(v, f"run_case's {key!r}") for key, v in out.items()}
        inst = _instance(defense, copy.deepcopy(k))
        if protocol == "repairer":
            repaired = inst.repair(copy.deepcopy(k), c.clean)
            _check_logits(repaired, c.ev.x[:2], c.ev.num_classes, "repair()'s model")
            return after_repair(c.art, repaired, c.ev, c.before)
        if protocol == "inspector":
            found = inst.inspect(copy.deepcopy(k), c.clean)
            found = getattr(found, "flagged", found)
            try:
                classes = sorted({int(v) for v in found})
            except (TypeError, ValueError):
                raise MalformedSubmission(
                    f"inspect() returned {type(found).__name__}; it must return the flagged "
                    "classes (a list of class indices, or a report with .flagged)."
                ) from None
            if any(not 0 <= v < c.ev.num_classes for v in classes):
                raise MalformedSubmission(
                    f"inspect() flagged {classes}; classes are 0 to {c.ev.num_classes - 1}."
                )
            target = getattr(c.art.policy, "target", None)
            return {
                "detected": float(target in classes) if target is not None else math.nan,
                "false_flags": float(sum(v != target for v in classes)),
            }
        if protocol == "dataset-filter":
            assert c.train is not None
            # the training set as the defender holds it: inputs and labels, no poison mask
            t = c.train
            plain = type(c.clean)(t.x, t.y, t.classes, t.mean, t.std, name=t.name)
            flagged = torch.as_tensor(inst.flag(plain))
            if flagged.dim() != 1 or flagged.is_floating_point() or flagged.dtype == torch.bool:
                raise MalformedSubmission(
                    f"flag() returned {tuple(flagged.shape)} {flagged.dtype}; it must return a "
                    "1-D tensor of integer indices."
                )
            n = len(c.train)
            if flagged.numel() and (int(flagged.min()) < 0 or int(flagged.max()) >= n):
                raise MalformedSubmission(
                    f"flag() returned indices outside the dataset's {n} samples "
                    f"({int(flagged.min())} to {int(flagged.max())})."
                )
            spec = ModelSpec.from_model(k)
            if spec is None:
                raise InputError("the benchmark's model has no spec to retrain from.")
            torch.manual_seed(c.seed)
            fresh = spec.build()

            class _Fixed:  # the flagged indices, computed once
                def flag(self, dataset: Any) -> torch.Tensor:
                    return flagged.long()

            res = filter_then_retrain(_Fixed(), c.train, fresh, c.settings)
            scores = torch.zeros(len(c.train), dtype=torch.float64)
            scores[flagged.long()] = 1.0
            report = FilterReport(flagged.long().sort().values, scores)
            return {**filter_metrics(report, c.train),
                    **after_repair(c.art, res.model, c.ev, c.before)}  # fmt: skip
        det = inst.fit(c.clean.x)
        det = inst if det is None else det
        target = c.art.policy.target_for(c.ev.y)
        x_trig = c.art.trigger(c.ev.x[c.ev.y != target])
        s_clean, s_trig = det.score(c.ev.x), det.score(x_trig)
        for s, n in ((s_clean, len(c.ev.x)), (s_trig, len(x_trig))):
            if not isinstance(s, torch.Tensor) or tuple(s.shape) != (n,):
                shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise MalformedSubmission(
                    f"score() returned {shape} for {n} inputs; it must return a ({n},) tensor."
                )
        scores = torch.cat([s_clean, s_trig]).double()
        labels = torch.cat([torch.zeros(len(s_clean)), torch.ones(len(s_trig))]).bool()
        return {"auroc": auroc(scores, labels), "tpr_at_5fpr": tpr_at_fpr(scores, labels, 0.05)}

    return type("SubmittedDefense", (), {"run_case": classmethod(run_case)})


def _evaluate_backdoor(
    bench: Benchmark, defense: Any, stage: Callable[[str, str], None]
) -> tuple[dict, str, dict]:
    import torch

    from trustlab.attacks.backdoor.artifact import train_backdoor
    from trustlab.data import load_dataset
    from trustlab.defenses.backdoor.evaluate import run_defense
    from trustlab.models.spec import ModelSpec
    from trustlab.registry import DEFENSES
    from trustlab.train import TrainSettings
    from trustlab.utils.seed import derive_seed

    protocol = defense_protocol(defense)
    d, b = bench.data, bench.budget
    stage("loading data", str(d["dataset"]))
    train, test = load_dataset(d["dataset"], "train"), load_dataset(d["dataset"], "test")
    if "train_size" in d:
        train = train.stratified(int(d["train_size"]))
    if "test_size" in d:
        test = test.stratified(int(d["test_size"]))
    name = f"submission-{bench.short_hash}"
    DEFENSES.register(name, "the submitted defense", protocol=protocol,
                      filter=protocol == "dataset-filter", trains=protocol == "dataset-filter",
                      headline=("der", "DER"))(_adapter(defense, protocol))  # fmt: skip
    per_seed, cells = [], []
    try:
        for seed in bench.seeds:
            rows = []
            for attack in bench.attacks:
                stage("planting attacks", f"{attack}, seed {seed}")
                torch.manual_seed(derive_seed(seed, "init"))
                model = ModelSpec.for_data(bench.model["arch"], train).build()
                settings = TrainSettings(**{**bench.model["train"],
                                            "seed": derive_seed(seed, "train")})  # fmt: skip
                art = train_backdoor(attack, train, test, model, settings, float(d["rate"]),
                                     int(d["target"]), seed)  # fmt: skip
                budget = TrainSettings(**{**bench.model["train"], "epochs": b["defense_epochs"],
                                          "seed": derive_seed(seed, "def")})  # fmt: skip
                stage("running the submission", f"against {attack}, seed {seed}")
                out = run_defense(name, art, train, test, budget, {}, seed=seed)
                rows.append(out)
                cells.append({"attack": attack, "seed": seed, **out})
            per_seed.append(_mean_over(rows))
    finally:
        DEFENSES.unregister(name)
    scores = _scores(per_seed, bench)
    primary = next((m for m in ("der", "auroc", "detected") if m in scores),
                   next(iter(scores), bench.primary))  # fmt: skip
    return scores, primary, {"protocol": protocol, "cells": cells}


# -- robustness-quick --------------------------------------------------------------------------
def _evaluate_robustness(
    bench: Benchmark, model: Any, stage: Callable[[str, str], None]
) -> tuple[dict, str, dict]:
    import torch

    from trustlab.attacks.evasion.evaluate import evaluate_robustness
    from trustlab.attacks.evasion.sanity import sanity_checks
    from trustlab.attacks.evasion.suite import make_suite
    from trustlab.data import load_dataset

    d, b = bench.data, bench.budget
    stage("loading data", str(d["dataset"]))
    data = load_dataset(d["dataset"], d["split"]).stratified(int(d["size"]))
    stage("running the submission", "a first forward pass")
    _check_logits(model, data.x[:2], int(d["classes"]), "the submitted model")
    model = model.cpu().float()
    torch.manual_seed(bench.seeds[0])
    stage("scoring", f"the {bench.attacks[0]} attack cascade and the sanity checks")
    report = evaluate_robustness(
        model, data, make_suite(bench.attacks[0], model, float(b["eps"])),
        batch_size=int(b["batch_size"]), device="cpu",
    )  # fmt: skip
    findings = sanity_checks(model, data.x[:32], data.y[:32])
    n = report.n
    scores = {
        "robust_accuracy": _interval([report.robust_accuracy], counts=[n]),
        "clean_accuracy": _interval([report.clean_accuracy], counts=[n]),
    }
    sanity = [{"check": f.check, "ok": f.ok, "message": f.message} for f in findings]
    return scores, "robust_accuracy", {"report": report.to_dict(), "sanity": sanity}


# -- privacy-quick -----------------------------------------------------------------------------
def _evaluate_privacy(
    bench: Benchmark, defense: Any, stage: Callable[[str, str], None]
) -> tuple[dict, str, dict]:
    import torch
    from torch import nn

    from trustlab.attacks.privacy.audit import MembershipAudit
    from trustlab.data import load_dataset
    from trustlab.metrics.privacy import membership_metrics
    from trustlab.models.spec import ModelSpec
    from trustlab.registry import PRIVACY_ATTACKS
    from trustlab.train import Trainer, TrainSettings
    from trustlab.train.evaluate import evaluate
    from trustlab.utils.seed import derive_seed

    if callable(getattr(defense, "train", None)):
        protocol = "train"
    elif callable(getattr(defense, "defend", None)):
        protocol = "defend"
    else:
        raise MalformedSubmission(
            f"{getattr(defense, '__name__', type(defense).__name__)} has neither "
            "train(dataset, seed) nor defend(model, private_train, test)."
        )
    d = bench.data
    stage("loading data", str(d["dataset"]))
    full_train, test = load_dataset(d["dataset"], "train"), load_dataset(d["dataset"], "test")
    private = full_train.stratified(int(d["members"]))
    outside = test.stratified(int(d["non_members"]))
    data = type(private)(torch.cat([private.x, outside.x]), torch.cat([private.y, outside.y]),
                         private.classes, private.mean, private.std, name="audit")  # fmt: skip
    is_member = torch.cat([torch.ones(len(private)), torch.zeros(len(outside))]).bool()
    per_seed, details = [], []
    for seed in bench.seeds:
        stage("running the submission", f"seed {seed}")
        inst = defense() if inspect.isclass(defense) else defense
        if protocol == "train":
            model = inst.train(private, seed)
        else:
            stage("training the benchmark's model", f"seed {seed}")
            torch.manual_seed(derive_seed(seed, "init"))
            base = ModelSpec.for_data(bench.model["arch"], private).build()
            settings = TrainSettings(**{**bench.model["train"], "seed": derive_seed(seed, "train")})
            Trainer(base, settings, device="cpu").fit(private, None)
            stage("running the submission", f"defend(), seed {seed}")
            model = inst.defend(base, private, test)
            model = getattr(model, "model", model)
        if not isinstance(model, nn.Module):
            raise MalformedSubmission(
                f"{protocol}() returned {type(model).__name__}; it must return a torch.nn.Module."
            )
        _check_logits(model, test.x[:2], test.num_classes, f"{protocol}()'s model")
        model = model.cpu().eval()
        stage("scoring", f"the membership attacks, seed {seed}")
        row: dict[str, float] = {"test_accuracy": evaluate(model, test, device="cpu")["accuracy"]}
        index = torch.arange(len(data))
        for attack in bench.attacks:
            audit = MembershipAudit(model, data, private, test, index, seed=seed, device="cpu",
                                    progress=False)  # fmt: skip
            s = PRIVACY_ATTACKS.get(attack).meta["audit"](audit)
            m = membership_metrics(s, is_member)
            details.append({"seed": seed, "attack": attack, **m})
            for k in ("advantage", "auc", "tpr_at_1fpr"):
                row[k] = max(row.get(k, -math.inf), float(m[k]))
        per_seed.append(row)
    scores = _scores(per_seed, bench)
    return scores, "advantage", {"protocol": protocol, "attacks": details}
