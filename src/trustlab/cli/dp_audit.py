"""Privacy: ``audit-dp`` (empirical lower bounds on a training recipe's DP epsilon)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from trustlab.cli.common import DeviceOpt, QuietOpt, SeedOpt, command, err_console
from trustlab.utils.progress import show_progress

AREA = "Privacy"


def _threshold(text: str) -> str | float:
    """``bonferroni``, ``split``, ``max`` or a number (the workflow names what is wrong)."""
    try:
        return float(text)
    except ValueError:
        return text


@command("audit-dp", area=AREA)
def audit_dp_cmd(
    run_ref: Annotated[
        str, typer.Argument(help="a finished `trustlab train` run (its id), e.g. one with --dp.")
    ],
    canaries: Annotated[
        int | None,
        typer.Option(help="mislabelled canaries m (default 256; with --trials the group, 1)."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="one-run (Steinke et al., one training) or cp (Clopper-Pearson).")
    ] = "one-run",
    trials: Annotated[
        int | None,
        typer.Option(help="cp only: T trainings with and T without the canaries (2T trainings)."),
    ] = None,
    confidence: Annotated[float, typer.Option(help="confidence of the bound.")] = 0.95,
    threshold: Annotated[
        str,
        typer.Option(help="bonferroni, max, split (cp) or a number (cp): how the test is chosen."),
    ] = "bonferroni",
    k_pos: Annotated[
        int | None, typer.Option(help="one-run: guess 'in' for the k highest scores.")
    ] = None,
    k_neg: Annotated[
        int | None, typer.Option(help="one-run: guess 'out' for the k lowest scores.")
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="delta of the bound (default: the run's, else 1e-5).")
    ] = None,
    base_size: Annotated[
        int | None, typer.Option(help="train on a stratified subset of this many base examples.")
    ] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Retrain a run's recipe with canaries and print empirical lower bounds on its epsilon next
    to the accountant's; stores a dp-audit run.

    The canaries are training examples with a random wrong label, each included with probability
    1/2 (one training). One-run: Steinke et al.'s bound; cp: Clopper-Pearson over the canaries of
    that training (assumes them independent), or over 2T trainings with --trials T.
    """
    from trustlab.workflows.dp_audit import audit_dp

    run, result = audit_dp(
        run_ref, canaries=canaries, method=method, trials=trials, confidence=confidence,
        threshold=_threshold(threshold), k_pos=k_pos, k_neg=k_neg, delta=delta,
        base_size=base_size, device=device, seed=seed, progress=show_progress(not quiet),
    )  # fmt: skip
    keys = (
        "method", "epsilon_lb", "one_run_epsilon_lb", "one_run_epsilon_max", "cp_epsilon_lb",
        "epsilon", "target_epsilon", "run_epsilon", "delta", "confidence", "noise_multiplier",
        "canaries", "included", "trainings", "canary_auc", "test_accuracy",
    )  # fmt: skip
    out = {k: result.summary[k] for k in keys if k in result.summary}
    ceiling = result.summary.get("one_run_epsilon_max")
    if ceiling is not None and result.summary["one_run_epsilon_lb"] >= ceiling - 1e-6:
        err_console.print(
            f"note: {result.summary['canaries']} canaries cannot show a one-run bound above "
            f"{ceiling:.2f}; the bound is at that ceiling, so it says nothing more: use more "
            "--canaries (256 is the default).",
            style="yellow", highlight=False,
        )  # fmt: skip
    typer.echo(json.dumps({"run": run.id, "dir": str(run.dir), **out}))
