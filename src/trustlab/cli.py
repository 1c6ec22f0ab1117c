"""The ``trustlab`` command line: a thin layer over the library.

Every command that computes takes ``--device auto|cpu|cuda`` and ``--seed``. Bad input prints one
``error:`` line naming the problem and the fix and exits with code 2; nothing is written to the
results store.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from trustlab.errors import InputError

app = typer.Typer(
    name="trustlab",
    help="Attack, defend and measure deep-learning models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="random seed (default 0).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars.")]
DataRootOpt = Annotated[str | None, typer.Option(help="folder holding the data files.")]
WorkersOpt = Annotated[
    int | None, typer.Option(help="parallel worker processes (default: CPU cores).")
]
FirstSeedOpt = Annotated[int, typer.Option("--seed", help="first seed.")]


def _handled(fn: F) -> F:
    """Turn trustlab's input errors into one ``error:`` line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except FloatingPointError as exc:  # training diverged: a failed run, not bad input
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print(
                "interrupted: the run is marked 'interrupted'; `trustlab runs` lists it and "
                "`trustlab resume <id>` continues it."
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


# -- catalogue ---------------------------------------------------------------------------------
@app.command("datasets")
@_handled
def datasets_cmd() -> None:
    """List the datasets: built-in (offline) and file-based (real data)."""
    import trustlab.data  # noqa: F401
    from trustlab.registry import DATASETS

    table = Table(title="datasets")
    for col in ("name", "source", "shape", "classes", "description"):
        table.add_column(col)
    for e in DATASETS:
        shape = e.meta.get("shape")
        table.add_row(
            e.name,
            str(e.meta.get("source", "")),
            "x".join(map(str, shape)) if shape else "",
            str(e.meta.get("num_classes", "")),
            e.description,
        )
    console.print(table)


@app.command("models")
@_handled
def models_cmd() -> None:
    """List the model architectures with their parameter counts (10 classes, 3x32x32)."""
    from trustlab.models import list_models

    table = Table(title="models")
    for col in ("name", "kind", "parameters", "description"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for row in list_models():
        table.add_row(row["name"], row["kind"], f"{row['params']:,}", row["description"])
    console.print(table)


# -- training ----------------------------------------------------------------------------------
def _print_summary(run: Any, summary: dict[str, Any]) -> None:
    table = Table(title=f"run {run.id}: {run.status}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, _fmt(v))
    console.print(table)
    acc = summary.get("test_accuracy")
    if acc is not None:
        console.print(f"test accuracy: {acc * 100:.2f}%  (run {run.id}, {run.dir})")


@app.command("train")
@_handled
def train_cmd(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of train settings.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="see `trustlab datasets`.")] = None,
    model: Annotated[str | None, typer.Option(help="see `trustlab models`.")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs (>= 1).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="global batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd, adam or adamw.")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="weight decay.")] = None,
    schedule: Annotated[str | None, typer.Option(help="cosine, step or constant.")] = None,
    clip_grad_norm: Annotated[float | None, typer.Option(help="gradient-norm clip.")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="CE label smoothing.")] = None,
    augment: Annotated[str | None, typer.Option(help="none, crop, flip or crop-flip.")] = None,
    loss: Annotated[str | None, typer.Option(help="ce, sce, gce, nce+rce, ... (APL: a+p).")] = None,
    alpha: Annotated[float | None, typer.Option(help="SCE/APL alpha (paper default).")] = None,
    beta: Annotated[float | None, typer.Option(help="SCE/APL beta (paper default).")] = None,
    noise: Annotated[
        str | None, typer.Option(help="label noise: sym:0.4, asym:0.4, pair:0.2, idn:0.3.")
    ] = None,
    adv: Annotated[str | None, typer.Option(help="adversarial training: pgd or trades.")] = None,
    eps: Annotated[str | None, typer.Option(help="adversarial radius, e.g. 8/255.")] = None,
    dp: Annotated[
        bool, typer.Option("--dp", help="DP-SGD (Opacus): give --epsilon or --noise-multiplier.")
    ] = False,
    epsilon: Annotated[
        float | None, typer.Option(help="DP-SGD: target epsilon after the last epoch.")
    ] = None,
    delta: Annotated[float | None, typer.Option(help="DP-SGD: delta (default 1e-5).")] = None,
    noise_multiplier: Annotated[
        float | None, typer.Option(help="DP-SGD: noise std / max grad norm (sigma).")
    ] = None,
    max_grad_norm: Annotated[
        float | None, typer.Option(help="DP-SGD: per-sample clipping norm C (default 1.0).")
    ] = None,
    accountant: Annotated[str | None, typer.Option(help="DP-SGD: rdp (default) or prv.")] = None,
    data_root: DataRootOpt = None,
    download: Annotated[
        bool | None, typer.Option("--download", help="fetch real datasets (checksummed).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="a label for the run.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a model and store the run; flags override the YAML file given with --config.

    The YAML file takes every training setting, also those without a flag: nesterov, gamma,
    milestones, min_lr, warmup_epochs, channels_last, eval_every, eval_batch_size, model_kwargs,
    dp (see docs/training.md and docs/privacy.md). Without options: digits, cnn-small, 10
    epochs. With --dp every epoch records the epsilon spent (at --delta).
    """
    from trustlab.config import load_train_config
    from trustlab.workflows.train import prepare, run_training

    dp_flags = {
        "epsilon": epsilon,
        "delta": delta,
        "noise_multiplier": noise_multiplier,
        "max_grad_norm": max_grad_norm,
        "accountant": accountant,
    }
    dp_flags = {k: v for k, v in dp_flags.items() if v is not None}
    if dp_flags and not dp:
        raise InputError(f"--{next(iter(dp_flags)).replace('_', '-')} is a DP-SGD flag; add --dp.")

    cfg = load_train_config(
        config,
        dataset=dataset,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        clip_grad_norm=clip_grad_norm,
        label_smoothing=label_smoothing,
        augment=augment,
        loss=loss,
        alpha=alpha,
        beta=beta,
        noise=noise,
        adv=adv,
        eps=eps,
        data_root=data_root,
        download=download,
        name=name,
        seed=seed,
        device=None if device == "auto" and config is not None else device,
        dp=dp_flags if dp else None,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        prep = prepare(cfg)
    for w in caught:
        console.print(f"[yellow]{w.message}[/yellow]")
    run, result = run_training(prep, progress=_progress(quiet))
    if run is not None:
        _print_summary(run.refresh(), result.summary())


@app.command("resume")
@_handled
def resume_cmd(
    run_id: Annotated[str, typer.Argument(help="the run's id (see `trustlab runs`).")],
    device: Annotated[
        str | None, typer.Option("--device", help="override the run's device.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Finish an interrupted run: a training run from its last checkpoint, a reproduction
    from its last finished job."""
    from trustlab.results import RunStore

    stored = RunStore().get(run_id)
    if stored.kind == "reproduce":
        from trustlab.experiments.base import resume_reproduction

        if stored.status in ("finished", "running"):
            raise InputError(f"run {stored.id} is {stored.status}; there is nothing to resume.")
        rep = resume_reproduction(stored, device=device, progress=_progress(quiet))
        _print_reproduction(rep)
        if not rep.passed:
            raise typer.Exit(1)
        return
    from trustlab.workflows.train import resume_training

    run, result = resume_training(run_id, progress=_progress(quiet), device=device)
    _print_summary(run.refresh(), result.summary())


@app.command("eval")
@_handled
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="a model .safetensors file.")],
    dataset: Annotated[str, typer.Option(help="see `trustlab datasets`.")],
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
) -> None:
    """Accuracy and loss of a saved model (safetensors only) on a dataset split."""
    from trustlab.data import load_dataset
    from trustlab.train import evaluate, load_model
    from trustlab.train.trainer import check_model_fits
    from trustlab.utils.device import resolve_device
    from trustlab.utils.seed import seed_everything

    seed_everything(seed or 0)
    dev = resolve_device(device)
    model = load_model(checkpoint, device=dev)
    data = load_dataset(dataset, split, root=data_root)
    check_model_fits(model, data, device=dev)
    out = evaluate(model, data, device=dev)
    typer.echo(
        json.dumps({"checkpoint": str(checkpoint), "dataset": dataset, "split": split, **out})
    )


