"""A stored defense run: a registered backdoor defense against a backdoor artefact
(``trustlab defend``).

:func:`run_defend` resolves the artefact (a run id, or a folder holding ``backdoor.json``),
checks the defense's name and the training budget against its card
(:data:`~trustlab.registry.DEFENSES`: a defense whose meta ``trains`` is false takes no
``epochs``) *before* the run is created, then runs it
(:func:`~trustlab.defenses.backdoor.evaluate.run_defense`) and stores ``defense.json`` (the
numbers and the defense's report) and, for a defense whose report holds reversed triggers
(Neural Cleanse), ``triggers.png`` (row 1: each class's mask; row 2: mask x pattern).

``epochs`` goes where the card's meta ``budget`` says: ``"options"``, the defense's own
``epochs`` (Neural Cleanse's optimisation; default 5); ``"settings"``, the training budget of
the models it trains (fine-pruning's fine-tuning, the adversarial filter; SGD lr 0.05, batch
64; default 10 epochs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustlab.attacks.backdoor.artifact import load_artifact
from trustlab.data import load_dataset
from trustlab.defenses.backdoor.evaluate import run_defense
from trustlab.errors import InputError
from trustlab.registry import DEFENSES
from trustlab.results import Run, RunStore, recording_outcome
from trustlab.train import TrainSettings
from trustlab.utils.device import resolve_device
from trustlab.utils.io import write_json_atomic

__all__ = ["artifact_dir", "run_defend"]


def artifact_dir(ref: str, store: RunStore | None = None) -> Path:
    """The folder of a backdoor artefact: a run id or a folder holding backdoor.json."""
    if ref.isdigit():
        return (store or RunStore()).get(int(ref)).dir
    folder = Path(ref).expanduser()
    if not (folder / "backdoor.json").is_file():
        raise InputError(
            f"{ref} is neither a run id nor a folder with a backdoor artefact (backdoor.json); "
            "make one with `trustlab backdoor`."
        )
    return folder


def run_defend(
    artefact: str | int | Path,
    defense: str = "nc",
    epochs: int | None = None,
    data_root: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    store: RunStore | None = None,
) -> tuple[Run, dict[str, float]]:
    """Run the registered ``defense`` against ``artefact`` (a backdoor run id or artefact
    folder) and store a ``defend`` run; returns ``(run, metrics)``. See the module."""
    card = DEFENSES.get(defense)  # unknown names fail here, before anything is stored
    defense = card.name
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
    options: dict[str, Any] = {}
    settings = None
    if epochs is not None and card.meta.get("budget") == "options":
        options = {"epochs": epochs}
    elif epochs is not None:  # the training budget of the models the defense trains
        settings = TrainSettings(epochs=epochs, lr=0.05, batch_size=64, seed=seed)
    config = {"artefact": str(folder), "defense": defense, "epochs": epochs, "seed": seed}
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
            from trustlab.attacks.evasion.grid import save_rows

            # row 1: each class's mask; row 2: mask x pattern (what NC pastes)
            m = report.masks[:, None]
            save_rows(run.artifact_path("triggers.png"), [m, m * report.patterns])
            run.add_artifact("triggers.png")
        run.finish(out)
    return run, out
