"""DPGAN: a GAN whose discriminator is trained with DP-SGD, so that its samples can be shared.

Xie, Lin, Wang, Wang, Zhou, "Differentially Private Generative Adversarial Network",
arXiv:1802.06739 (2018), with the DP-SGD of Abadi et al., "Deep Learning with Differential
Privacy", CCS 2016, as implemented by Opacus. FDPDDL (Lyu et al., "How to Democratise and
Protect AI: Fair and Differentially Private Decentralised Deep Learning", IEEE TDSC 2020) uses it
in its first stage: each party trains a DPGAN on its own data and publishes samples that the
other parties label, which benchmarks them.

What is private. Only the discriminator touches the real images, so only its real-data
gradients are charged. Each discriminator step:

1. draws a Poisson sample of the real images (every image independently with probability
   ``q = 1 / ceil(N / batch_size)``, seeded; an empty sample is a step like any other);
2. computes every real image's gradient of the real-data loss (``-log D(x)``) through Opacus'
   ``GradSampleModule``, clips each to L2 norm ``max_grad_norm`` (``C``), sums them, adds Gaussian
   noise ``N(0, (sigma C)^2)`` and divides by the expected batch ``q N`` (Opacus'
   ``DPOptimizer``); the accountant records this step;
3. adds the plain gradient of the fake-data loss (``-log(1 - D(G(z)))``, ``batch_size`` fakes),
   computed with the per-sample hooks disabled: it depends on the real data only through the
   generator and the discriminator, both results of earlier private steps, so it is
   post-processing and costs nothing;
4. takes the Adam step.

The generator step (non-saturating loss ``-log D(G(z))``) uses the discriminator with its hooks
disabled and never sees a real image: post-processing as well. So epsilon is exactly what
Opacus' accountant gives for the discriminator's DP steps (``noise_multiplier``,
``sample_rate``, ``steps``), and any number of samples drawn afterwards costs no more.

trustlab drives Opacus through :class:`~trustlab.train.dp.PrivateTraining` (the same seeded
Poisson sampling, seeded noise, sigma for a target epsilon found by ``get_noise_multiplier`` for
exactly the run's steps, the RDP accountant) rather than a second copy of it. As there, the noise
is drawn from a generator seeded from the run's seed (``secure_mode=False``): the same seed gives
the same GAN, fine for research; a GAN whose samples are released for real should be trained
with cryptographic noise (Opacus' ``secure_mode``).

Compared with the authors' TensorFlow DPGAN used by FDPDDL (github lingjuanlv/FPPDL, ``dpgan/``):
they train a WGAN-GP critic (gradient penalty 10, 4-5 critic steps per generator step), clip at
``C = 4`` by default, take Adam at 2e-4 with betas (0.5, 0.9), batches of 64, delta
``1 / (100 N)``, augment each party's shard about 100-fold (small rotations and shifts) and stop
when a moments accountant's delta exceeds the target. trustlab keeps their learning rate, batch
size and latent size (64) but uses the DCGAN recipe (Radford et al. 2016: binary cross-entropy,
one discriminator step per generator step, Adam betas (0.5, 0.999)), ``C = 1`` (trustlab's DP-SGD
default), no augmentation, a fixed number of epochs with sigma chosen up front for the target
epsilon, and Opacus' RDP accountant; delta is a setting (default 1e-5).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from trustlab.data.datasets import ArrayDataset
from trustlab.errors import InputError
from trustlab.models.gan import Discriminator, Generator, check_shape
from trustlab.train.checkpoint import load_checkpoint, load_state, save_checkpoint
from trustlab.train.dp import DPSettings, PrivateTraining, privatize_model, sample_rate
from trustlab.utils.device import resolve_device
from trustlab.utils.modules import eval_mode
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import derive_seed, seed_torch_rng
from trustlab.utils.validate import check_int, format_validation_error

__all__ = ["DPGAN", "DPGANSettings", "check_images", "parse_settings", "train_dpgan"]

#: the file :meth:`DPGAN.save` writes in its folder (plus its JSON sidecar ``dpgan.json``)
FILE = "dpgan.safetensors"


class DPGANSettings(BaseModel):
    """DPGAN training settings (validated; unknown keys are errors).

    Xie et al., "Differentially Private Generative Adversarial Network", arXiv:1802.06739
    (2018); DP-SGD of Abadi et al., CCS 2016. Give ``epsilon`` (a target budget: sigma is found
    for the run's steps) or ``noise_multiplier``, not both; neither trains a plain, non-private
    GAN (reported epsilon ``inf``).

    Args:
        epochs: passes over the real data (each ``int(1 / q)`` Poisson steps); default 20.
        batch_size: expected real batch (the sampling rate is ``1 / ceil(N / batch_size)``) and
            the number of fakes per step; default 64.
        lr: Adam learning rate of both networks, betas (0.5, 0.999) as in DCGAN; default 2e-4.
        latent_dim: size of the generator's latent code; default 64.
        epsilon: target epsilon at the end of training; default None.
        noise_multiplier: sigma (noise std / ``max_grad_norm``) instead of ``epsilon``; default
            None.
        delta: the delta of (epsilon, delta)-DP; default 1e-5.
        max_grad_norm: per-sample clipping norm ``C`` of the real-data gradients; default 1.0.
        accountant: ``"rdp"`` (default) or ``"prv"`` (see :mod:`trustlab.train.dp`).

    Example:
        >>> s = DPGANSettings(epochs=5, epsilon=4.0)
        >>> s.private, s.batch_size, s.lr
        (True, 64, 0.0002)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=1, le=100_000, description="passes over the real data")
    batch_size: int = Field(
        64, ge=2, le=1_000_000, description="expected real batch and fakes per step"
    )
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate of both networks")
    latent_dim: int = Field(64, ge=1, le=4096, description="size of the latent code")
    epsilon: float | None = Field(None, gt=0, description="target epsilon (sets the noise)")
    noise_multiplier: float | None = Field(
        None, ge=0, description="sigma: noise std / max_grad_norm (instead of epsilon)"
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="the delta of (epsilon, delta)-DP")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample clipping norm C")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="privacy accountant")

    @model_validator(mode="after")
    def _not_both(self) -> DPGANSettings:
        if self.epsilon is not None and self.noise_multiplier is not None:
            raise ValueError(
                "give 'epsilon' (a target budget) or 'noise_multiplier', not both (neither: a "
                "non-private GAN)"
            )
        return self

    @property
    def private(self) -> bool:
        """Whether the discriminator is trained with DP-SGD."""
        return self.epsilon is not None or self.noise_multiplier is not None

    def dp_settings(self) -> DPSettings:
        """The :class:`~trustlab.train.dp.DPSettings` of the discriminator's DP-SGD."""
        return DPSettings(
            epsilon=self.epsilon, noise_multiplier=self.noise_multiplier, delta=self.delta,
            max_grad_norm=self.max_grad_norm, accountant=self.accountant,
        )  # fmt: skip