# -- attacks -----------------------------------------------------------------------------------
def _model_ref(ref: str, device: Any) -> tuple[Any, str | None, str | None]:
    """(model, the run's dataset, its data root) from a run id or a model checkpoint."""
    from trustlab.results import RunStore
    from trustlab.train import load_model

    dataset = data_root = None
    if ref.isdigit() or ref.startswith("run-"):
        run = RunStore().get(ref)
        path = run.dir / "model.safetensors"
        if not path.exists():
            raise InputError(f"run {run.id} has no model.safetensors (status {run.status}).")
        dataset, data_root = run.config.get("dataset"), run.config.get("data_root")
    else:
        path = Path(ref)
    return load_model(path, device=device), dataset, data_root


def _target(ref: str, dataset: str | None, data_root: str | None, n: int, device: str) -> Any:
    """(model, data, device) from a run id or a model checkpoint; ``n`` test points."""
    from trustlab.data import load_dataset
    from trustlab.train.trainer import check_model_fits
    from trustlab.utils.device import resolve_device

    dev = resolve_device(device)
    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}.")
    model, run_dataset, run_root = _model_ref(ref, dev)
    dataset, data_root = dataset or run_dataset, data_root or run_root
    if not dataset:
        raise InputError("which data? pass --dataset (a run id knows its dataset).")
    data = load_dataset(dataset, "test", root=data_root)
    data = data.subset(range(min(n, len(data))))
    check_model_fits(model, data, device=dev)
    return model, data, dev


