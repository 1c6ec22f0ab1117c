"""Training: ``train``, ``resume`` and ``eval``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer

from trustlab.cli.common import (
    DataRootOpt,
    DeviceOpt,
    QuietOpt,
    RayAddressOpt,
    SeedOpt,
    WorkersOpt,
    chosen_executor,
    command,
    print_reproduction,
    print_summary,
    stdout,
    warnings_shown,
)
from trustlab.errors import InputError
from trustlab.utils.progress import show_progress

AREA = "Training"


@command("train", area=AREA)
def train_cmd(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of train settings.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="{datasets}.")] = None,
    model: Annotated[str | None, typer.Option(help="{models}.")] = None,
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
    loss: Annotated[
        str | None, typer.Option(help="{losses}; APL: active+passive, e.g. nce+rce.")
    ] = None,
    alpha: Annotated[float | None, typer.Option(help="SCE/APL alpha (paper default).")] = None,
    beta: Annotated[float | None, typer.Option(help="SCE/APL beta (paper default).")] = None,
    noise: Annotated[
        str | None, typer.Option(help="label noise: sym:0.4, asym:0.4, pair:0.2, idn:0.3.")
    ] = None,
    adv: Annotated[
        str | None, typer.Option(help="adversarial training: {adversarial-training}.")
    ] = None,
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
    # not SeedOpt: a flag overrides the YAML file only when given
    seed: Annotated[
        int | None, typer.Option("--seed", help="random seed (default: the YAML's, else 0).")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a model and store the run; flags override the YAML file given with --config.

    Without options: digits, cnn-small, 10 epochs. The YAML file also takes the settings that
    have no flag (docs/training.md).
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
    out = stdout()
    for w in caught:
        out.print(f"[yellow]{w.message}[/yellow]")
    with warnings_shown():
        run, result = run_training(prep, progress=show_progress(not quiet), log_epochs=not quiet)
    if run is not None:
        print_summary(run.refresh(), result.summary())


@command("resume", area=AREA)
def resume_cmd(
    run_id: Annotated[str, typer.Argument(help="the run's id (see `trustlab runs`).")],
    device: Annotated[
        str | None, typer.Option("--device", help="override the run's device.")
    ] = None,
    quiet: QuietOpt = False,
    workers: WorkersOpt = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="a reproduction's jobs: local or ray (default: the one the run was made with).",
        ),
    ] = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Finish an interrupted run: training or inpainting from its last checkpoint, a
    reproduction's jobs."""
    from trustlab.results import RunStore

    stored = RunStore().get(run_id)
    if stored.kind == "reproduce":
        from trustlab.experiments.base import resume_reproduction

        if stored.status in ("finished", "running"):
            raise InputError(f"run {stored.id} is {stored.status}; there is nothing to resume.")
        name = executor or stored.config.get("executor", "local")
        with chosen_executor(name, ray_address) as ex:
            rep = resume_reproduction(
                stored, device=device, workers=workers, progress=show_progress(not quiet),
                executor=ex,
            )  # fmt: skip
        print_reproduction(rep)
        if not rep.passed:
            raise typer.Exit(1)
        return
    if executor is not None or ray_address is not None or workers is not None:
        raise InputError(
            f"--executor, --ray-address and --workers apply to reproductions; run {stored.id} "
            f"is a {stored.kind} run."
        )
    if stored.kind == "inpaint":
        from trustlab.workflows.inpaint import resume_inpaint

        with warnings_shown():
            run, _ = resume_inpaint(stored.id, progress=show_progress(not quiet), device=device)
        run = run.refresh()
        print_summary(run, run.summary)
        stdout().print(f"grid: {run.dir / 'grid.png'}", highlight=False, soft_wrap=True)
        return
    from trustlab.workflows.train import resume_training

    with warnings_shown():
        run, result = resume_training(
            run_id, progress=show_progress(not quiet), device=device, log_epochs=not quiet
        )
    print_summary(run.refresh(), result.summary())


@command("eval", area=AREA)
def eval_cmd(
    target: Annotated[str, typer.Argument(help="a run id or a model .safetensors file.")],
    dataset: Annotated[
        str | None, typer.Option(help="{datasets} (default: the run's dataset).")
    ] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Accuracy and loss of a run's model or a model file (safetensors only) on a dataset split."""
    from trustlab.data import load_dataset
    from trustlab.train import evaluate
    from trustlab.train.trainer import check_model_fits
    from trustlab.utils.device import resolve_device
    from trustlab.utils.seed import seed_everything
    from trustlab.workflows.targets import load_target_model

    seed_everything(seed)
    dev = resolve_device(device)
    model, run_dataset, run_root = load_target_model(target, dev)
    dataset, data_root = dataset or run_dataset, data_root or run_root
    if not dataset:
        raise InputError("which data? pass --dataset (a run id knows its dataset).")
    data = load_dataset(dataset, split, root=data_root)
    check_model_fits(model, data, device=dev)
    out = evaluate(model, data, device=dev)
    typer.echo(json.dumps({"checkpoint": target, "dataset": dataset, "split": split, **out}))
