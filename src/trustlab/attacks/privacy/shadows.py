"""Shadow models for membership inference: the training recipe, in/out assignments and a cache.

Both shadow-model attacks in trustlab train many models "like the target" on data whose
membership the attacker controls:

- Shokri et al., "Membership Inference Attacks Against Machine Learning Models" (S&P 2017):
  shadow models on data disjoint from the target's training set, each with its own in/out split
  (:func:`membership_masks` with ``scheme="half"``: every shadow takes an independent random
  half, the other half is its "out" set).
- Carlini et al., "Membership Inference Attacks From First Principles" (S&P 2022, LiRA): shadow
  models on random halves of a population that holds the examples under audit, assigned as in
  the authors' code (``scheme="balanced"``: for every example a random permutation of the
  shadows, IN for the first ``N // 2``), so that every example is IN for exactly ``N // 2``
  shadows and every shadow trains on about half of the population.

The attacker is assumed to know the training procedure: a :class:`ShadowRecipe` holds the
target's model spec, its :class:`~trustlab.train.TrainSettings` and its loss, and every shadow is
trained by the one training loop, :class:`trustlab.train.Trainer`. Shadow ``i`` of a set seeded
``seed`` trains with the seed ``derive_seed(seed, "shadow", i) % 2**31`` (initial weights,
shuffles, augmentation; 31 bits because some losses multiply their seed), so a shadow is the same
whether it is trained first or after a restart.

**Cache.** :func:`train_shadows` writes every finished shadow as a safetensors checkpoint
(:func:`trustlab.train.checkpoint.save_model`, atomic) with its in-mask, seed and training time in
the metadata, to ``cache_dir("shadows", KEY)`` (``$TRUSTLAB_HOME/cache/shadows/KEY``), where KEY
is a hash of everything that determines the set: the recipe (model spec, settings except the
seed, the loss key), the population's contents (a SHA-256 of its tensors and classes), the seed,
the number of shadows and the assignment scheme. A run killed part-way and restarted trains only
the missing shadows; a second call with the same arguments trains nothing. A file that is
unreadable or does not match (index, set, in-mask) is retrained and replaced.

**Vectorised.** On a GPU, when the recipe allows it (:meth:`ShadowRecipe.vectorise_refusal`: the
default loss, no DP-SGD, no dropout, ...), the missing shadows are trained up to 16 at a time as
one batched model (:func:`trustlab.train.ensemble.train_ensemble`; ``vectorise=True`` asks for it
on a CPU too), which gives every shadow the weights that training it alone gives, to float
tolerance; the cache does not tell them apart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import pickle
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from trustlab.data.datasets import ArrayDataset
from trustlab.errors import CheckpointError, InputError
from trustlab.models.spec import ModelSpec
from trustlab.train.checkpoint import load_model, read_checkpoint_meta, save_model
from trustlab.train.ensemble import train_ensemble, unsupported_reason
from trustlab.train.trainer import BatchLossFn, LossFn, Trainer, TrainResult, TrainSettings
from trustlab.utils.device import resolve_device, single_threaded
from trustlab.utils.executor import Executor, Resources, Task, make_executor
from trustlab.utils.io import write_json_atomic
from trustlab.utils.paths import cache_dir
from trustlab.utils.progress import progress_bar
from trustlab.utils.seed import derive_seed, generator
from trustlab.utils.validate import check_int

__all__ = [
    "CACHE_VERSION",
    "ShadowModels",
    "ShadowRecipe",
    "dataset_fingerprint",
    "membership_masks",
    "train_shadows",
]

#: bump when the way a shadow is trained changes, so old cache entries are not reused
CACHE_VERSION = 1
#: the most shadows trained at once as one vectorised ensemble (memory grows with it)
VECTORISE_CHUNK = 16
Scheme = Literal["balanced", "half"]


@dataclass(frozen=True)
class ShadowRecipe:
    """How one shadow model is trained: the target's own recipe (the attacker knows it).

    Args:
        spec: the model (architecture, classes, normalisation statistics).
        settings: the optimisation settings (epochs, lr, batch size, augmentation, ...); each
            shadow replaces ``seed`` with its own.
        loss_fn: ``loss_fn(logits, y)`` as :class:`~trustlab.train.Trainer` takes it (default:
            cross-entropy with ``settings.label_smoothing``).
        make_compute_loss: ``seed -> compute_loss(model, x, y)`` for losses that need the model
            (adversarial training); called once per shadow with its seed, because such losses
            count their calls (a shared one would make a shadow depend on the ones before it).
        key: a JSON-able description of the loss (and of anything else that ``spec`` and
            ``settings`` do not say) for the cache key; required with ``loss_fn`` or
            ``make_compute_loss`` when the cache is on.

    Example::

        recipe = ShadowRecipe(ModelSpec.for_data("cnn-small", train), TrainSettings(epochs=2))
        shadow = recipe.train(population.subset(indices), seed=1)
    """

    spec: ModelSpec
    settings: TrainSettings = field(default_factory=TrainSettings)
    loss_fn: LossFn | None = None
    make_compute_loss: Callable[[int], BatchLossFn] | None = None
    key: Mapping[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        """What determines a shadow besides its data and seed (JSON-able, for the cache key)."""
        settings = self.settings.model_dump(exclude={"seed", "eval_every", "eval_batch_size"})
        return {
            "spec": self.spec.to_dict(),
            "settings": settings,
            "loss": dict(self.key) if self.key is not None else None,
        }

    def initial_model(self, seed: int) -> nn.Module:
        """The untrained model of the shadow seeded ``seed`` (its initial weights come from
        ``derive_seed(seed, "init")``; the caller's torch RNG state is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init"))
            return self.spec.build()

    def settings_for(self, seed: int) -> TrainSettings:
        """The recipe's settings with the shadow's ``seed``."""
        return self.settings.model_copy(update={"seed": seed})

    def vectorise_refusal(self) -> str | None:
        """Why the shadows of this recipe cannot be trained as one vectorised ensemble
        (:func:`trustlab.train.ensemble.unsupported_reason`), or None when they can."""
        return unsupported_reason(
            self.initial_model(0), self.settings, loss_fn=self.loss_fn,
            compute_loss=self.make_compute_loss,
        )  # fmt: skip

    def train(
        self, data: ArrayDataset, seed: int, device: str | torch.device = "auto"
    ) -> nn.Module:
        """A fresh model (initial weights from ``seed``) trained on ``data`` with the recipe;
        returned in eval mode. The caller's torch RNG state is left untouched."""
        return self.fit(data, seed, device).model.eval()

    def fit(
        self, data: ArrayDataset, seed: int, device: str | torch.device = "auto"
    ) -> TrainResult:
        """:meth:`train`'s training run itself (history; ``privacy`` for a DP-SGD recipe)."""
        compute = self.make_compute_loss(seed) if self.make_compute_loss is not None else None
        trainer = Trainer(
            self.initial_model(seed), self.settings_for(seed), loss_fn=self.loss_fn,
            compute_loss=compute, device=device, progress=False,
        )  # fmt: skip
        # the trainer may swap modules (DP-SGD: BatchNorm -> GroupNorm); its model is the result
        return trainer.fit(data)


def membership_masks(
    n: int, num_shadows: int, seed: int, scheme: Scheme = "balanced"
) -> torch.Tensor:
    """``(num_shadows, n)`` boolean masks: ``masks[i, j]`` is True when example ``j`` trains
    shadow ``i``.

    ``"balanced"`` (LiRA, the authors' code): per example a random permutation of the shadows,
    IN for the first ``num_shadows // 2`` (every example is IN for exactly that many shadows).
    ``"half"`` (Shokri): every shadow takes an independent random ``n // 2`` of the examples.
    """
    n = check_int("the population size", n, minimum=2)
    num_shadows = check_int("shadows", num_shadows, minimum=1)
    g = generator(derive_seed(seed, "membership-masks", scheme))
    if scheme == "balanced":
        u = torch.rand(num_shadows, n, generator=g, dtype=torch.float64)
        return u.argsort(0).argsort(0) < num_shadows // 2
    if scheme == "half":
        u = torch.rand(num_shadows, n, generator=g, dtype=torch.float64)
        return u.argsort(1).argsort(1) < n // 2
    raise InputError(f"unknown assignment scheme {scheme!r}; use 'balanced' or 'half'.")


def dataset_fingerprint(data: ArrayDataset) -> str:
    """SHA-256 of a dataset's inputs, labels (shapes, dtypes, bytes) and class names."""
    h = hashlib.sha256()
    for t in (data.x, data.y):
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().reshape(-1).view(np.uint8))
    h.update(json.dumps(list(data.classes)).encode())
    return h.hexdigest()