@app.command("attack")
@_handled
def attack_cmd(
    target: Annotated[str, typer.Argument(help="a run id or a model .safetensors file.")],
    attack: Annotated[
        str, typer.Option(help="fgsm, pgd, pgd-cw, apgd-ce, apgd-t, md, mdmt.")
    ] = "pgd",
    eps: Annotated[str, typer.Option(help="L-inf radius, e.g. 8/255.")] = "8/255",
    dataset: Annotated[str | None, typer.Option(help="default: the run's dataset.")] = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test points.")] = 1000,
    png: Annotated[Path | None, typer.Option(help="write a grid of examples here.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
) -> None:
    """Robust accuracy of a model under one attack (and an optional PNG of examples)."""
    from trustlab.attacks.evasion import evaluate_robustness
    from trustlab.attacks.evasion.suite import make_attack

    model, data, dev = _target(target, dataset, data_root, n, device)
    atk = (
        make_attack(attack, model, eps, seed=seed or 0)
        if attack != "fgsm"
        else make_attack(attack, model, eps)
    )
    rep = evaluate_robustness(model, data, {attack: atk}, device=dev)
    typer.echo(json.dumps({"attack": attack, "eps": eps, **rep.to_dict()}))
    if png is not None:
        from trustlab.attacks.evasion.grid import save_grid

        k = min(8, len(data))
        x, y = data.x[:k].to(dev), data.y[:k].to(dev)
        save_grid(png, x, atk(x, y))


@app.command("evaluate")
@_handled
def evaluate_cmd(
    target: Annotated[str, typer.Argument(help="a run id or a model .safetensors file.")],
    suite: Annotated[str, typer.Option(help="quick or standard.")] = "quick",
    eps: Annotated[str, typer.Option(help="L-inf radius, e.g. 8/255.")] = "8/255",
    dataset: Annotated[str | None, typer.Option(help="default: the run's dataset.")] = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test points.")] = 1000,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
) -> None:
    """Worst-case robust accuracy over a suite of attacks (a cascade, as AutoAttack reports)."""
    from trustlab.attacks.evasion import evaluate_robustness
    from trustlab.attacks.evasion.suite import make_suite

    model, data, dev = _target(target, dataset, data_root, n, device)
    rep = evaluate_robustness(model, data, make_suite(suite, model, eps), device=dev)
    typer.echo(json.dumps({"suite": suite, "eps": eps, **rep.to_dict()}))


@app.command("advcam")
@_handled
def advcam_cmd(
    target: Annotated[str, typer.Argument(help="a run id or a model .safetensors file.")],
    png: Annotated[Path, typer.Option(help="write the grid (original, camouflaged, difference).")],
    style: Annotated[
        str, typer.Option(help="a bundled photograph (chelsea, coffee, ...) or an image file.")
    ] = "chelsea",
    region: Annotated[
        float, typer.Option(help="side of the central region that may change.")
    ] = 0.6,
    steps: Annotated[int, typer.Option(help="Adam iterations.")] = 300,
    target_class: Annotated[
        int | None, typer.Option(help="targeted: the class to reach (default: untargeted).")
    ] = None,
    eot: Annotated[bool, typer.Option(help="expectation over physical transformations.")] = False,
    style_layers: Annotated[
        str | None, typer.Option(help="comma-separated layer names (default: the conv stages).")
    ] = None,
    content_layer: Annotated[str | None, typer.Option(help="default: the last stage.")] = None,
    dataset: Annotated[str | None, typer.Option(help="default: the run's dataset.")] = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test images.")] = 8,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
) -> None:
    """Camouflage adversarial examples in a natural style (AdvCam) and write a PNG grid."""
    import torch

    from trustlab.attacks.evasion.advcam import AdvCam, style_image
    from trustlab.attacks.evasion.grid import save_grid
    from trustlab.experiments.camouflage import central_mask

    if not 0 < region <= 1:
        raise InputError(f"--region must be in (0, 1], got {region}.")
    model, data, dev = _target(target, dataset, data_root, n, device)
    x, y = data.x.to(dev), data.y.to(dev)
    goal = None
    if target_class is not None:
        if not 0 <= target_class < data.num_classes:
            raise InputError(
                f"--target-class must be in [0, {data.num_classes}), got {target_class}."
            )
        goal = torch.full_like(y, target_class)
    atk = AdvCam(
        model, style_image(style), mask=central_mask(tuple(x.shape[-2:]), region), steps=steps,
        targeted=goal is not None, eot=eot, seed=seed or 0, content_layer=content_layer,
        style_layers=[n for n in style_layers.split(",") if n] if style_layers else None,
    )  # fmt: skip
    adv = atk(x, y, goal)
    with torch.no_grad():
        pred = model(adv).argmax(1)
    hit = pred == goal if goal is not None else pred != y
    save_grid(png, x, adv)
    out = {
        "success": float(hit.float().mean()),
        "style_loss": float(atk.style_loss(adv).mean()),
        "style_loss_clean": float(atk.style_loss(x).mean()),
        "n": len(x),
        "png": str(png),
    }
    typer.echo(json.dumps(out))


DETECTORS = ("lid", "kd-bu", "deep-features")


def make_detector(name: str, model: Any, dataset: str, data_root: str | None, classifier: str,
                  seed: int) -> Any:  # fmt: skip
    """A detector by name (KD+BU fits its densities on the dataset's training split)."""
    from trustlab.defenses.detection import DeepFeatureDetector, KDBUDetector, LIDDetector

    if name == "lid":
        return LIDDetector(model, classifier=classifier, seed=seed)
    if name == "deep-features":
        return DeepFeatureDetector(model, classifier=classifier, seed=seed)
    if name == "kd-bu":
        from trustlab.data import load_dataset

        train = load_dataset(dataset, "train", root=data_root)
        dev = next(iter(model.parameters())).device
        return KDBUDetector(model, train.x.to(dev), train.y, classifier=classifier, seed=seed)
    raise InputError(f"unknown detector {name!r}; use one of {', '.join(DETECTORS)}.")


@app.command("detect")
@_handled
def detect_cmd(
    target: Annotated[str, typer.Argument(help="a run id or a model .safetensors file.")],
    detector: Annotated[str, typer.Option(help=", ".join(DETECTORS) + ".")] = "lid",
    attack: Annotated[str, typer.Option(help="the attack whose examples are detected.")] = "pgd",
    eps: Annotated[str, typer.Option(help="L-inf radius, e.g. 8/255.")] = "8/255",
    transfer_attack: Annotated[
        str | None, typer.Option(help="test on this attack's examples (cross-attack transfer).")
    ] = None,
    classifier: Annotated[str, typer.Option(help="lr (logistic regression) or rf.")] = "lr",
    splits: Annotated[int, typer.Option(help="random 80/20 splits.")] = 3,
    dataset: Annotated[str | None, typer.Option(help="default: the run's dataset.")] = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test points attacked.")] = 1000,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
) -> None:
    """Detection ROC-AUC of adversarial examples (per split and the mean), as the medical-imaging
    study measures it: successful attacks vs clean and noise-matched inputs."""
    from trustlab.attacks.evasion.suite import make_attack
    from trustlab.defenses.detection import build_detection_set, evaluate_detector

    if detector not in DETECTORS:
        raise InputError(f"unknown detector {detector!r}; use one of {', '.join(DETECTORS)}.")
    model, data, dev = _target(target, dataset, data_root, n, device)
    det = make_detector(detector, model, data.name, data_root, classifier, seed or 0)
    x, y = data.x.to(dev), data.y.to(dev)
    sets = build_detection_set(model, x, y, make_attack(attack, model, eps), seed=seed or 0)
    other = None
    if transfer_attack is not None:
        other = build_detection_set(
            model, x, y, make_attack(transfer_attack, model, eps), seed=seed or 0
        )
    rep = evaluate_detector(det, sets, splits=splits, seed=seed or 0, transfer_to=other)
    out = {"attack": attack, "eps": eps, "tested_on": transfer_attack or attack, **rep.to_dict()}
    typer.echo(json.dumps(out))


@app.command("backdoor")
@_handled
def backdoor_cmd(
    attack: Annotated[
        str,
        typer.Option(
            help="badnets, badnets-all2all, pixel, blend, refool, clean-label (adversarial "
            "patch), blind (compromised loss)."
        ),
    ],
    dataset: Annotated[str, typer.Option(help="training data, e.g. shapes10.")] = "shapes10",
    model: Annotated[str, typer.Option(help="architecture, e.g. resnet8.")] = "resnet8",
    rate: Annotated[
        float,
        typer.Option(
            help="fraction of the training set poisoned (clean-label: of the target class; "
            "blind: unused)."
        ),
    ] = 0.1,
    target: Annotated[int, typer.Option(help="the target class.")] = 0,
    epochs: Annotated[int, typer.Option(help="training epochs.")] = 5,
    lr: Annotated[float, typer.Option(help="peak learning rate.")] = 0.05,
    batch_size: Annotated[int, typer.Option(help="batch size.")] = 64,
    data_root: DataRootOpt = None,
    name: Annotated[str | None, typer.Option(help="a name for the stored run.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar.")] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
) -> None:
    """Train a backdoored model and store the attack artefact (weights, trigger, poison indices,
    config, metrics) as a run, with a PNG of clean vs triggered examples."""
    import torch

    from trustlab.attacks.backdoor.artifact import ATTACKS, save_artifact, train_backdoor
    from trustlab.attacks.evasion.grid import save_grid
    from trustlab.data import load_dataset
    from trustlab.models.spec import ModelSpec
    from trustlab.results import RunStore, recording_outcome
    from trustlab.train import TrainSettings
    from trustlab.train.trainer import check_model_fits
    from trustlab.utils.device import resolve_device

    if attack not in ATTACKS:
        raise InputError(f"unknown backdoor attack {attack!r}; use one of {', '.join(ATTACKS)}.")
    dev = resolve_device(device)
    s = seed or 0
    train = load_dataset(dataset, "train", root=data_root)
    test = load_dataset(dataset, "test", root=data_root)
    if not 0 <= target < train.num_classes:
        raise InputError(f"--target must be in [0, {train.num_classes}), got {target}.")
    torch.manual_seed(s)
    net = ModelSpec.for_data(model, train).build()
    check_model_fits(net, train, test)
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=s)
    config = {
        "attack": attack, "dataset": dataset, "model": model, "rate": rate, "target": target,
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": s,
    }  # fmt: skip
    run = RunStore().create_run("backdoor", name or f"{attack}-{dataset}", config, seed=s)
    with recording_outcome(run):
        art = train_backdoor(
            attack, train, test, net, settings, rate, target, s, dev, _progress(quiet)
        )
        art.config.update(config)
        save_artifact(run.dir, art)
        for f in (
            "model.safetensors",
            "trigger.safetensors",
            "poison.safetensors",
            "backdoor.json",
        ):
            run.add_artifact(f)
        k = min(8, len(test))
        x = test.x[:k].to(dev)
        save_grid(run.artifact_path("examples.png"), x, art.trigger(x))
        run.add_artifact("examples.png")
        run.finish(art.metrics)
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **art.metrics}))