def parse_settings(settings: DPGANSettings | dict[str, Any]) -> DPGANSettings:
    """``settings`` as :class:`DPGANSettings` (a dict is validated: :class:`InputError` naming
    the bad field, e.g. both ``epsilon`` and ``noise_multiplier``)."""
    if isinstance(settings, DPGANSettings):
        return settings
    if not isinstance(settings, dict):
        raise InputError(
            "settings must be DPGANSettings or a dict of its fields; got "
            f"{type(settings).__name__}."
        )
    try:
        return DPGANSettings(**settings)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, DPGANSettings)) from None


def check_images(images: Any) -> torch.Tensor:
    """``images`` as float32 ``(N, C, H, W)`` in ``[0, 1]`` of a supported shape, else
    :class:`InputError` saying what is wrong."""
    if not isinstance(images, torch.Tensor):
        raise InputError(
            f"images must be a torch.Tensor (N, C, H, W) in [0, 1]; got {type(images).__name__}."
        )
    if images.dim() != 4:
        raise InputError(
            f"images must be a batch (N, C, H, W); got a tensor of shape {tuple(images.shape)} "
            "(add the channel dimension for grey images: x.unsqueeze(1))."
        )
    if not images.is_floating_point():
        raise InputError(
            f"images must be floats in [0, 1]; got {images.dtype} (scale uint8 images: x / 255)."
        )
    if len(images) < 1:
        raise InputError("images is empty; a DPGAN needs at least one real image.")
    check_shape(images.shape[1:])
    x = images.detach().float()
    if not bool(torch.isfinite(x).all()):
        raise InputError("images hold NaN or infinite values; clean the data first.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise InputError(
            f"images must lie in [0, 1]; they span [{lo:.3g}, {hi:.3g}] (rescale them, e.g. "
            "x / 255 or (x + 1) / 2)."
        )
    return x