def _pack_mask(mask: torch.Tensor) -> str:
    return base64.b64encode(np.packbits(mask.cpu().numpy()).tobytes()).decode()


def _unpack_mask(text: str, n: int) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))


@dataclass
class ShadowModels:
    """A trained set of shadow models: their in-masks over the population, their seeds, and the
    models themselves (in memory, or as files in ``folder`` loaded on demand).

    Example::

        shadows = train_shadows(recipe, population, num_shadows=16)
        model, members = shadows.model(0), shadows.masks[0]
    """

    masks: torch.Tensor
    seeds: list[int]
    folder: Path | None = None
    trained: int = 0
    seconds: float = 0.0
    _models: list[nn.Module] | None = None

    def __len__(self) -> int:
        return len(self.seeds)

    def path(self, i: int) -> Path:
        if self.folder is None:
            raise InputError("these shadow models were not cached; they have no files.")
        return self.folder / f"shadow-{i:04d}.safetensors"

    def model(self, i: int, device: str | torch.device = "cpu") -> nn.Module:
        """Shadow ``i`` in eval mode on ``device``."""
        if self._models is not None:
            return self._models[i].to(device).eval()
        return load_model(self.path(i), device=device).eval()

    def models(self, device: str | torch.device = "cpu") -> Iterator[nn.Module]:
        """Each shadow in turn (one in memory at a time when they are cached)."""
        for i in range(len(self)):
            yield self.model(i, device)


