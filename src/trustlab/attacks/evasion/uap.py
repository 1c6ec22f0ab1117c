"""Universal adversarial perturbations and patches: one tensor that fools a model on most inputs.

- :func:`universal_perturbation`: a single ``delta`` in the L-inf (or L2) ``eps`` ball added to
  every input. Moosavi-Dezfooli et al. ("Universal adversarial perturbations", CVPR 2017) build it
  from DeepFool steps; trustlab uses the stochastic-gradient form of Shafahi et al. ("Universal
  Adversarial Training", AAAI 2020): for each minibatch, ``delta <- P(delta + lr sign(grad))``
  with the gradient of the mean loss over the batch (cross-entropy, or minus the cross-entropy
  to the target class when targeted). Defaults: ``eps = 10/255``, ``lr = eps / 10``, 5 epochs,
  batch 128.
- :func:`universal_patch`: a ``size`` x ``size`` patch pasted onto every input (Brown et al.,
  "Adversarial Patch", 2017), optimised on the same losses, at a random location per batch (so it
  works anywhere) or at a fixed one: ``step="adam"`` (default; Adam at lr 0.05 on the patch's
  logits, so it stays in [0, 1]) or ``step="sign"`` (signed-gradient steps of ``lr`` on the patch
  itself, clipped to [0, 1]; the update of the universal adversarial trigger of the clean-label
  video backdoor, Zhao et al., CVPR 2020; ``lr`` defaults to 2/255 there). Video inputs
  ``(N, C, T, H, W)`` get the same patch on every frame.

Both return the tensor (on CPU) and never change the model (frozen, mode restored).
:func:`apply_perturbation` and :func:`apply_patch` apply them; :func:`fooling_rate` measures
them (untargeted: the prediction changes from the clean one; targeted: the target is predicted,
among points whose label is not the target).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from trustlab.attacks.evasion.base import parse_eps, project, step_direction
from trustlab.data.datasets import ArrayDataset, as_array_dataset
from trustlab.data.loader import iterate_batches
from trustlab.errors import InputError
from trustlab.utils.device import resolve_device
from trustlab.utils.modules import device_of, frozen
from trustlab.utils.seed import generator


def _setup(
    model: nn.Module, data: Dataset | ArrayDataset, device
) -> tuple[ArrayDataset, torch.device]:
    ds = data if isinstance(data, ArrayDataset) else as_array_dataset(data)
    if len(ds) == 0:
        raise InputError("a universal perturbation needs at least one input.")
    return ds, resolve_device(device) if device is not None else device_of(model)


def _loss(logits: torch.Tensor, y: torch.Tensor, target: int | None) -> torch.Tensor:
    """To be maximised: CE to the label, or minus CE to the target class."""
    if target is None:
        return F.cross_entropy(logits, y)
    return -F.cross_entropy(logits, torch.full_like(y, target))


def _check_target(target: int | None, num_classes: int | None) -> None:
    if target is not None and num_classes is not None and not 0 <= target < num_classes:
        raise InputError(f"target class {target} is out of range for {num_classes} classes.")


def apply_perturbation(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``clamp(x + delta, 0, 1)``; ``delta`` broadcasts over the batch."""
    return (x + delta.to(x.device, x.dtype)).clamp(0, 1)


def universal_perturbation(
    model: nn.Module,
    data: Dataset | ArrayDataset,
    eps: float | str = 10 / 255,
    norm: str = "linf",
    target: int | None = None,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float | str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """One perturbation ``(C, H, ...)`` for all inputs of ``data``; see the module."""
    ds, dev = _setup(model, data, device)
    eps = parse_eps(eps)
    step = eps / 10 if lr is None else parse_eps(lr)
    if norm not in ("linf", "l2"):
        raise InputError(f"unknown norm {norm!r}; use linf or l2.")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1 (got {epochs}, {batch_size}).")
    _check_target(target, ds.num_classes)
    gen = generator(seed)
    delta = torch.zeros((1, *ds.x.shape[1:]), device=dev)
    with frozen(model), torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(ds), generator=gen)
            for x, y in iterate_batches(ds, batch_size, order, dev):
                d = delta.detach().requires_grad_(True)
                loss = _loss(model(apply_perturbation(x, d)), y, target)
                (g,) = torch.autograd.grad(loss, d)
                delta = project(delta + step * step_direction(g, norm), eps, norm)
    return delta[0].detach().cpu()