@contextlib.contextmanager
def _hooks_off(module: nn.Module) -> Iterator[nn.Module]:
    """Opacus' per-sample-gradient hooks disabled inside (a plain module: nothing to do)."""
    disable = getattr(module, "disable_hooks", None)
    if disable is None:
        yield module
        return
    disable()
    try:
        yield module
    finally:
        module.enable_hooks()  # type: ignore[operator]


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


@dataclass
class DPGAN:
    """A trained DPGAN: the generator, the discriminator and the privacy they cost.

    Xie et al., "Differentially Private Generative Adversarial Network", arXiv:1802.06739
    (2018); what :func:`train_dpgan` returns. Samples are post-processing of the private
    discriminator: drawing any number costs no further privacy.

    Attributes:
        generator: the :class:`~trustlab.models.gan.Generator` (eval mode).
        discriminator: the :class:`~trustlab.models.gan.Discriminator` (a plain module).
        settings: the :class:`DPGANSettings` it was trained with.
        epsilon: epsilon spent at ``delta`` (``inf`` when trained without DP).
        delta: the delta of (epsilon, delta)-DP.
        steps: the discriminator's DP steps (the steps the accountant composed).
        noise_multiplier: sigma used (0 without DP).
        sample_rate: the Poisson sampling rate ``q``.
        history: per epoch ``{"epoch", "d_loss", "g_loss", "epsilon", "seconds"}``.

    Example:
        >>> gan = train_dpgan(torch.rand(64, 1, 16, 16), DPGANSettings(epochs=1,
        ...                   noise_multiplier=1.0, batch_size=16))  # doctest: +SKIP
        >>> gan.sample(8).shape  # doctest: +SKIP
        torch.Size([8, 1, 16, 16])
    """

    generator: Generator
    discriminator: Discriminator
    settings: DPGANSettings
    epsilon: float
    delta: float
    steps: int
    noise_multiplier: float
    sample_rate: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The image shape ``(C, H, W)``."""
        return self.generator.shape

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` generated images ``(n, C, H, W)`` in [0, 1], on the CPU; the same ``seed`` gives
        the same images (the generator's mode is restored afterwards)."""
        n = check_int("n", n, 1, 10_000_000)
        g = torch.Generator().manual_seed(derive_seed(seed, "dpgan-sample"))
        z = torch.randn(n, self.generator.latent_dim, generator=g)
        dev = next(self.generator.parameters()).device
        out = []
        with eval_mode(self.generator), torch.no_grad():
            for chunk in z.split(4096):
                out.append(self.generator(chunk.to(dev)).cpu())
        return torch.cat(out)

    def save_grid(self, path: str | Path, n: int = 64, seed: int = 0) -> Path:
        """A PNG of ``n`` samples (:meth:`sample`) in a square-ish grid, titled with the privacy
        spent; written atomically. Returns ``path``."""
        from trustlab.results.plots import image_rows_figure, save_figure

        x = self.sample(n, seed)
        cols = math.ceil(math.sqrt(n))
        rows = list(x.split(cols))
        eps = "inf (not private)" if math.isinf(self.epsilon) else f"{self.epsilon:.2f}"
        title = f"DPGAN samples: epsilon {eps}, delta {self.delta:g}, {self.steps} steps"
        return save_figure(image_rows_figure(rows, title=title), path)

    def report(self) -> dict[str, float]:
        """The privacy numbers: ``epsilon``, ``delta``, ``noise_multiplier``,
        ``max_grad_norm``, ``sample_rate``, ``steps`` and ``target_epsilon`` when one was set."""
        out = {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.settings.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": float(self.steps),
        }
        if self.settings.epsilon is not None:
            out["target_epsilon"] = self.settings.epsilon
        return out

    def save(self, folder: str | Path) -> Path:
        """Write both networks and the settings, privacy and history to ``folder/dpgan.safetensors``
        (and its JSON sidecar ``dpgan.json``), atomically, never a pickle. Returns the file."""
        tensors = {f"generator.{k}": v for k, v in self.generator.state_dict().items()}
        tensors |= {f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()}
        meta = {
            "kind": "dpgan",
            "shape": list(self.shape),
            "settings": self.settings.model_dump(),
            "epsilon": None if math.isinf(self.epsilon) else self.epsilon,
            "delta": self.delta,
            "steps": self.steps,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "history": self.history,
            "generator_width": self.generator.width,
            "discriminator_width": self.discriminator.width,
        }
        return save_checkpoint(Path(folder) / FILE, tensors, meta)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> DPGAN:
        """A DPGAN written by :meth:`save`: its folder or the ``dpgan.safetensors`` file."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE
        tensors, meta = load_checkpoint(path, device=resolve_device(device))
        if meta.get("kind") != "dpgan":
            raise InputError(f"{path} is not a DPGAN checkpoint (kind {meta.get('kind')!r}).")
        settings = parse_settings(meta["settings"])
        shape = check_shape(meta["shape"])
        gen = Generator(settings.latent_dim, shape, width=meta.get("generator_width", 32))
        disc = Discriminator(shape, width=meta.get("discriminator_width", 32))
        for prefix, net in (("generator.", gen), ("discriminator.", disc)):
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            load_state(net, part, path)
            net.to(resolve_device(device)).eval()
        eps = meta.get("epsilon")
        return cls(
            gen, disc, settings, math.inf if eps is None else float(eps), float(meta["delta"]),
            int(meta["steps"]), float(meta["noise_multiplier"]), float(meta["sample_rate"]),
            list(meta.get("history", [])),
        )  # fmt: skip


def _batches(
    dp: PrivateTraining | None, data: ArrayDataset, batch_size: int, epoch: int, seed: int,
    device: torch.device,
) -> tuple[Iterator[torch.Tensor], int]:  # fmt: skip
    """The epoch's real batches: Opacus' seeded Poisson samples, or (no DP) a seeded shuffle."""
    if dp is not None:
        batches, total = dp.batches(data, batch_size, epoch, device)
        return (x for x, _ in batches), total
    g = torch.Generator().manual_seed(derive_seed(seed, "dpgan-shuffle", epoch))
    order = torch.randperm(len(data), generator=g)
    total = math.ceil(len(data) / batch_size)
    starts = range(0, len(data), batch_size)
    return (data.x[order[i : i + batch_size]].to(device) for i in starts), total


def train_dpgan(
    images: torch.Tensor,
    settings: DPGANSettings | dict[str, Any],
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> DPGAN:
    """Train a DPGAN on ``images`` (one party's unlabelled real data).

    Args:
        images: float tensor ``(N, C, H, W)`` in ``[0, 1]``; ``(C, H, W)`` one of
            ``(1, 16, 16)``, ``(1, 28, 28)``, ``(3, 32, 32)``.
        settings: :class:`DPGANSettings` (or a dict of its fields).
        seed: seeds the weights, the latent codes, the Poisson samples and the noise; the same
            seed gives the same GAN on the CPU. Default 0.
        device: ``cpu`` (default), ``auto``, ``cuda`` or ``cuda:N``.
        progress: a progress bar (on a terminal only); default False.

    Returns:
        The :class:`DPGAN`; its ``epsilon`` is the accountant's for the discriminator's DP steps.

    Raises:
        InputError: bad images or settings (nothing is trained).
        FloatingPointError: the losses became NaN or infinite (lower ``lr``).

    Example:
        >>> gan = train_dpgan(torch.rand(64, 1, 16, 16),
        ...                   {"epochs": 1, "epsilon": 8.0, "batch_size": 16})  # doctest: +SKIP
        >>> gan.epsilon <= 8.0  # doctest: +SKIP
        True
    """
    s = parse_settings(settings)
    x = check_images(images)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    dev = resolve_device(device)
    n, shape = len(x), check_shape(x.shape[1:])
    data = ArrayDataset(x, torch.zeros(n, dtype=torch.long), validate=False)
    seed_torch_rng(derive_seed(seed, "dpgan-init"), dev)
    gen = Generator(s.latent_dim, shape).to(dev)
    disc = Discriminator(shape).to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), lr=s.lr, betas=(0.5, 0.999))
    opt_d: Any = torch.optim.Adam(disc.parameters(), lr=s.lr, betas=(0.5, 0.999))
    dp: PrivateTraining | None = None
    net: Any = disc
    if s.private:
        dp = PrivateTraining(s.dp_settings(), seed=seed)
        net, opt_d = dp.attach(privatize_model(disc), opt_d, n, s.batch_size, s.epochs, dev)
    params = [p for p in disc.parameters() if p.requires_grad]
    z_gen = torch.Generator(device=dev)
    history: list[dict[str, float]] = []
    steps = 0
    steps_per_epoch = int(1 / sample_rate(n, s.batch_size)) if dp else math.ceil(n / s.batch_size)
    gen.train()
    net.train()
    try:
        with (
            progress_bar("dpgan", s.epochs * steps_per_epoch, progress) as bar,
            warnings.catch_warnings(),
        ):
            # Opacus' hooks on a first layer whose input needs no gradient: harmless, and torch
            # repeats it every step
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for epoch in range(s.epochs):
                start = time.perf_counter()
                z_gen.manual_seed(derive_seed(seed, "dpgan-z", epoch))
                batches, _ = _batches(dp, data, s.batch_size, epoch, seed, dev)
                d_sum = torch.zeros((), dtype=torch.float64, device=dev)
                g_sum = torch.zeros((), dtype=torch.float64, device=dev)
                k = 0
                for real in batches:
                    # discriminator: the private real-data gradient, then the free fake-data one
                    z = torch.randn(s.batch_size, s.latent_dim, generator=z_gen, device=dev)
                    with torch.no_grad():
                        fake = gen(z)
                    opt_d.zero_grad(set_to_none=True)
                    with _hooks_off(net):
                        loss_fake = _bce(net(fake), real=False)
                        fake_grads = torch.autograd.grad(loss_fake, params)
                    logits = net(real)
                    # an empty Poisson sample: a zero loss, a (noise-only) DP step
                    loss_real = _bce(logits, real=True) if len(real) else logits.sum() * 0.0
                    loss_real.backward()
                    if dp is None or opt_d.pre_step():  # pre_step: clip, noise, account
                        for p, g in zip(params, fake_grads, strict=True):
                            p.grad = g if p.grad is None else p.grad + g
                        (opt_d if dp is None else opt_d.original_optimizer).step()
                    steps += 1
                    # generator: post-processing of the private discriminator
                    z = torch.randn(s.batch_size, s.latent_dim, generator=z_gen, device=dev)
                    opt_g.zero_grad(set_to_none=True)
                    with _hooks_off(net):
                        loss_g = _bce(net(gen(z)), real=True)
                        loss_g.backward(inputs=list(gen.parameters()))
                    opt_g.step()
                    d_sum += (loss_real + loss_fake).detach()
                    g_sum += loss_g.detach()
                    k += 1
                    bar.advance()
                d_loss, g_loss = (float(v) / max(k, 1) for v in (d_sum, g_sum))
                if not (math.isfinite(d_loss) and math.isfinite(g_loss)):
                    raise FloatingPointError(
                        f"DPGAN losses became {d_loss} / {g_loss} in epoch {epoch + 1}; lower "
                        "the learning rate (lr)."
                    )
                eps = dp.epsilon() if dp is not None else math.inf
                history.append({
                    "epoch": float(epoch + 1), "d_loss": d_loss, "g_loss": g_loss,
                    "epsilon": eps, "seconds": time.perf_counter() - start,
                })  # fmt: skip
                bar.info(f"d {d_loss:.3f} g {g_loss:.3f} eps {eps:.2f}")
        if dp is not None:
            report = dp.report()
            dp_steps = sum(int(h[2]) for h in dp.state()["history"])
            epsilon, sigma, q = report["epsilon"], report["noise_multiplier"], report["sample_rate"]
        else:
            dp_steps, epsilon, sigma, q = steps, math.inf, 0.0, sample_rate(n, s.batch_size)
    finally:
        if dp is not None:
            dp.detach()
    gen.eval()
    disc.eval()
    return DPGAN(gen, disc, s, float(epsilon), s.delta, dp_steps, float(sigma), float(q), history)