def _valid_shadow(path: Path, key: str, index: int, mask: torch.Tensor) -> bool:
    if not path.is_file():
        return False
    try:
        meta = read_checkpoint_meta(path).get("shadow") or {}
        ok = meta.get("set") == key and meta.get("index") == index
        return bool(ok and torch.equal(_unpack_mask(meta["in_mask"], len(mask)), mask))
    except (CheckpointError, KeyError, ValueError, TypeError):
        return False


def _cache_folder(cache: bool | str | Path, key: str) -> Path | None:
    if cache is False:
        return None
    if cache is True:
        return cache_dir("shadows", key)
    folder = Path(cache).expanduser() / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def train_shadows(
    recipe: ShadowRecipe,
    population: ArrayDataset,
    num_shadows: int = 16,
    *,
    scheme: Scheme = "balanced",
    seed: int = 0,
    cache: bool | str | Path = True,
    device: str | torch.device = "auto",
    progress: bool = True,
    vectorise: bool | None = None,
    executor: str | Executor | None = None,
) -> ShadowModels:
    """Train (or load from the cache) ``num_shadows`` shadow models on ``population``.

    Args:
        recipe: the target's training recipe.
        population: the examples the masks index; shadow ``i`` trains on
            ``population.subset(masks[i])`` (see :func:`membership_masks` for ``scheme``).
        seed: seeds the masks and every shadow's training.
        cache: ``True`` (default): ``$TRUSTLAB_HOME/cache/shadows/KEY``; a folder: ``folder/KEY``;
            ``False``: keep the models in memory only. See the module for the key.
        device: where to train.
        progress: a progress bar over the shadows (only on a terminal).
        vectorise: train the missing shadows together, up to 16 at a time, as one vectorised
            ensemble (:func:`trustlab.train.ensemble.train_ensemble`: the same models to float
            tolerance, cached under the same key); ``None`` (default): on a CUDA device, when
            the recipe allows it (:meth:`ShadowRecipe.vectorise_refusal`) and more than one
            shadow is missing (on a CPU one by one, which is as fast there); ``True`` raises
            :class:`InputError` for a recipe it cannot train; ``False``: one by one.
        executor: where one-by-one shadows train: ``None`` (default) in this process;
            ``"local"`` (this machine's process pool, one single-threaded shadow per core),
            ``"ray"`` (a Ray cluster, :mod:`trustlab.utils.executor`) or an
            :class:`~trustlab.utils.executor.Executor`. Each finished shadow is cached as it
            arrives, so a failure loses none; the models equal those trained in this process
            single-threaded. The recipe must pickle (a lambda ``loss_fn`` does not).
    """
    num_shadows = check_int("shadows", num_shadows, minimum=1)
    n = len(population)
    masks = membership_masks(n, num_shadows, seed, scheme)
    if int(masks.sum(1).min()) == 0:
        raise InputError(
            f"with {num_shadows} shadow(s) and scheme {scheme!r} some shadow has no training data; "
            "use more shadows (the balanced scheme needs >= 2)."
        )
    seeds = [derive_seed(seed, "shadow", i) % 2**31 for i in range(num_shadows)]
    if (
        cache is not False
        and recipe.key is None
        and (recipe.loss_fn is not None or recipe.make_compute_loss is not None)
    ):
        raise InputError(
            "a recipe with its own loss needs key= (a JSON-able description of the loss) so that "
            "cached shadow models of different losses are not mixed up; or pass cache=False."
        )
    identity = {
        "version": CACHE_VERSION,
        "recipe": recipe.identity(),
        "population": dataset_fingerprint(population),
        "population_size": n,
        "seed": seed,
        "shadows": num_shadows,
        "scheme": scheme,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    folder = _cache_folder(cache, key)
    dev = resolve_device(device)
    out = ShadowModels(masks, seeds, folder, _models=None if folder is not None else [])
    if folder is not None and not (folder / "set.json").exists():
        write_json_atomic(folder / "set.json", identity)
    missing = [
        i for i in range(num_shadows)
        if folder is None or not _valid_shadow(out.path(i), key, i, masks[i])
    ]  # fmt: skip
    together = _vectorise(recipe, vectorise, len(missing), dev)
    if executor is not None and not together and missing:
        try:
            pickle.dumps(recipe)
        except Exception as exc:
            raise InputError(
                f"an executor runs shadows in other processes, but this recipe cannot be sent "
                f"there ({type(exc).__name__}: {exc}); define its loss at the top level of a "
                "module, or pass executor=None."
            ) from None

    def finish(i: int, model: nn.Module, took: float) -> None:
        out.trained += 1
        out.seconds += took
        if folder is None:
            assert out._models is not None
            out._models.append(model.cpu())
            return
        shadow = {
            "set": key, "index": i, "seed": seeds[i], "members": int(masks[i].sum()),
            "in_mask": _pack_mask(masks[i]), "seconds": round(took, 3),
        }  # fmt: skip
        derived = ModelSpec.from_model(model)  # the trained model's own, else the recipe's
        spec = (derived or recipe.spec).to_dict()
        save_model(model, out.path(i), spec=spec, shadow=shadow)

    def data(i: int) -> ArrayDataset:
        return population.subset(masks[i].nonzero().squeeze(1))

    with progress_bar("shadow models", num_shadows, progress) as advance:
        advance.advance(num_shadows - len(missing))
        if together:
            for at in range(0, len(missing), VECTORISE_CHUNK):
                chunk = missing[at : at + VECTORISE_CHUNK]
                start = time.perf_counter()
                results = train_ensemble(
                    [recipe.initial_model(seeds[i]) for i in chunk],
                    [data(i) for i in chunk],
                    [recipe.settings_for(seeds[i]) for i in chunk],
                    device=dev,
                )
                share = (time.perf_counter() - start) / len(chunk)
                for i, result in zip(chunk, results, strict=True):
                    finish(i, result.model.eval(), share)
                    advance()
        elif executor is not None and missing:  # nothing missing: no executor to start
            ex = executor if isinstance(executor, Executor) else make_executor(executor)
            try:
                shared = ex.share(population)
                need, job_dev = Resources.for_device(dev), ex.job_device(dev)
                tasks = [
                    Task(_train_shadow, (recipe, shared, masks[i].nonzero().squeeze(1), seeds[i],
                         job_dev), key=i, resources=need)
                    for i in missing
                ]  # fmt: skip
                kept: dict[int, tuple[nn.Module, float]] = {}
                with contextlib.closing(ex.as_completed(tasks)) as results:
                    for i, (model, took) in results:
                        if folder is None:  # in memory: kept in index order below
                            kept[int(i)] = (model, took)
                        else:  # cached as it arrives: a failure later loses nothing
                            finish(int(i), model, took)
                        advance()
                for i in sorted(kept):
                    finish(i, *kept[i])
            finally:
                if not isinstance(executor, Executor):
                    ex.close()
        else:
            for i in missing:
                start = time.perf_counter()
                model = recipe.train(data(i), seeds[i], dev)
                finish(i, model, time.perf_counter() - start)
                advance()
    return out


def _train_shadow(
    recipe: ShadowRecipe, population: ArrayDataset, members: torch.Tensor, seed: int, device: str
) -> tuple[nn.Module, float]:
    """One shadow wherever an executor runs it: single-threaded on a CPU, returned on the CPU
    with its training seconds."""
    start = time.perf_counter()
    with single_threaded(device):
        model = recipe.train(population.subset(members), seed, device)
    return model.cpu(), time.perf_counter() - start


def _vectorise(
    recipe: ShadowRecipe, vectorise: bool | None, missing: int, device: torch.device
) -> bool:
    """Whether :func:`train_shadows` trains its ``missing`` shadows as one ensemble."""
    if vectorise is False or missing == 0:
        return False
    if vectorise is None:  # on a CPU the batched kernels are no faster (benchmarks/shadows.py)
        return device.type == "cuda" and missing > 1 and recipe.vectorise_refusal() is None
    reason = recipe.vectorise_refusal()
    if reason is not None:
        raise InputError(
            f"vectorise=True, but these shadows cannot be trained as one vectorised ensemble: "
            f"{reason}. Pass vectorise=None (train them one by one when they cannot) or False."
        )
    return True
