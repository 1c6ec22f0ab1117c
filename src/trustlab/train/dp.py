"""DP-SGD through Opacus: Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, as
implemented by Opacus (Yousefpour et al., "Opacus: User-Friendly Differential Privacy Library in
PyTorch", 2021).

Each step draws a Poisson sample of the training set (every example independently with
probability ``q``), computes every sample's gradient, clips each to L2 norm ``max_grad_norm``
(``C``), sums them, adds Gaussian noise of standard deviation ``noise_multiplier * C`` (``sigma``)
and divides by the expected batch size ``q * N``. An accountant composes the steps into an
(epsilon, delta) guarantee: Renyi DP (``rdp``, Mironov 2017; trustlab's default) or the
privacy-loss-random-variable accountant (``prv``, Gopi et al. 2021: a little tighter, Opacus'
default, but about four times slower to query here: ~5 s per epsilon for a 70-step history on
the shared 2-core machine against ~1 s, and ~60 s against ~20 s to find sigma for a target
epsilon).

trustlab does not write any of this itself: :class:`PrivateTraining` hands the model, the
optimizer and an index loader to ``opacus.PrivacyEngine.make_private`` and uses what comes back
(``GradSampleModule``: per-sample gradients; ``DPOptimizer``: clipping and noise; the
``DPDataLoader``'s Poisson batch sampler; the engine's accountant, stepped by the optimizer). It
only adds what trustlab's one training loop (:class:`~trustlab.train.Trainer`) needs: batches
gathered from in-memory tensors by the sampled indices, seeded sampling and noise that are a
function of ``(seed, epoch)`` (so a killed run resumes with the same numbers), the accountant's
history in the checkpoint, and ``epsilon`` in every epoch's metrics.

Settings (:class:`DPSettings`; ``TrainSettings.dp``): either a target ``epsilon`` (``sigma`` is
then found by Opacus' ``get_noise_multiplier`` for the run's steps and sampling rate) or an
explicit ``noise_multiplier``; ``delta`` 1e-5, ``max_grad_norm`` 1.0, accountant ``rdp``,
Poisson sampling on. The sampling rate is ``q = 1 / ceil(N / batch_size)`` (Opacus' rule: the
expected batch is at most ``batch_size``) and an epoch is Opacus' ``int(1 / q)`` Poisson steps
(for some ``N / batch_size`` one fewer than ``ceil(N / batch_size)``, as the float reciprocal
rounds down). Opacus' accountant records each step at ``q' = 1 / int(1 / q)`` (one over the
number of steps), slightly above ``q`` in those cases; sigma for a target epsilon is found for
exactly those steps at ``q'``, the rate the accountant charges (sized for ``q``, a target of 8
could end at 8.04), ``report()`` records both, and a run with a target epsilon resumes only with
its original number of epochs. BatchNorm has no per-sample
gradients: models are converted with :func:`~trustlab.models.wrappers.group_norm` (Opacus'
fixer, GroupNorm), with a message that says so. Not supported with DP: ``compute_loss``
(adversarial training, the blind loss: their extra backward passes would corrupt the
per-sample gradients), ``clip_grad_norm`` (DP clips per sample) and ``torchrun`` (Opacus' DPDDP
is not wired).

``secure_mode=False`` (default) draws the noise and the samples from torch generators seeded from
the run's seed, which the results store records: fine for research and reproducibility (the same
seed gives the same model), but the (epsilon, delta) guarantee assumes noise nobody can replay.
For a model that is released, train with Opacus' ``secure_mode=True`` (torchcsprng), as Opacus
itself warns; ``report()`` records which mode was used.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from trustlab.data.datasets import ArrayDataset
from trustlab.errors import CheckpointError, InputError
from trustlab.utils.seed import derive_seed


class DPSettings(BaseModel):
    """DP-SGD settings (validated; unknown keys are errors): ``epsilon`` or ``noise_multiplier``.

    Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with Differential
    Privacy", CCS 2016, as implemented by Opacus (Yousefpour et al., 2021). Exactly one of
    ``epsilon`` and ``noise_multiplier`` must be set.

    Args:
        epsilon: target epsilon at the end of training (sets the noise); default None.
        noise_multiplier: sigma, noise std / ``max_grad_norm`` (instead of ``epsilon``); default
            None.
        delta: the delta of (epsilon, delta)-DP; default 1e-5.
        max_grad_norm: per-sample gradient clipping norm ``C``; default 1.0.
        accountant: ``"rdp"`` (default) or ``"prv"``. Opacus' default is ``"prv"``, a little
            tighter but about four times slower to query here (module docstring), hence trustlab's
            ``"rdp"``.
        poisson: Poisson sampling (what the accountants assume); default True.
        secure_mode: cryptographic noise (needs torchcsprng); default False (noise seeded from the
            run's seed: reproducible, not for released models).

    Example:
        >>> settings = DPSettings(epsilon=8.0, max_grad_norm=1.0)
        >>> settings.accountant, settings.delta
        ('rdp', 1e-05)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float | None = Field(
        None, gt=0, description="target epsilon at the end of training (sets the noise)"
    )
    noise_multiplier: float | None = Field(
        None, ge=0, description="sigma: noise std / max_grad_norm (instead of epsilon)"
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="the delta of (epsilon, delta)-DP")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample gradient clipping norm C")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="privacy accountant")
    poisson: bool = Field(True, description="Poisson sampling (what the accountants assume)")
    secure_mode: bool = Field(False, description="cryptographic noise (needs torchcsprng)")

    @model_validator(mode="after")
    def _one_of(self) -> DPSettings:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "give exactly one of 'epsilon' (a target budget) and 'noise_multiplier'"
            )
        return self


