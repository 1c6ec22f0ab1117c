"""The adversarial-detection protocol shared by every detector.

Ma, Niu, Gu, Wang, Zhao, Bailey & Lu, "Understanding adversarial attacks on deep learning based
medical image analysis systems", Pattern Recognition 2020, following Ma et al. (LID, ICLR 2018)
and Feinman et al. (KD/BU, 2017):

- positives: *successful* adversarial examples of *correctly classified* inputs;
- negatives: those clean inputs, and the same inputs with Gaussian noise whose L2 norm matches
  each adversarial perturbation's (clipped to [0, 1]);
- a detector maps inputs to feature vectors (:class:`FeatureDetector.features`, which sees the
  clean, noisy and adversarial sets together because LID compares each point with its clean
  minibatch), then a standard scaler and a logistic regression (or random forest) are fit on a
  random 80% training split only, and ROC-AUC is measured on the other 20%; 3 random splits.

The split is drawn over *source inputs*, not rows: the clean, noisy and adversarial copies of one
input go to the same side (``split="source"``, the default), as the LID authors' code does
(``block_split`` in xingjunm/lid_adversarial_subspace_detection ``util.py``: the first 80% of the
inputs, all three copies of each, train the classifier). Splitting rows at random (``"row"``, what
the medical paper's released ``detect_adv_examples.py`` does with ``train_test_split``) puts the
clean twin of a test adversarial example in the training set, so the classifier can match a test
point to its twin rather than recognise adversarial features; trustlab keeps it only to measure
that leak (see ``docs/detection.md``). Where trustlab departs from the LID code: the sources are
drawn at random for each of the 3 splits (methods.md, the medical paper) instead of taking the
first 80% once.

:class:`InputDetector` is the protocol of a fitted detector (``fit``, ``score``: higher means more
likely adversarial), so that detectors plug into the defenses and the benchmark alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from trustlab.attacks.evasion.base import Attack
from trustlab.errors import InputError
from trustlab.models.wrappers import feature_taps
from trustlab.utils.modules import device_of, frozen
from trustlab.utils.seed import generator

CLASSIFIERS = ("lr", "rf")


@runtime_checkable
class InputDetector(Protocol):
    """A fitted adversarial-input detector: ``fit(clean, adversarial, noisy=None)`` then
    ``score(x)`` -> ``(N,)`` float, higher meaning more likely adversarial.

    Example::

        det = LIDDetector(model).fit(clean, adversarial, noisy)
        scores = det.score(x)
    """

    def fit(
        self, clean: torch.Tensor, adversarial: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> InputDetector: ...

    def score(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class DetectionSet:
    """Aligned clean, noisy and adversarial inputs (row ``i`` of each comes from one input),
    built by :func:`build_detection_set` (Ma et al., Pattern Recognition 2020, protocol).

    Attributes:
        clean, noisy, adversarial: ``(M, C, H, W)`` in ``[0, 1]``: the correctly classified
            inputs the attack fooled, their noise-matched copies and their adversarial examples.
        labels: ``(M,)`` their true classes.
        attack_success: the attack's success among the correctly classified inputs.
        n_correct: how many inputs were correctly classified.
        sources: ``(M,)`` int64, the index of each row's source input in the ``x`` given to
            :func:`build_detection_set` (default ``None``: row ``i`` is its own source). Two sets
            built from the same ``x`` (two attacks) share source indices, which keeps a
            cross-attack test off the inputs the detector was trained on.

    Example::

        sets = build_detection_set(model, x, y, PGD(model, eps=8 / 255))
        report = evaluate_detector(LIDDetector(model), sets)
    """

    clean: torch.Tensor
    noisy: torch.Tensor
    adversarial: torch.Tensor
    labels: torch.Tensor
    attack_success: float  # among correctly classified inputs
    n_correct: int
    sources: torch.Tensor | None = None

    def source_ids(self) -> np.ndarray:
        """``(M,)`` source index of each row (``sources``, or ``0 .. M-1`` when unknown);
        checks that the three copies are aligned."""
        m = len(self.clean)
        if len(self.noisy) != m or len(self.adversarial) != m:
            raise InputError(
                f"clean, noisy and adversarial must be aligned copies (row i of each from one "
                f"input); got {m}, {len(self.noisy)} and {len(self.adversarial)} rows."
            )
        if self.sources is None:
            return np.arange(m)
        ids = self.sources.detach().cpu().long().numpy()
        if ids.shape != (m,) or len(np.unique(ids)) != m:
            raise InputError(
                f"sources must hold one distinct index per row ({m}); got shape {ids.shape}."
            )
        return ids


def noise_like(
    clean: torch.Tensor, adversarial: torch.Tensor, gen: torch.Generator | None
) -> torch.Tensor:
    """Gaussian noise scaled to each adversarial perturbation's L2 norm, clipped to [0, 1]."""
    target = (adversarial - clean).flatten(1).norm(dim=1)
    z = torch.randn(clean.shape, generator=gen, dtype=clean.dtype).to(clean.device)
    z = z * (target / z.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, *[1] * (z.dim() - 1))
    return (clean + z).clamp(0, 1)


