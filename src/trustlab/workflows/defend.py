"""A stored defense run: a registered backdoor defense against a backdoor artefact
(``trustlab defend``).

:func:`run_defend` resolves the artefact (a run id, or a folder holding ``backdoor.json``),
checks the defense's name and the training budget against its card
(:data:`~trustlab.registry.DEFENSES`: a defense whose meta ``trains`` is false takes no
``epochs``) *before* the run is created, then runs it
(:func:`~trustlab.defenses.backdoor.evaluate.run_defense`) and stores ``defense.json`` (the
numbers and the defense's report) and, for a defense whose report holds reversed triggers
(Neural Cleanse), ``triggers.png`` (:func:`triggers_figure`: a column per class, labelled,
flagged classes framed in red; row 1: each class's mask; row 2: mask x pattern).

``epochs`` goes where the card's meta ``budget`` says: ``"options"``, the defense's own
``epochs`` (Neural Cleanse's optimisation; default: the authors' schedule, which stops each class
on convergence; a cap also starts lambda at 1e-3, ``reset_cost_to_zero=False``, as a budgeted
scan should, since the authors' lambda stays 0 for its first epochs); ``"settings"``, the
training budget of the models it trains (fine-pruning's fine-tuning, the adversarial filter;
SGD lr 0.05, batch 64; default 10 epochs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustlab.attacks.backdoor.artifact import load_artifact
from trustlab.data import load_dataset
from trustlab.defenses.backdoor.evaluate import run_defense
from trustlab.errors import InputError
from trustlab.registry import DEFENSES
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.train import TrainSettings
from trustlab.utils.device import resolve_device
from trustlab.utils.io import write_json_atomic
from trustlab.workflows.targets import is_run_ref

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["artifact_dir", "run_defend", "triggers_figure", "triggers_png"]


def artifact_dir(ref: str, store: RunStore | None = None) -> Path:
    """The folder of a backdoor artefact: a run id or a folder holding backdoor.json."""
    if is_run_ref(ref):
        return (store or RunStore()).get(ref).dir
    folder = Path(ref).expanduser()
    if not (folder / "backdoor.json").is_file():
        raise InputError(
            f"{ref} is neither a run id nor a folder with a backdoor artefact (backdoor.json); "
            "make one with `trustlab backdoor`."
        )
    return folder


def triggers_figure(report: Any, class_names: Sequence[str] | None = None) -> Figure:
    """The picture of a Neural Cleanse report: one column per scanned class (its label, the
    class name from ``class_names`` where it says more than the number), rows ``"mask"``
    (captioned with the mask's L1 norm) and ``"mask x pattern"`` (what NC pastes; captioned
    with the anomaly index); flagged classes framed in red; a title saying what is flagged."""
    from trustlab.results.plots import image_rows_figure

    k = len(report.masks)
    extra = getattr(report, "extra", None) or {}
    classes = [int(c) for c in extra.get("classes", range(k))]

    def name(c: int) -> str:
        known = class_names is not None and 0 <= c < len(class_names)
        if known and str(class_names[c]) != str(c):
            return f"{c}: {class_names[c]}"
        return f"class {c}"

    flagged = set(getattr(report, "flagged", ()))
    cols = [name(c) + ("\nflagged" if c in flagged else "") for c in classes]
    norms = getattr(report, "norms", None)
    anomaly = getattr(report, "anomaly", None)
    anomaly = [float(v) for v in anomaly] if anomaly is not None else None
    if flagged:
        which = ", ".join(
            name(c) + (f" (anomaly index {anomaly[classes.index(c)]:.1f})" if anomaly else "")
            for c in sorted(flagged)
        )
        verdict = f"flagged as backdoor target: {which}"
    else:
        verdict = "no class flagged"
    threshold = getattr(report, "threshold", None)
    if threshold is not None:
        verdict += f" (rule: mask L1 below the median, anomaly index > {threshold:g})"
    m = report.masks[:, None]
    return image_rows_figure(
        [m, m * report.patterns],
        row_labels=["mask", "mask x pattern"],
        col_labels=cols,
        captions=[
            [f"L1 {float(v):.1f}" for v in norms] if norms is not None else None,
            [f"anomaly {a:.1f}" for a in anomaly] if anomaly is not None else None,
        ],
        title=f"Neural Cleanse: the smallest trigger that sends inputs to each class\n{verdict}",
        marked=[i for i, c in enumerate(classes) if c in flagged],
    )


def triggers_png(path: str | Path, report: Any, class_names: Sequence[str] | None = None) -> Path:
    """Write :func:`triggers_figure` as a PNG to ``path``, atomically; returns ``path``."""
    from trustlab.results.plots import save_figure

    return save_figure(triggers_figure(report, class_names), path)


def run_defend(
    artefact: str | int | Path,
    defense: str = "nc",
    epochs: int | None = None,
    data_root: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    store: RunStore | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[Run, dict[str, float]]:
    """Run the registered ``defense`` against ``artefact`` (a backdoor run id or artefact
    folder) and store a ``defend`` run; returns ``(run, metrics)``. ``options`` are the
    defense's parameters (its card's; ``epochs`` sets the budget). See the module."""
    card = DEFENSES.get(defense)  # unknown names fail here, before anything is stored
    defense = card.name
    card.validate(options or {})
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {epochs}.")
    if epochs is not None and not card.meta.get("trains"):
        raise InputError(f"{defense} trains nothing; it takes no --epochs.")
    store = store or RunStore()
    folder = artifact_dir(str(artefact), store)
    dev = resolve_device(device)
    art = load_artifact(folder, device=dev)
    dataset = art.config.get("dataset")
    if not dataset:
        raise InputError(f"the artefact in {folder} does not name its dataset.")
    train = load_dataset(dataset, "train", root=data_root)
    test = load_dataset(dataset, "test", root=data_root)
    given = dict(options or {})
    options = dict(given)
    settings = None
    if epochs is not None and card.meta.get("budget") == "options":
        options["epochs"] = epochs
        if defense == "nc":  # a budgeted scan: lambda from 1e-3, not 0 for its first epochs
            options.setdefault("reset_cost_to_zero", False)
    elif epochs is not None:  # the training budget of the models the defense trains
        settings = TrainSettings(epochs=epochs, lr=0.05, batch_size=64, seed=seed)
    config = {"artefact": str(folder), "defense": defense, "epochs": epochs, "seed": seed,
              **({"options": given} if given else {})}  # fmt: skip
    run = store.create_run("defend", f"{defense}-{folder.name}", config, seed=seed)
    keep: dict[str, Any] = {}
    with recording_outcome(run):
        out = run_defense(
            defense, art, train, test, settings, options, seed=seed, progress=progress, keep=keep
        )
        report = keep.get("report")
        doc: dict[str, Any] = {"defense": defense, "metrics": out}
        if report is not None and hasattr(report, "to_dict"):
            doc["report"] = report.to_dict()
        write_json_atomic(run.artifact_path("defense.json"), doc)
        run.add_artifact("defense.json")
        if report is not None and hasattr(report, "masks") and hasattr(report, "patterns"):
            triggers_png(run.artifact_path("triggers.png"), report, test.classes)
            run.add_artifact("triggers.png")
        run.finish(out)
    return run, out