def sample_rate(n: int, batch_size: int) -> float:
    """Opacus' Poisson sampling rate for ``n`` examples and a batch size: ``1 / ceil(n / b)``."""
    return 1.0 / math.ceil(n / batch_size)


def accounted_rate(q: float) -> float:
    """The rate Opacus' accountant charges per step for a sampling rate ``q``: one over the
    number of steps of an epoch, ``1 / int(1 / q)`` (above ``q`` when ``1 / q`` rounds down)."""
    return 1.0 / int(1 / q)


def privatize_model(model: nn.Module) -> nn.Module:
    """``model`` ready for per-sample gradients: BatchNorm replaced by GroupNorm with a warning
    that says so; other layers Opacus cannot handle raise :class:`InputError`."""
    from opacus.validators import ModuleValidator

    from trustlab.models.wrappers import group_norm

    model, replaced = group_norm(model)
    if replaced:
        warnings.warn(
            f"DP-SGD: replaced {replaced} BatchNorm layer(s) with GroupNorm (batch statistics "
            "mix the samples of a batch, so per-sample gradients do not exist with BatchNorm).",
            UserWarning,
            stacklevel=3,
        )
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise InputError(
            "DP-SGD cannot train this model: "
            + "; ".join(str(e).splitlines()[0] for e in errors)
            + ". Use layers Opacus supports (see opacus.validators)."
        )
    return model