def build_detection_set(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    batch_size: int = 256,
    seed: int = 0,
) -> DetectionSet:
    """Attack the correctly classified inputs; keep the successful ones with their clean and
    noisy counterparts, and each row's index in ``x`` (``sources``)."""
    dev = x.device
    with frozen(model), torch.no_grad():
        correct = torch.cat([model(b).argmax(1) for b in x.split(batch_size)]) == y
    xc, yc = x[correct], y[correct]
    if not len(xc):
        raise InputError("the model classifies none of these inputs correctly.")
    adv = torch.cat(
        [
            attack(xc[i : i + batch_size], yc[i : i + batch_size])
            for i in range(0, len(xc), batch_size)
        ]
    )
    with frozen(model), torch.no_grad():
        fooled = torch.cat([model(b).argmax(1) for b in adv.split(batch_size)]) != yc
    if int(fooled.sum()) < 4:
        raise InputError(
            f"the attack fooled only {int(fooled.sum())} of {len(xc)} inputs; detection needs "
            "successful adversarial examples (raise eps or the number of steps)."
        )
    gen = generator(seed)
    clean, adv, labels = xc[fooled], adv[fooled], yc[fooled]
    noisy = noise_like(clean.cpu(), adv.cpu(), gen).to(dev)
    sources = correct.nonzero().squeeze(1)[fooled].cpu()
    return DetectionSet(
        clean, noisy, adv, labels, float(fooled.float().mean()), len(xc), sources=sources
    )


def extract(
    model: nn.Module, x: torch.Tensor, layer: str | None = None, batch_size: int = 256
) -> torch.Tensor:
    """``(N, D)`` features of ``x``: ``model.features`` or the output of ``layer``, flattened."""
    if layer is None and not hasattr(model, "features"):
        raise InputError(
            f"{type(model).__name__} has no features(x); pass layer='...' (a layer name)."
        )
    out = []
    dev = device_of(model)
    with frozen(model), torch.no_grad():
        for b in x.split(batch_size):
            b = b.to(dev)
            if layer is None:
                out.append(model.features(b).flatten(1))
            else:
                with feature_taps(model, layer) as taps:
                    model(b)
                out.append(taps[layer].flatten(1))
    return torch.cat(out)