def _artifact_dir(ref: str) -> Path:
    """The folder of a backdoor artefact: a run id or a folder holding backdoor.json."""
    from trustlab.results import RunStore

    if ref.isdigit():
        return RunStore().get(int(ref)).dir
    folder = Path(ref).expanduser()
    if not (folder / "backdoor.json").is_file():
        raise InputError(
            f"{ref} is neither a run id nor a folder with a backdoor artefact (backdoor.json); "
            "make one with `trustlab backdoor`."
        )
    return folder


@app.command("defend")
@_handled
def defend_cmd(
    artefact: Annotated[str, typer.Argument(help="a backdoor run id or artefact folder.")],
    defense: Annotated[
        str, typer.Option(help="nc, strip, spectral, ac, fine-pruning or adv-filter.")
    ] = "nc",
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Neural Cleanse's epochs (default 5), or the training epochs of fine-pruning "
            "and the adversarial filter (default 10, lr 0.05)."
        ),
    ] = None,
    data_root: DataRootOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar.")] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
) -> None:
    """Run a backdoor defense against an attack artefact (trustlab backdoor) and store the
    result: the defense's numbers as JSON (and, for Neural Cleanse, a PNG of the recovered
    triggers and masks)."""
    from trustlab.attacks.backdoor.artifact import load_artifact
    from trustlab.data import load_dataset
    from trustlab.defenses.backdoor.evaluate import DEFENSES, run_defense
    from trustlab.results import RunStore, recording_outcome
    from trustlab.utils.device import resolve_device
    from trustlab.utils.io import write_json_atomic

    if defense not in DEFENSES:
        raise InputError(f"unknown defense {defense!r}; use one of {', '.join(DEFENSES)}.")
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {epochs}.")
    if epochs is not None and defense in ("strip", "spectral", "ac"):
        raise InputError(f"{defense} trains nothing; it takes no --epochs.")
    folder = _artifact_dir(artefact)
    dev = resolve_device(device)
    art = load_artifact(folder, device=dev)
    dataset = art.config.get("dataset")
    if not dataset:
        raise InputError(f"the artefact in {folder} does not name its dataset.")
    train = load_dataset(dataset, "train", root=data_root)
    test = load_dataset(dataset, "test", root=data_root)
    s = seed or 0
    options: dict[str, Any] = {}
    settings = None
    if epochs is not None and defense == "nc":
        options = {"epochs": epochs}
    elif epochs is not None:  # fine-pruning's fine-tuning, the adversarial filter's training
        from trustlab.train import TrainSettings

        settings = TrainSettings(epochs=epochs, lr=0.05, batch_size=64, seed=s)
    config = {"artefact": str(folder), "defense": defense, "epochs": epochs, "seed": s}
    run = RunStore().create_run("defend", f"{defense}-{folder.name}", config, seed=s)
    keep: dict[str, Any] = {}
    with recording_outcome(run):
        out = run_defense(
            defense, art, train, test, settings, options, seed=s, progress=_progress(quiet),
            keep=keep,
        )  # fmt: skip
        report = keep.get("report")
        doc = {"defense": defense, "metrics": out}
        if report is not None and hasattr(report, "to_dict"):
            doc["report"] = report.to_dict()
        write_json_atomic(run.artifact_path("defense.json"), doc)
        run.add_artifact("defense.json")
        if defense == "nc" and report is not None:
            from trustlab.attacks.evasion.grid import save_rows

            # row 1: each class's mask; row 2: mask x pattern (what NC pastes)
            m = report.masks[:, None]
            save_rows(run.artifact_path("triggers.png"), [m, m * report.patterns])
            run.add_artifact("triggers.png")
        run.finish(out)
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **out}))