class PrivateTraining:
    """The DP-SGD state of one training run; :class:`~trustlab.train.Trainer` drives it.

    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, through
    ``opacus.PrivacyEngine``: :meth:`attach` wraps the model and optimizer, :meth:`batches` draws
    each epoch's seeded Poisson batches, :meth:`epsilon` / :meth:`report` read the accountant,
    :meth:`state` is what a checkpoint keeps and :meth:`detach` removes Opacus' hooks.

    Args:
        settings: the :class:`DPSettings`.
        seed: the run's seed; sampling and noise are seeded from ``(seed, epoch)``.

    Example:
        >>> dp = PrivateTraining(DPSettings(noise_multiplier=1.0), seed=0)
        >>> dp.epsilon()
        0.0
    """

    def __init__(self, settings: DPSettings, seed: int) -> None:
        self.settings = settings
        self.seed = seed
        self.noise_multiplier: float | None = settings.noise_multiplier
        self.sample_rate: float | None = None
        self.accounted_rate: float | None = None
        self.epochs: int | None = None
        self._engine: Any = None
        self._module: Any = None
        self._optimizer: Any = None
        self._sampler: Any = None
        self._data_gen = torch.Generator()
        self._noise_gen: torch.Generator | None = None

    def attach(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        n: int,
        batch_size: int,
        epochs: int,
        device: torch.device,
        state: dict[str, Any] | None = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Wrap ``model`` and ``optimizer`` with Opacus for ``n`` examples; ``state`` is what
        :meth:`state` returned before (a resumed run: the same sigma, the accountant's
        history)."""
        from opacus import PrivacyEngine
        from opacus.accountants.utils import get_noise_multiplier
        from torch.utils.data import DataLoader, TensorDataset

        s = self.settings
        if not s.poisson:
            warnings.warn(
                "DP-SGD with poisson=False: the accountants assume Poisson sampling, so the "
                "epsilon reported for shuffled fixed-size batches is not a proven guarantee.",
                UserWarning,
                stacklevel=3,
            )
        self.sample_rate = sample_rate(n, batch_size)
        self.epochs = epochs
        # Opacus' Poisson sampler runs int(1 / q) steps per epoch (one fewer than ceil(n / b)
        # for some n / b, as float division rounds) and its accountant charges each at
        # 1 / int(1 / q): sigma is found for the steps actually run at the rate charged
        self.accounted_rate = accounted_rate(self.sample_rate)
        steps = epochs * int(1 / self.sample_rate)
        if state is not None:
            self.noise_multiplier = float(state["noise_multiplier"])
            if s.epsilon is not None and int(state.get("epochs", epochs)) != epochs:
                raise CheckpointError(
                    f"this DP-SGD run aimed at epsilon {s.epsilon} over {state['epochs']} "
                    f"epochs; its noise was sized for them, so {epochs} epochs would end at "
                    "another epsilon. Resume with the original epochs (or start a new run)."
                )
        elif s.epsilon is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Opacus' notes on the PRV accountant's grid
                self.noise_multiplier = float(
                    get_noise_multiplier(
                        target_epsilon=s.epsilon,
                        target_delta=s.delta,
                        sample_rate=self.accounted_rate,
                        steps=steps,
                        accountant=s.accountant,
                    )
                )
        assert self.noise_multiplier is not None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
            try:
                self._engine = PrivacyEngine(accountant=s.accountant, secure_mode=s.secure_mode)
            except ImportError as exc:
                raise InputError(
                    f"DP-SGD with secure_mode=True needs torchcsprng ({exc}); install it "
                    "(`pip install torchcsprng` for a torch it supports) or train with "
                    "secure_mode=False (seeded noise, fine for research)."
                ) from None
        if not s.secure_mode:
            self._noise_gen = torch.Generator(device=device)
        # the loader yields indices: batches are gathered from the in-memory tensors
        loader = DataLoader(
            TensorDataset(torch.arange(n)), batch_size=batch_size, generator=self._data_gen
        )
        module, opt, dp_loader = self._engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=s.max_grad_norm,
            poisson_sampling=s.poisson,
            noise_generator=self._noise_gen,
        )
        self._module, self._optimizer = module, opt
        self._sampler = dp_loader.batch_sampler if s.poisson else None
        if state is not None:
            self._engine.accountant.history = [tuple(h) for h in state["history"]]
        return module, opt

    def batches(
        self, train: ArrayDataset, batch_size: int, epoch: int, device: torch.device
    ) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], int]:
        """This epoch's batches and their number: Poisson samples (sizes vary; some may be
        empty), or a seeded shuffle in fixed batches with ``poisson=False``."""
        self._data_gen.manual_seed(derive_seed(self.seed, "dp-sample", epoch))
        if self._noise_gen is not None:
            self._noise_gen.manual_seed(derive_seed(self.seed, "dp-noise", epoch))
        n = len(train)
        if self._sampler is not None:
            steps = len(self._sampler)
            index_batches: Any = (torch.as_tensor(idx, dtype=torch.long) for idx in self._sampler)
        else:
            order = torch.randperm(n, generator=self._data_gen)
            steps = math.ceil(n / batch_size)
            index_batches = (order[s : s + batch_size] for s in range(0, n, batch_size))

        def gather() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for idx in index_batches:
                yield train.x[idx].to(device), train.y[idx].to(device)

        return gather(), steps

    def epsilon(self) -> float:
        """The epsilon spent so far at ``settings.delta`` (0 before the first step)."""
        if self._engine is None or not self._engine.accountant.history:
            return 0.0
        if not self.noise_multiplier:
            return math.inf  # no noise, no privacy
        return float(self._engine.accountant.get_epsilon(delta=self.settings.delta))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: sigma, the sampling rate and the accountant's history."""
        history = [] if self._engine is None else self._engine.accountant.history
        return {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "epochs": self.epochs,
            "history": [list(h) for h in history],
        }

    def report(self) -> dict[str, float | bool]:
        """``epsilon`` (spent), ``delta``, ``noise_multiplier``, ``max_grad_norm``,
        ``sample_rate`` (Poisson's q), ``accounted_sample_rate`` (the q' the accountant charges),
        ``secure_mode`` (a bool), and ``target_epsilon`` when one was set."""
        out = {
            "epsilon": self.epsilon(),
            "delta": self.settings.delta,
            "noise_multiplier": float(self.noise_multiplier or 0.0),
            "max_grad_norm": self.settings.max_grad_norm,
            "sample_rate": float(self.sample_rate or 0.0),
            "accounted_sample_rate": float(self.accounted_rate or 0.0),
            "secure_mode": bool(self.settings.secure_mode),
        }
        if self.settings.epsilon is not None:
            out["target_epsilon"] = self.settings.epsilon
        return out

    def detach(self) -> None:
        """Remove Opacus' hooks from the model (it is a plain module again)."""
        if self._optimizer is not None:  # Opacus' summed_grad and the last noisy .grad
            self._optimizer.zero_grad(set_to_none=True)
            for p in self._optimizer.params:
                if hasattr(p, "summed_grad"):
                    del p.summed_grad
            self._optimizer = None
        if self._module is not None:
            self._module.to_standard_module()
            self._module = None
