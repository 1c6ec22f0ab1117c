"""SCALE-UP: Guo, Li, Chen, Guo, Sun & Liu, "SCALE-UP: An Efficient Black-box Input-level
Backdoor Detection via Analyzing Scaled Prediction Consistency", ICLR 2023.

A backdoored model keeps predicting the target class when the pixel values of a triggered input
are amplified (the trigger's features survive the saturation), while a clean input's prediction
usually moves. SCALE-UP multiplies every input by each factor ``n`` of a scale set, clips to
[0, 1], and measures the **scaled prediction consistency**

    ``SPC(x) = (1/|S|) sum_{n in S} 1[argmax f(clip(n x, 0, 1)) == argmax f(x)]``,

the fraction of amplified copies that keep the original prediction. High SPC is suspicious, so
:meth:`ScaleUp.score` returns it directly (higher = more suspicious). The method is black-box:
only the predicted label of ``1 + |S|`` forward passes per input is read.

Variants (the paper's two settings):

- ``"data-free"`` (the default, as BackdoorBox's ``SCALE_UP`` without ``valset``): the score is
  the plain SPC in [0, 1]; an input is flagged when ``SPC >= T`` with ``T = 0.5``.
- ``"data-limited"``: the defender holds a few benign samples; the score is the SPC
  standardised with the benign SPC statistics, ``(SPC(x) - mu_c) / sigma_c``, where ``c`` is the
  class the model predicts for ``x`` (the paper standardises per class; BackdoorBox pools all
  classes into one mean and std). A class with fewer than 2 benign samples or zero spread falls
  back to the pooled statistics. An input is flagged when the standardised score is ``>= T``
  (BackdoorBox applies the same ``T = 0.5`` to the standardised score).

Defaults and sources: ``scales = (3, 5, 7, 9, 11)`` and ``threshold = 0.5`` from BackdoorBox
``core/defenses/SCALE_UP.py`` (Yiming Li, the paper's second author); amplification on
[0, 1] images with clipping before the model's own normalisation (trustlab's models normalise
inside, so ``clip(n x)`` is exactly BackdoorBox's "no normalize" branch); SPC compared with the
prediction on the unscaled input (as BackdoorBox ``_test`` / ``_detect`` and the authors'
``test.py``); decision ``score >= T`` (BackdoorBox's code; its docstring says ``>``).

Deviations, with reasons:

- The authors' repository (JunfengGo/SCALE-UP, ``torch_model_wrapper.py``) scales by every
  integer 1..11 and averages over the 11 columns including the unscaled one (a monotone
  transform of the SPC over scales 2..11), after adding ``0.02 * U[0, 1)`` noise to the inputs;
  trustlab follows BackdoorBox's set and adds no noise (``scales=tuple(range(2, 12))`` gives the
  repository's ranking, so the same AUROC).
- Data-limited statistics: grouped by the class the model *predicts* for each benign sample
  (the same key that is looked up at scoring time; no labels needed, so ``fit`` takes images
  only like STRIP), and the benign SPC is computed against the benign sample's own prediction.
  BackdoorBox computes the benign SPC against the true labels and pools all classes.
- ``frr`` (trustlab's option, default off): sets ``T`` from the clean set as the smallest score
  that flags at most a fraction ``frr`` of the clean inputs, instead of the fixed ``T``.
- The bench (``run_case``) scores all clean inputs of the evaluation half and its triggered
  non-target inputs, as STRIP's; the authors keep only correctly classified clean inputs and
  successful triggered ones.

Measured (single CPU thread, seeds 0; AUROC of clean vs triggered non-target inputs):

- digits, cnn-small, BadNets 10%, 3 epochs (tests/defenses/test_scale_up.py; clean accuracy
  0.98, ASR 1.00): mean SPC 0.90 triggered vs 0.73 clean, AUROC 0.63 data-free, 0.58
  data-limited; STRIP on the same model and inputs 0.998 (10 overlays) / 1.00 (100). Digits
  are strokes on a black background that stays black under amplification, so a clean digit
  keeps its class and its SPC is high: SCALE-UP's premise needs natural images.
- the bench's smoke preset (digits): BadNets AUROC 0.70 (STRIP 0.95), blind 0.80 (STRIP 1.00).
- shapes10 (4,000 training images), ResNet-8, 5 epochs, BadNets 10% (clean accuracy 0.33,
  ASR 0.98): SPC 0.97 triggered vs 0.22 clean, AUROC 0.90 data-free (0.92 with the
  repository's scales 2..11), 0.86 data-limited.
- TPR at 5% FPR is 0 in all of these: SPC takes ``|S| + 1`` values and more than 5% of the
  clean inputs reach SPC 1, so no boundary flags triggered inputs at <= 5% FPR.

Cost: ``1 + |S|`` forward passes per input (6 with the default set), all copies of a chunk in
one batched forward (``batch_size`` copies at a time; 256 by default, faster than 1024 on a CPU
for ResNet-8); no randomness, so the scores are deterministic. Fitting scores the clean set
once for the data-limited variant or ``frr``; the default (data-free, fixed ``T``) needs no
clean data and ``fit`` only records the input shape.

Protocol: ``fit(clean, adversarial=None, noisy=None)`` takes clean inputs only (the other two
are ignored), so SCALE-UP satisfies
:class:`~trustlab.defenses.detection.base.InputDetector`, like STRIP.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from trustlab.defenses.backdoor.base import input_batch
from trustlab.defenses.backdoor.case import DefenseCase
from trustlab.errors import InputError
from trustlab.metrics.detection import auroc, tpr_at_fpr
from trustlab.registry import DEFENSES
from trustlab.utils.modules import device_of, frozen
from trustlab.utils.progress import progress_bar

VARIANTS = ("data-free", "data-limited")

__all__ = ["VARIANTS", "ScaleUp", "scaled_predictions"]


def scaled_predictions(
    model: nn.Module,
    x: torch.Tensor,
    scales: tuple[float, ...],
    batch_size: int = 1024,
    progress: bool = False,
) -> torch.Tensor:
    """``(B, 1 + |S|)`` predicted labels: column 0 on ``x`` itself, column ``j`` on
    ``clip(scales[j-1] * x, 0, 1)``. All copies of a chunk of inputs go through one forward."""
    dev = device_of(model)
    factors = torch.tensor(scales, dtype=x.dtype)
    k = 1 + len(scales)
    per = max(1, batch_size // k)  # inputs per chunk; k copies each
    out = torch.empty(len(x), k, dtype=torch.long)
    chunks = range(0, len(x), per)
    with (
        frozen(model),
        torch.no_grad(),
        progress_bar("SCALE-UP", len(chunks), progress) as advance,
    ):
        for s in chunks:
            xb = x[s : s + per].to(dev)
            f = factors.to(dev).view(-1, *([1] * xb.dim()))
            copies = torch.cat([xb.unsqueeze(0), (xb.unsqueeze(0) * f).clamp(0, 1)])
            pred = model(copies.flatten(0, 1)).argmax(1).view(k, len(xb))
            out[s : s + len(xb)] = pred.T.cpu()
            advance()
    return out


@DEFENSES.register(
    "scale-up",
    "SCALE-UP: predictions that survive pixel amplification flag triggered inputs",
    paper="Guo, Li, Chen, Guo, Sun, Liu. SCALE-UP: An Efficient Black-box Input-level Backdoor "
    "Detection via Analyzing Scaled Prediction Consistency. ICLR 2023.",
    threat="run-time input detection, black-box (labels only); a small clean set for the "
    "data-limited variant",
    inputs=("model",),
    protocol="input-detector",
    filter=False,
    trains=False,
    headline=("auroc", "AUROC"),
)
class ScaleUp:
    """The SCALE-UP input detector (Guo et al., ICLR 2023; see the module).

    Args:
        model: the (possibly backdoored) classifier; only its predicted labels are used.
        scales: amplification factors ``n`` (BackdoorBox's ``(3, 5, 7, 9, 11)``).
        variant: ``"data-free"`` (plain SPC, the default) or ``"data-limited"`` (SPC
            standardised per predicted class with the clean set's statistics).
        threshold: ``T``; an input is flagged when its score is ``>= T`` (0.5, the authors').
        frr: if set, ``T`` is taken from the clean set instead: the smallest score flagging at
            most this fraction of it (trustlab's option; default ``None``, the fixed ``T``).
        batch_size: scaled copies per forward pass (256; all 1 + |S| copies of an input go
            into the same forward).
        progress: a progress bar over the chunks.

    Shapes: inputs ``(N, C, H, W)`` in [0, 1]; :meth:`score` and :meth:`spc` return ``(N,)``.

    Example::

        det = ScaleUp(model).fit(clean_x)
        flagged = det.detect(x)
    """

    def __init__(
        self,
        model: nn.Module,
        scales: tuple[float, ...] = (3, 5, 7, 9, 11),
        variant: str = "data-free",
        threshold: float = 0.5,
        frr: float | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> None:
        scales = tuple(float(n) for n in scales)
        if not scales or not all(n > 0 for n in scales):
            raise InputError(f"scales must be a non-empty list of positive factors, got {scales}.")
        if variant not in VARIANTS:
            raise InputError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}.")
        if frr is not None and not 0 < frr < 1:
            raise InputError(f"frr must be in (0, 1) or None, got {frr}.")
        if batch_size < 1:
            raise InputError("batch_size must be >= 1.")
        self.model, self.scales, self.variant = model, scales, variant
        self.frr, self.batch_size, self.progress = frr, batch_size, progress
        self.threshold: float = float(threshold)
        self.shape: tuple[int, ...] | None = None
        self.clean_spc: torch.Tensor | None = None
        self.clean_scores: torch.Tensor | None = None
        self.class_mean: torch.Tensor | None = None  # (K,) data-limited statistics
        self.class_std: torch.Tensor | None = None
        self._pooled = (0.0, 1.0)  # pooled clean SPC mean and std (data-limited)

    @classmethod
    def run_case(cls, c: DefenseCase) -> dict[str, float]:
        """Fit on the clean half; score the evaluation half's clean inputs against its
        triggered non-target inputs: ``auroc``, ``tpr_at_5fpr``, and ``tpr`` / ``fpr`` at
        the detector's own boundary."""
        det = cls(c.art.model, progress=c.progress, **c.options).fit(c.clean.x)
        target = c.art.policy.target_for(c.ev.y)
        x_trig = c.art.trigger(c.ev.x[c.ev.y != target])
        s_clean, s_trig = det.score(c.ev.x), det.score(x_trig)
        scores = torch.cat([s_clean, s_trig])
        labels = torch.cat([torch.zeros(len(s_clean)), torch.ones(len(s_trig))]).bool()
        return {
            "auroc": auroc(scores, labels),
            "tpr_at_5fpr": tpr_at_fpr(scores, labels, 0.05),
            "tpr": float((s_trig >= det.threshold).float().mean()),
            "fpr": float((s_clean >= det.threshold).float().mean()),
        }

    # -- the protocol ---------------------------------------------------------------------------
    def fit(
        self,
        clean: torch.Tensor | Dataset,
        adversarial: torch.Tensor | None = None,
        noisy: torch.Tensor | None = None,
    ) -> ScaleUp:
        """Record the input shape; for ``"data-limited"`` or with ``frr`` also score the
        clean inputs (``clean_spc``, ``clean_scores``) and keep their per-class SPC mean and
        std / set the boundary. The data-free variant with the fixed ``T`` needs no clean
        data, so it does not score them (nothing to learn; it saves a third of the bench's
        cost). ``adversarial`` and ``noisy`` are ignored."""
        x = input_batch(clean, "the clean inputs")
        if self.variant == "data-limited" and len(x) < 2:
            raise InputError(
                "the data-limited variant needs at least 2 clean inputs (a few per class)."
            )
        self.shape = tuple(x.shape[1:])
        if self.variant == "data-free" and self.frr is None:
            return self
        preds = scaled_predictions(self.model, x, self.scales, self.batch_size, self.progress)
        spc, cls_ = _consistency(preds), preds[:, 0]
        self.clean_spc = spc
        if self.variant == "data-limited":
            self._class_statistics(spc, cls_)
        self.clean_scores = self._standardise(spc, cls_)
        if self.frr is not None:
            self.threshold = _boundary(self.clean_scores, self.frr)
        return self

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)``: the SPC (``"data-free"``) or its standardised value (``"data-limited"``);
        higher = more suspicious."""
        preds = self._predictions(x)
        return self._standardise(_consistency(preds), preds[:, 0])

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` booleans: score ``>= T`` (flagged as triggered)."""
        return self.score(x) >= self.threshold

    # -- SCALE-UP's own views ---------------------------------------------------------------
    def spc(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the plain scaled prediction consistency in [0, 1], whatever the variant."""
        return _consistency(self._predictions(x))

    # -- internals ------------------------------------------------------------------------------
    def _predictions(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape is None:
            raise InputError("SCALE-UP is not fitted: call fit(clean_inputs) first.")
        x = input_batch(x, "the inputs")
        if tuple(x.shape[1:]) != self.shape:
            raise InputError(
                f"inputs of shape {tuple(x.shape[1:])} but the clean images are {self.shape}."
            )
        return scaled_predictions(self.model, x, self.scales, self.batch_size, self.progress)

    def _class_statistics(self, spc: torch.Tensor, cls_: torch.Tensor) -> None:
        spc = spc.double()
        mean, std = float(spc.mean()), float(spc.std())
        k = int(cls_.max()) + 1
        count = torch.bincount(cls_, minlength=k).double()
        total = torch.zeros(k, dtype=torch.float64).index_add_(0, cls_, spc)
        c_mean = total / count.clamp(min=1)
        sq = torch.zeros(k, dtype=torch.float64).index_add_(0, cls_, (spc - c_mean[cls_]) ** 2)
        c_std = (sq / (count - 1).clamp(min=1)).sqrt()  # unbiased, as torch.std
        ok = (count >= 2) & (c_std > 0)
        self.class_mean = torch.where(ok, c_mean, torch.tensor(mean, dtype=torch.float64))
        pooled = torch.tensor(max(std, 1e-12), dtype=torch.float64)
        self.class_std = torch.where(ok, c_std, pooled)
        self._pooled = (mean, float(pooled))

    def _standardise(self, spc: torch.Tensor, cls_: torch.Tensor) -> torch.Tensor:
        if self.variant == "data-free":
            return spc
        assert self.class_mean is not None and self.class_std is not None
        k = len(self.class_mean)
        seen = cls_ < k  # classes never predicted on the clean set use the pooled statistics
        idx = cls_.clamp(max=k - 1)
        mean = torch.where(seen, self.class_mean[idx], self._pooled[0])
        std = torch.where(seen, self.class_std[idx], self._pooled[1])
        return ((spc.double() - mean) / std).float()


def _consistency(preds: torch.Tensor) -> torch.Tensor:
    """SPC from :func:`scaled_predictions`'s ``(B, 1 + |S|)`` labels."""
    return (preds[:, 1:] == preds[:, :1]).float().mean(1)


def _boundary(clean_scores: torch.Tensor, frr: float) -> float:
    """The smallest clean score ``t`` with ``mean(clean >= t) <= frr`` (just above the maximum
    when even the top score is shared by more than ``frr`` of the clean inputs)."""
    s = clean_scores.sort().values  # float32, as the scores compared against it
    values = torch.unique(s)  # ascending
    rate = (len(s) - torch.searchsorted(s, values)).double() / len(s)  # mean(clean >= v)
    ok = rate <= frr
    if bool(ok.any()):
        return float(values[ok][0])
    return float(torch.nextafter(values[-1], torch.tensor(float("inf"), dtype=s.dtype)))