def _place(x: torch.Tensor, patch: torch.Tensor, top: int, left: int) -> torch.Tensor:
    """Paste ``patch (C, h, w)`` at ``(top, left)`` of every image (every frame of a clip)."""
    h, w = patch.shape[-2:]
    H, W = x.shape[-2:]
    p = patch.to(x.device, x.dtype)
    if x.dim() == 5:  # (N, C, T, H, W): the same patch on every frame
        p = p[:, None]
    pad = (left, W - w - left, top, H - h - top)
    mask = F.pad(torch.ones_like(p), pad)
    return x * (1 - mask) + F.pad(p, pad) * mask


def apply_patch(
    x: torch.Tensor, patch: torch.Tensor, location: Sequence[int] | None = None
) -> torch.Tensor:
    """Paste ``patch`` at ``location`` (top, left), default the bottom-right corner."""
    h, w = patch.shape[-2:]
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise InputError(f"a {h}x{w} patch does not fit {H}x{W} inputs.")
    top, left = (H - h, W - w) if location is None else (int(location[0]), int(location[1]))
    if not (0 <= top <= H - h and 0 <= left <= W - w):
        raise InputError(f"patch location {(top, left)} puts the patch outside {H}x{W} inputs.")
    return _place(x, patch, top, left)


def universal_patch(
    model: nn.Module,
    data: Dataset | ArrayDataset,
    size: int = 8,
    target: int | None = None,
    location: Sequence[int] | str = "random",
    epochs: int = 5,
    batch_size: int = 128,
    lr: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    step: str = "adam",
) -> torch.Tensor:
    """One ``(C, size, size)`` patch in ``[0, 1]`` for all inputs of ``data``; see the module.

    ``location`` is ``"random"`` (a new place per batch: the patch works anywhere) or a fixed
    ``(top, left)``."""
    ds, dev = _setup(model, data, device)
    H, W = ds.x.shape[-2:]
    if not 1 <= size <= min(H, W):
        raise InputError(f"patch size must be in [1, {min(H, W)}] for {H}x{W} inputs, got {size}.")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1 (got {epochs}, {batch_size}).")
    if location != "random":
        apply_patch(ds.x[:1], torch.zeros(ds.x.shape[1], size, size), location)  # checks it
    _check_target(target, ds.num_classes)
    if step not in ("adam", "sign"):
        raise InputError(f"step must be 'adam' or 'sign', got {step!r}.")
    if lr is None:
        lr = 0.05 if step == "adam" else 2 / 255
    gen = generator(seed)
    start = torch.rand(ds.x.shape[1], size, size, generator=gen).clamp(0.01, 0.99)
    if step == "adam":  # the patch is sigmoid(theta): always in [0, 1]
        theta = torch.logit(start).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=lr)
        patch_of = torch.sigmoid
    else:
        theta = start.to(dev).requires_grad_(True)
        opt = None
        patch_of = _identity
    with frozen(model), torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(ds), generator=gen)
            for x, y in iterate_batches(ds, batch_size, order, dev):
                if location == "random":
                    top = int(torch.randint(0, H - size + 1, (1,), generator=gen))
                    left = int(torch.randint(0, W - size + 1, (1,), generator=gen))
                else:
                    top, left = int(location[0]), int(location[1])
                loss = -_loss(model(_place(x, patch_of(theta), top, left)), y, target)
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                else:
                    (grad,) = torch.autograd.grad(loss, theta)
                    with torch.no_grad():
                        theta.sub_(lr * grad.sign()).clamp_(0, 1)
    return patch_of(theta).detach().cpu()


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def fooling_rate(
    model: nn.Module,
    data: Dataset | ArrayDataset,
    apply,
    target: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Untargeted: the fraction whose prediction changes under ``apply(x)``; targeted: the
    fraction predicted as ``target`` among inputs whose label is not ``target``."""
    ds, dev = _setup(model, data, device)
    hits = total = 0
    with frozen(model), torch.no_grad():
        for x, y in iterate_batches(ds, batch_size, device=dev):
            adv = model(apply(x)).argmax(1)
            if target is None:
                hits += int((adv != model(x).argmax(1)).sum())
                total += len(y)
            else:
                keep = y != target
                hits += int((adv[keep] == target).sum())
                total += int(keep.sum())
    return hits / total if total else 0.0
