"""STRIP: Gao, Xu, Wang, Chen, Ranasinghe & Nepal, "STRIP: A Defence Against Trojan Attacks on
Deep Neural Networks", ACSAC 2019.

A trigger dominates the prediction: superimposed on other images, a triggered input is still
sent to the target class, while a clean input's prediction wanders. STRIP superimposes every
input with ``N`` clean images drawn at random (with replacement) from a held-out clean set,
and computes the **mean entropy** of the ``N`` predictions (the paper's normalised entropy
``H = (1/N) sum_n -sum_k p_nk log2 p_nk``, in bits). Low entropy is suspicious, so
:meth:`STRIP.score` returns ``-H`` (higher = more suspicious, the detector protocol's
convention). The detection boundary is set from the clean entropy distribution at a chosen
false-rejection rate (FRR): as the authors' code, a normal distribution is fitted to the clean
entropies and the boundary is its ``FRR`` quantile (``threshold="quantile"`` takes the empirical
quantile instead); an input is flagged when its entropy is below the boundary.

Defaults: ``overlays = 100`` (the paper's N), ``frr = 0.01`` (1%). Superimposition: the
authors' code adds the two images with weight 1 each (``cv2.addWeighted(x, 1, o, 1, 0)``,
saturating on ``uint8`` images), so trustlab's default ``blend="add"`` is
``clamp(x + o, 0, 1)``; ``blend="average"`` is ``0.5 x + 0.5 o``.

Cost: scoring ``B`` inputs takes ``N x B`` forward passes (100x plain inference), batched
``batch_size`` blends at a time; on a CPU lower ``overlays`` (e.g. 20) for large sets. Fitting
scores the clean set itself, so keep it to a few hundred images.

Protocol: ``fit(clean)`` needs clean inputs only. ``fit(clean, adversarial=None, noisy=None)``
accepts (and ignores) the supervised detectors' other two sets, so STRIP satisfies
:class:`~trustlab.defenses.detection.base.InputDetector` and plugs in wherever LID, KD/BU and
the deep-feature detector do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trustlab.defenses.backdoor.base import input_batch
from trustlab.defenses.backdoor.case import DefenseCase
from trustlab.errors import InputError
from trustlab.metrics.detection import auroc, tpr_at_fpr
from trustlab.registry import DEFENSES
from trustlab.utils.modules import device_of, frozen
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import derive_seed, generator

BLENDS = ("add", "average")
THRESHOLDS = ("normal", "quantile")


def superimpose(x: torch.Tensor, overlay: torch.Tensor, blend: str = "add") -> torch.Tensor:
    """``clamp(x + o, 0, 1)`` (``"add"``) or ``(x + o) / 2`` (``"average"``)."""
    if blend == "add":
        return (x + overlay).clamp(0, 1)
    if blend == "average":
        return 0.5 * x + 0.5 * overlay
    raise InputError(f"unknown blend {blend!r}; use one of {', '.join(BLENDS)}.")


@DEFENSES.register(
    "strip",
    "STRIP: low prediction entropy under superimposition flags triggered inputs",
    paper="Gao, Xu, Wang, Chen, Ranasinghe, Nepal. STRIP: A Defence Against Trojan Attacks on "
    "Deep Neural Networks. ACSAC 2019.",
    threat="run-time input detection with a small clean set",
    inputs=("model",),
    protocol="input-detector",
    filter=False,
    trains=False,
    headline=("auroc", "AUROC"),
)
class STRIP:
    """The STRIP input detector (Gao et al., ACSAC 2019; see the module).

    Args:
        model: the (possibly backdoored) classifier.
        overlays: clean images superimposed on each input (the paper's N = 100).
        blend: ``"add"`` (the authors', clipped) or ``"average"``.
        frr: false-rejection rate on clean inputs that sets the boundary (1%).
        threshold: ``"normal"`` (the authors': quantile of a fitted normal) or ``"quantile"``.
        batch_size: blends per forward pass.
        seed: seeds the overlay draws (the same seed and inputs give the same scores).
        progress: a progress bar over the chunks of blends.

    Shapes: inputs ``(N, C, H, W)`` in [0, 1]; :meth:`score` returns ``(N,)``.

    Example::

        det = STRIP(model, overlays=100).fit(clean_x)
        flagged = det.detect(x)
    """

    def __init__(
        self,
        model: nn.Module,
        overlays: int = 100,
        blend: str = "add",
        frr: float = 0.01,
        threshold: str = "normal",
        batch_size: int = 1024,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if overlays < 1 or batch_size < 1:
            raise InputError("overlays and batch_size must be >= 1.")
        if blend not in BLENDS:
            raise InputError(f"unknown blend {blend!r}; use one of {', '.join(BLENDS)}.")
        if threshold not in THRESHOLDS:
            raise InputError(
                f"unknown threshold rule {threshold!r}; use one of {', '.join(THRESHOLDS)}."
            )
        if not 0 < frr < 1:
            raise InputError(f"frr must be in (0, 1), got {frr}.")
        self.model, self.overlays, self.blend, self.frr = model, overlays, blend, frr
        self.threshold_rule, self.batch_size, self.seed = threshold, batch_size, seed
        self.progress = progress
        self.pool: torch.Tensor | None = None
        self.clean_entropy: torch.Tensor | None = None
        self.threshold: float | None = None

    @classmethod
    def run_case(cls, c: DefenseCase) -> dict[str, float]:
        """Fit on the clean half; score the evaluation half's clean inputs against its
        triggered non-target inputs: ``auroc``, ``tpr_at_5fpr``, and ``tpr`` / ``fpr`` at
        STRIP's own boundary."""
        det = cls(c.art.model, seed=c.seed, progress=c.progress, **c.options).fit(c.clean.x)
        target = c.art.policy.target_for(c.ev.y)
        x_trig = c.art.trigger(c.ev.x[c.ev.y != target])
        s_clean, s_trig = det.score(c.ev.x), det.score(x_trig)
        scores = torch.cat([s_clean, s_trig])
        labels = torch.cat([torch.zeros(len(s_clean)), torch.ones(len(s_trig))]).bool()
        # STRIP's own boundary on the entropies just computed (detect() would compute them again)
        assert det.threshold is not None
        flagged_clean, flagged_trig = -s_clean < det.threshold, -s_trig < det.threshold
        return {
            "auroc": auroc(scores, labels),
            "tpr_at_5fpr": tpr_at_fpr(scores, labels, 0.05),
            "tpr": float(flagged_trig.float().mean()),
            "fpr": float(flagged_clean.float().mean()),
        }

    # -- the protocol ---------------------------------------------------------------------------
    def fit(
        self,
        clean: torch.Tensor | Dataset,
        adversarial: torch.Tensor | None = None,
        noisy: torch.Tensor | None = None,
    ) -> STRIP:
        """Keep ``clean`` as the overlay pool, compute its entropies and set the boundary.
        ``adversarial`` and ``noisy`` are ignored (STRIP is unsupervised; see the module)."""
        x = input_batch(clean, "the clean inputs")
        if len(x) < 2:
            raise InputError("STRIP needs at least 2 clean inputs to fit (a few hundred is usual).")
        self.pool = x.detach().cpu()
        h = self._entropy(x, derive_seed(self.seed, "fit"))
        self.clean_entropy = h
        if self.threshold_rule == "normal":
            mu, sigma = float(h.mean()), float(h.std(unbiased=False))
            sigma = max(sigma, 1e-12)
            normal = torch.distributions.Normal(torch.tensor(mu), torch.tensor(sigma))
            self.threshold = float(normal.icdf(torch.tensor(self.frr)))
        else:
            self.threshold = float(torch.quantile(h.double(), self.frr))
        return self

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``-H(x)``: higher = more suspicious (lower mean entropy under superimposition)."""
        return -self.entropy(x)

    # -- STRIP's own views ----------------------------------------------------------------------
    def entropy(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` mean entropy in bits of the predictions on ``x`` superimposed with
        ``overlays`` clean images each."""
        self._check_fitted()
        return self._entropy(input_batch(x, "the inputs"), derive_seed(self.seed, "score"))

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` booleans: entropy below the boundary (flagged as triggered)."""
        self._check_fitted()
        return self.entropy(x) < self.threshold

    # -- internals ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.pool is None or self.threshold is None:
            raise InputError("STRIP is not fitted: call fit(clean_inputs) first.")

    def _entropy(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        assert self.pool is not None
        if x.shape[1:] != self.pool.shape[1:]:
            raise InputError(
                f"inputs of shape {tuple(x.shape[1:])} but the clean images are "
                f"{tuple(self.pool.shape[1:])}."
            )
        dev = device_of(self.model)
        b, n = len(x), self.overlays
        picks = torch.randint(len(self.pool), (b * n,), generator=generator(seed))
        owner = torch.arange(b).repeat_interleave(n)  # blend j belongs to input owner[j]
        out = torch.empty(b * n, dtype=torch.float64)
        chunks = range(0, b * n, self.batch_size)
        with (
            frozen(self.model),
            torch.no_grad(),
            progress_bar("STRIP", len(chunks), self.progress) as advance,
        ):
            for s in chunks:
                sl = slice(s, s + self.batch_size)
                xb = x[owner[sl].to(x.device)].to(dev)
                blended = superimpose(xb, self.pool[picks[sl]].to(dev, xb.dtype), self.blend)
                logp = F.log_softmax(self.model(blended).double(), 1)
                out[sl] = -(logp.exp() * logp).sum(1).cpu() / math.log(2)
                advance()
        return out.view(b, n).mean(1).float()