class FeatureDetector:
    """A detector = features per input + a scaler + a classifier (see the module).

    Subclasses implement :meth:`features` (and :meth:`features_of`) and register in
    :data:`trustlab.registry.DETECTORS`.

    Args:
        classifier: ``"lr"`` (default; logistic regression, the papers' choice) or ``"rf"``
            (random forest, 100 trees).
        seed: seeds the random forest and any random draws of the features (default 0).

    Shape:
        :meth:`fit` takes ``(N, C, H, W)`` clean, adversarial and (optional) noisy inputs;
        :meth:`score` maps ``(N, C, H, W)`` to ``(N,)`` probabilities of being adversarial.

    Example::

        det = DeepFeatureDetector(model).fit(sets.clean, sets.adversarial, sets.noisy)
        p_adv = det.score(x)
    """

    name = "features"

    def __init__(self, classifier: str = "lr", seed: int = 0) -> None:
        if classifier not in CLASSIFIERS:
            raise InputError(
                f"unknown classifier {classifier!r}; use one of {', '.join(CLASSIFIERS)}."
            )
        self.classifier = classifier
        self.seed = seed
        self.pipeline = None

    # -- features ------------------------------------------------------------------------------
    def features(
        self, clean: torch.Tensor, noisy: torch.Tensor, adversarial: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def features_of(self, x: torch.Tensor) -> np.ndarray:
        """Features of arbitrary inputs (after :meth:`fit`)."""
        raise NotImplementedError

    # -- the classifier ------------------------------------------------------------------------
    def _new_pipeline(self):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        clf = (
            LogisticRegressionCV(max_iter=1000, n_jobs=1)
            if self.classifier == "lr"
            else RandomForestClassifier(n_estimators=100, random_state=self.seed, n_jobs=1)
        )
        return _Quiet(make_pipeline(StandardScaler(), clf))

    def fit(
        self, clean: torch.Tensor, adversarial: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> FeatureDetector:
        """Fit on clean (and noisy) negatives and adversarial positives."""
        if noisy is None:
            noisy = clean
        fc, fn, fa = self.features(clean, noisy, adversarial)
        x, t = _stack(fc, fn, fa)
        self.pipeline = self._new_pipeline().fit(x, t)
        return self

    def score(self, x: torch.Tensor) -> torch.Tensor:
        if self.pipeline is None:
            raise InputError(f"the {self.name} detector is not fitted: call fit() first.")
        p = self.pipeline.predict_proba(self.features_of(x))[:, 1]
        return torch.from_numpy(p).float()


class _Quiet:
    """A scikit-learn pipeline whose ``fit`` hides the FutureWarnings of newer scikit-learn
    releases about LogisticRegressionCV defaults (trustlab supports scikit-learn >= 1.3)."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def fit(self, x: np.ndarray, t: np.ndarray) -> _Quiet:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.pipeline.fit(x, t)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.pipeline.predict_proba(x)


def _stack(fc: np.ndarray, fn: np.ndarray, fa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([fc, fn, fa])
    t = np.concatenate([np.zeros(len(fc) + len(fn)), np.ones(len(fa))])
    return x, t


@dataclass
class DetectionReport:
    """ROC-AUC of a detector over random train/test splits (:func:`evaluate_detector`).

    Attributes:
        detector: the detector's name.
        aucs: one ROC-AUC per split (``nan`` where a test split holds one class only, or, in a
            cross-attack test, no input outside the training split).
        n_adversarial: the number of adversarial examples.
        attack_success: the attack's success among correctly classified inputs.
        roc: ``(fpr, tpr)`` per split.

    Example::

        report = evaluate_detector(LIDDetector(model), sets, splits=3)
        report.mean_auc, report.to_dict()
    """

    detector: str
    aucs: list[float] = field(default_factory=list)
    n_adversarial: int = 0
    attack_success: float = 0.0
    roc: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def mean_auc(self) -> float:
        return float(np.mean(self.aucs)) if self.aucs else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "detector": self.detector,
            "auc": self.aucs,
            "mean_auc": self.mean_auc,
            "n_adversarial": self.n_adversarial,
            "attack_success": self.attack_success,
        }


SPLITS = ("source", "row")


def split_rows(
    sources: np.ndarray,
    test_fraction: float,
    rng: np.random.Generator,
    split: str = "source",
) -> tuple[np.ndarray, np.ndarray]:
    """One random train/test split of the rows of a stacked detection set (``[clean; noisy;
    adversarial]``, ``3 M`` rows, row ``i`` of each block from source ``sources[i]``):
    ``(train_rows, test_rows)``.

    ``split="source"`` (default) draws ``round(M * test_fraction)`` test sources and puts all
    three copies of each on the test side, the rest on the training side; ``"row"`` draws the
    rows themselves (the old, leaky split: a test row's twins are mostly in training).
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    m = len(sources)
    if split == "row":
        order = rng.permutation(3 * m)
        cut = int(round(3 * m * (1 - test_fraction)))
        return np.sort(order[:cut]), np.sort(order[cut:])
    order = rng.permutation(m)
    cut = int(round(m * (1 - test_fraction)))
    blocks = np.arange(3)[:, None] * m
    train = (order[:cut][None, :] + blocks).ravel()
    test = (order[cut:][None, :] + blocks).ravel()
    return np.sort(train), np.sort(test)


def evaluate_detector(
    detector: FeatureDetector,
    data: DetectionSet,
    splits: int = 3,
    test_fraction: float = 0.2,
    seed: int = 0,
    transfer_to: DetectionSet | None = None,
    split: str = "source",
) -> DetectionReport:
    """ROC-AUC of ``detector`` over ``splits`` random train/test splits (scaler and classifier
    fit on the training split only).

    Args:
        detector: the detector whose features and classifier are evaluated.
        data: aligned clean, noisy and adversarial copies (:func:`build_detection_set`).
        splits: random splits (default 3, the papers').
        test_fraction: share of the source inputs held out (default 0.2: an 80/20 split).
        seed: seeds the splits (default 0).
        transfer_to: another attack's set: the classifier trained on ``data`` is tested on it
            (cross-attack transfer), on the rows whose source input is outside the training
            split (both sets carry ``sources`` from the same ``x``), else on a random
            ``test_fraction`` of its sources.
        split: ``"source"`` (default: the three copies of an input stay on one side, as the
            LID authors' ``block_split``) or ``"row"`` (rows drawn at random, the medical
            paper's released code; leaks, kept to measure it).

    Raises:
        InputError: bad ``splits``/``test_fraction``/``split``, misaligned copies, or a
            training split without both classes.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if splits < 1 or not 0 < test_fraction < 1:
        raise InputError(
            f"need splits >= 1 and 0 < test_fraction < 1 (got {splits}, {test_fraction})."
        )
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    ids = data.source_ids()
    x, t = _stack(*detector.features(data.clean, data.noisy, data.adversarial))
    other = None
    if transfer_to is not None:
        other_ids = transfer_to.source_ids()
        other = _stack(
            *detector.features(transfer_to.clean, transfer_to.noisy, transfer_to.adversarial)
        )
        shared = data.sources is not None and transfer_to.sources is not None
        shared = shared and split == "source"
    rng = np.random.default_rng(seed)
    report = DetectionReport(detector.name, n_adversarial=len(data.adversarial),
                             attack_success=data.attack_success)  # fmt: skip
    for _ in range(splits):
        train, test = split_rows(ids, test_fraction, rng, split)
        if len(np.unique(t[train])) < 2:
            raise InputError("too few samples for a train/test split with both classes.")
        pipe = detector._new_pipeline().fit(x[train], t[train])
        if other is not None:
            ox, ot = other
            if shared:
                seen = np.isin(other_ids, ids[train % len(ids)])
            else:
                n_test = max(1, int(round(len(other_ids) * test_fraction)))
                seen = np.ones(len(other_ids), dtype=bool)
                seen[rng.permutation(len(other_ids))[:n_test]] = False
            xs, ts = ox[np.tile(~seen, 3)], ot[np.tile(~seen, 3)]
        else:
            xs, ts = x[test], t[test]
        if len(ts) == 0:
            report.aucs.append(float("nan"))
            report.roc.append((np.zeros(0), np.zeros(0)))
            continue
        p = pipe.predict_proba(xs)[:, 1]
        report.aucs.append(float(roc_auc_score(ts, p)) if len(np.unique(ts)) == 2 else float("nan"))
        fpr, tpr, _ = roc_curve(ts, p)
        report.roc.append((fpr, tpr))
    return report