# -- privacy ------------------------------------------------------------------------------------
@app.command("mia")
@_handled
def mia_cmd(
    run_ref: Annotated[
        str, typer.Argument(help="a finished `trustlab train` or `defend-privacy` run (its id).")
    ],
    attack: Annotated[
        str, typer.Option(help="lira (default), shokri, loss or confidence.")
    ] = "lira",
    shadows: Annotated[int, typer.Option(help="shadow models (LiRA, Shokri).")] = 16,
    offline: Annotated[
        bool, typer.Option("--offline", help="LiRA's offline (one-sided) test.")
    ] = False,
    n: Annotated[
        int | None, typer.Option(help="members audited (and as many non-members).")
    ] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Membership inference against a training run (or a defended one: members are its source
    run's training split; threshold attacks only): members from its training split, non-members
    from its test split; shadows trained with the run's own recipe and cached.
    Stores a `mia` run (metrics, per-example scores, a log-log ROC) and prints its numbers."""
    from trustlab.workflows.mia import run_mia

    run, result = run_mia(
        run_ref, attack, shadows, offline, n, device=device, seed=seed or 0,
        progress=_progress(quiet),
    )  # fmt: skip
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), "attack": attack, **result.metrics}))


@app.command("defend-privacy")
@_handled
def defend_privacy_cmd(
    run_ref: Annotated[str, typer.Argument(help="a finished `trustlab train` run (its id).")],
    defense: Annotated[str, typer.Option(help="jem (the JEM resampling defense).")] = "jem",
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Defend a training run's model against membership inference; the defended model is
    stored as a new run laid out like a training run (so `trustlab mia NEW` audits it)."""
    from trustlab.workflows.privacy_defense import run_privacy_defense

    run, result = run_privacy_defense(
        run_ref, defense, device=device, seed=seed, progress=_progress(quiet)
    )
    typer.echo(
        json.dumps({"run": run.id, "dir": str(run.dir), "defense": defense,
                    **result.report.accuracy})
    )  # fmt: skip


TRANSFER_ATTACKS = ("pgd", "mifgsm", "difgsm", "sgm", "sgm-mi", "sgm-mi-di")


@app.command(
    "transfer", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@_handled
def transfer_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Option(help="run id or model file the attack is crafted on.")],
    targets: Annotated[
        list[str],
        typer.Option(help="run ids or model files to test on: --targets 4 5 6 (or 4,5,6)."),
    ],
    attack: Annotated[str, typer.Option(help=", ".join(TRANSFER_ATTACKS) + ".")] = "sgm",
    eps: Annotated[str, typer.Option(help="L-inf radius, e.g. 8/255.")] = "8/255",
    steps: Annotated[int, typer.Option(help="attack iterations.")] = 10,
    gamma: Annotated[float, typer.Option(help="SGM's residual-gradient decay.")] = 0.2,
    dataset: Annotated[str | None, typer.Option(help="default: the source run's dataset.")] = None,
    data_root: DataRootOpt = None,
    n: Annotated[int, typer.Option(help="number of test points.")] = 1000,
    name: Annotated[str | None, typer.Option(help="a name for the stored run.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
) -> None:
    """Craft adversarial examples on SOURCE and report their success rate on each target.

    The success rate on a target is measured on the points that the source and that target
    both classify correctly. The result is stored as a run (kind ``transfer``).
    """
    from trustlab.attacks.evasion import evaluate_transfer
    from trustlab.attacks.evasion.suite import make_attack
    from trustlab.results import RunStore, recording_outcome
    from trustlab.train.trainer import check_model_fits
    from trustlab.utils.io import write_json_atomic

    extra = [a for a in ctx.args if a.startswith("-")]
    if extra:
        raise InputError(f"unknown option {extra[0]!r}; see trustlab transfer --help.")
    refs = [r for t in [*targets, *ctx.args] for r in t.split(",") if r]
    if attack not in TRANSFER_ATTACKS:
        raise InputError(
            f"unknown transfer attack {attack!r}; use one of {', '.join(TRANSFER_ATTACKS)}."
        )
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}.")
    src, data, dev = _target(source, dataset, data_root, n, device)
    models = {}
    for ref in refs:
        if ref in models:
            raise InputError(f"target {ref!r} is given twice.")
        models[ref] = _model_ref(ref, dev)[0]
        check_model_fits(models[ref], data, device=dev)
    kwargs: dict[str, Any] = {"steps": steps, "seed": seed or 0}
    if attack.startswith("sgm"):
        kwargs["gamma"] = gamma
    atk = make_attack(attack, src, eps, **kwargs)
    config = {
        "source": source, "targets": refs, "attack": attack, "eps": eps, "steps": steps,
        "gamma": gamma if attack.startswith("sgm") else None, "dataset": data.name, "n": len(data),
        "seed": seed or 0,
    }  # fmt: skip
    run = RunStore().create_run("transfer", name or f"transfer-{attack}", config, seed=seed or 0)
    with recording_outcome(run):
        report = evaluate_transfer(src, models, data, atk, device=dev)
        out = {"run": run.id, "attack": attack, "eps": eps, **report.to_dict()}
        write_json_atomic(run.artifact_path("transfer.json"), out)
        run.add_artifact("transfer.json")
        run.finish({"mean_success": report.mean_success(), "source_success": report.source_success})
    typer.echo(json.dumps(out))


# -- reproductions -----------------------------------------------------------------------------
def _print_reproduction(rep: Any) -> None:
    from trustlab.experiments.base import get_experiment

    exp = get_experiment(rep.experiment)
    table = Table(
        title=f"{exp.title}: {rep.experiment} ({rep.preset.name}, "
        f"{rep.preset.dataset}, {rep.preset.model}, {rep.preset.seeds} seed(s))"
    )
    cols = [*rep.table.keys, *rep.table.metrics, "seeds"]
    for c in cols:
        table.add_column(c, justify="left" if c in rep.table.keys else "right")
    for e in rep.table.summary():
        cells = [str(e[k]) for k in rep.table.keys]
        for m in rep.table.metrics:
            scale = 100.0 if m in exp.percent else 1.0
            cells.append(f"{e[m] * scale:.2f} ± {e[m + '_std'] * scale:.2f}")
        cells.append(str(e["seeds"]))
        table.add_row(*cells)
    console.print(table)
    for c in rep.claims:
        mark = "[bold green]PASS[/]" if c.passed else "[bold red]FAIL[/]"
        console.print(f"{mark} {c.text}\n     {c.detail}", highlight=False, soft_wrap=True)
    if rep.run is not None:
        console.print(f"run {rep.run.id}: {rep.run.dir}")


@app.command("reproduce")
@_handled
def reproduce_cmd(
    name: Annotated[str, typer.Argument(help="an experiment (see `trustlab experiments`).")],
    preset: Annotated[str, typer.Option(help="smoke, quick or full.")] = "quick",
    dataset: Annotated[str | None, typer.Option(help="override the preset's dataset.")] = None,
    data_root: DataRootOpt = None,
    seeds: Annotated[int | None, typer.Option(help="number of seeds (default: preset's).")] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: FirstSeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Reproduce a paper's headline claim: table, PASS/FAIL per claim, exit 1 on a FAIL."""
    from trustlab.experiments.base import reproduce

    rep = reproduce(
        name,
        preset,
        dataset=dataset,
        seeds=seeds,
        device=device,
        workers=workers,
        progress=_progress(quiet),
        seed=seed,
        data_root=data_root,
    )
    _print_reproduction(rep)
    if not rep.passed:
        raise typer.Exit(1)


bench_app = typer.Typer(help="Benchmark matrices (stored, resumable runs).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("backdoor")
@_handled
def bench_backdoor_cmd(
    attacks: Annotated[
        str | None,
        typer.Option(help="comma-separated, e.g. badnets,blend,refool,blind,clean-label."),
    ] = None,
    defenses: Annotated[
        str | None,
        typer.Option(help="comma-separated, e.g. nc,strip,spectral,ac,fine-pruning,adv-filter."),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="override the preset's dataset.")] = None,
    preset: Annotated[str, typer.Option(help="smoke or quick.")] = "quick",
    data_root: DataRootOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: FirstSeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """The backdoor attack x defense matrix: every attack's model is trained, every defense run
    against it; each cell is stored as it finishes (`trustlab resume ID` skips finished cells);
    prints the table and writes matrix.html into the run folder."""
    from trustlab.experiments.base import reproduce
    from trustlab.experiments.bench_backdoor import bench_options

    rep = reproduce(
        "bench-backdoor",
        preset,
        dataset=dataset,
        device=device,
        workers=workers,
        progress=_progress(quiet),
        seed=seed,
        data_root=data_root,
        options=bench_options(attacks, defenses),
    )
    from trustlab.experiments.bench_backdoor import matrix

    header, lines = matrix(rep.table.rows)
    table = Table(title=f"bench backdoor ({rep.preset.name}, {rep.preset.dataset})")
    for h in header:
        table.add_column(h, overflow="fold")
    for line in lines:
        table.add_row(*line)
    console.print(table)
    if rep.run is not None:
        console.print(f"run {rep.run.id}: {rep.run.dir} (matrix.html, report.md, table.json)")


@app.command("experiments")
@_handled
def experiments_cmd() -> None:
    """List the reproductions, their presets and their claims."""
    from trustlab.experiments.base import list_experiments

    for e in list_experiments():
        console.print(f"[bold]{e['name']}[/]: {e['title']}\n  {e['paper']}", soft_wrap=True)
        for k, v in e["presets"].items():
            console.print(f"  --preset {k}: {v}", soft_wrap=True)
        for c in e["claims"]:
            console.print(f"  claim: {c}", soft_wrap=True)


# -- the results store -------------------------------------------------------------------------
@app.command("runs")
@_handled
def runs_cmd(
    status: Annotated[
        str | None, typer.Option(help="running, finished, failed, interrupted.")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="e.g. train, reproduce.")] = None,
    limit: Annotated[int, typer.Option(help="show at most this many (newest first).")] = 20,
) -> None:
    """List the runs in the results store ($TRUSTLAB_HOME, default ./runs)."""
    from trustlab.results import RunStore

    store = RunStore()
    runs = store.list(status=status, kind=kind, limit=limit)
    total = len(store.list(status=status, kind=kind))
    table = Table(title=f"runs ({len(runs)} of {total}, newest first)")
    for col in ("id", "kind", "name", "status", "created", "test acc"):
        table.add_column(col)
    for r in runs:
        acc = (r.summary or {}).get("test_accuracy")
        table.add_row(
            str(r.id),
            r.kind,
            r.name,
            r.status,
            r.created,
            f"{acc * 100:.2f}%" if isinstance(acc, float) else "",
        )
    console.print(table)


@app.command("show")
@_handled
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="the run's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output.")] = False,
) -> None:
    """Show a run: status, config, summary and per-epoch metrics."""
    from trustlab.results import RunStore

    run = RunStore().get(run_id)
    metrics = run.metrics()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": run.id,
                    "kind": run.kind,
                    "name": run.name,
                    "status": run.status,
                    "seed": run.seed,
                    "config": run.config,
                    "summary": run.summary,
                    "metrics": metrics,
                    "error": run.error,
                    "dir": str(run.dir),
                },
                default=str,
            )
        )
        return
    console.print(
        f"[bold]run {run.id}[/] {run.kind} {run.name!r}: {run.status} "
        f"(created {run.created}, seed {run.seed})\nfolder: {run.dir}"
    )
    if run.error:
        console.print(f"error: {run.error}")
    console.print("config: " + json.dumps(run.config, sort_keys=True, default=str), soft_wrap=True)
    if metrics:
        keys: list[str] = []
        for row in metrics:  # the union of keys, in first-seen order
            keys += [k for k in row if k != "phase" and k not in keys]
        table = Table(title="metrics")
        for k in keys:
            table.add_column(k, justify="right")
        for row in metrics:
            table.add_row(*(_fmt(row.get(k, "")) for k in keys))
        console.print(table)
    if run.summary:
        console.print("summary: " + json.dumps(run.summary, sort_keys=True, default=str))


def _version(value: bool) -> None:
    if value:
        from trustlab import __version__

        typer.echo(f"trustlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")
    ] = False,
) -> None:
    """Attack, defend and measure deep-learning models."""


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
