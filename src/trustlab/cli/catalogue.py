"""The catalogue: ``trustlab list [KIND]`` (every registered method, from its card) and the
listings ``datasets``, ``models`` and ``experiments``."""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from trustlab.cli.common import command, stdout
from trustlab.errors import InputError
from trustlab.registry import PRIVACY_ATTACKS, REGISTRIES


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, tuple | list):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _defaults(card: Any) -> str:
    """``k=v, ...`` of a card's parameters (a bare ``k`` where the parameter has no default);
    for a privacy attack, the options ``trustlab mia --options`` takes (the rest are flags)."""
    params = card.parameters()
    if card.kind == PRIVACY_ATTACKS.kind:
        from trustlab.attacks.privacy.audit import option_defaults  # torch: only when listed

        params = option_defaults(card)
        if not params:
            return "(takes no options)"
    return ", ".join(
        k if v is inspect.Parameter.empty else f"{k}={_value(v)}" for k, v in params.items()
    )


AREA = "Catalogue"


@command("list", area=AREA)
def list_cmd(
    kind: Annotated[
        str | None, typer.Argument(help="one of: " + ", ".join(REGISTRIES) + " (default: all).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="machine-readable: KIND given, a list of cards.")
    ] = False,
) -> None:
    """List the catalogue: every registered method with its paper and defaults.

    With --json and a KIND: a list of cards (name, kind, description, paper, threat, defaults,
    meta); without a KIND: an object of such lists by kind.
    """
    if kind is not None and kind not in REGISTRIES:
        raise InputError(f"unknown kind {kind!r}; use one of {', '.join(REGISTRIES)}.")
    kinds = [kind] if kind is not None else list(REGISTRIES)
    if as_json:
        cards = {k: [c.to_dict() for c in REGISTRIES[k]] for k in kinds}
        typer.echo(json.dumps(cards[kind] if kind is not None else cards))
        return
    out = stdout()
    for k in kinds:
        reg = REGISTRIES[k]
        out.print(f"[bold]{k}[/] ({len(reg)})", highlight=False)
        table = Table()
        last = "options (mia --options)" if k == "privacy-attacks" else "defaults"
        for col in ("name", "description", "paper", last):
            table.add_column(col, overflow="fold")
        for card in reg:
            table.add_row(card.name, card.description, card.paper, _defaults(card))
        out.print(table)


@command("datasets", area=AREA)
def datasets_cmd() -> None:
    """List the datasets: built-in (offline) and file-based (real data)."""
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
    stdout().print(table)


@command("models", area=AREA)
def models_cmd() -> None:
    """List the model architectures with their parameter counts (10 classes, 3x32x32)."""
    from trustlab.models import list_models

    table = Table(title="models")
    for col in ("name", "kind", "parameters", "description"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for row in list_models():
        table.add_row(row["name"], row["kind"], f"{row['params']:,}", row["description"])
    stdout().print(table)


@command("experiments", area=AREA)
def experiments_cmd() -> None:
    """List the reproductions, their presets and their claims."""
    from trustlab.experiments.base import list_experiments

    out = stdout()
    for e in list_experiments():
        out.print(f"[bold]{e['name']}[/]: {e['title']}\n  {e['paper']}", soft_wrap=True)
        for k, v in e["presets"].items():
            out.print(f"  --preset {k}: {v}", soft_wrap=True)
        for c in e["claims"]:
            out.print(f"  claim: {c}", soft_wrap=True)
