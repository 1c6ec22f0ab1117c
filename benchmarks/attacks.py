"""PGD-10 throughput: trustlab vs torchattacks vs ART, and vs the bare cost of 10 forward+backward.

All run PGD-10 (L-inf, eps 8/255, alpha 2/255) on the same model and batch, in alternating rounds
(median images/s). The "bare" reference is 10 forward+backward passes w.r.t. the input on the
same batch: what any PGD-10 must at least pay. Peers are measured when installed (`make bench`
installs them). Prints one JSON object with the ratios (targets: >= 1.0x torchattacks, >= 3x ART,
>= 0.9 of the bare cost).

    python benchmarks/attacks.py --model resnet20 --dataset shapes10 --batch 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from trustlab.attacks.evasion import PGD
from trustlab.data import load_dataset
from trustlab.models import Normalized, create_model
from trustlab.utils.device import resolve_device

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


def timed(fn: Callable[[], object], n: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="shapes10")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    data = load_dataset(args.dataset, "test")
    torch.manual_seed(0)
    shape = data.input_shape
    model = (
        Normalized(
            create_model(args.model, data.num_classes, shape[0], shape[-1]), data.mean, data.std
        )
        .to(dev)
        .eval()
    )
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = data.x[: args.batch].to(dev), data.y[: args.batch].to(dev)

    def bare() -> None:
        xa = x.clone()
        for _ in range(STEPS):
            xa.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
            xa = xa.detach() + ALPHA * g.sign()

    runners: dict[str, Callable[[], object]] = {
        "bare": bare,
        "trustlab": lambda: PGD(model, EPS, ALPHA, STEPS)(x, y),
    }
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        runners["torchattacks"] = lambda: ta(x, y)
    except ImportError:
        pass
    try:
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=shape,
            nb_classes=data.num_classes,
            clip_values=(0.0, 1.0),
            device_type="gpu" if dev.type == "cuda" else "cpu",
        )
        art_pgd = ProjectedGradientDescentPyTorch(
            clf,
            norm="inf",
            eps=EPS,
            eps_step=ALPHA,
            max_iter=STEPS,
            batch_size=args.batch,
            verbose=False,
        )
        xn, yn = x.cpu().numpy(), y.cpu().numpy()
        runners["art"] = lambda: art_pgd.generate(xn, y=yn)
    except ImportError:
        pass
    for fn in runners.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.repeats):
        for k, fn in runners.items():
            rates[k].append(timed(fn, len(x), dev))
    med = {k: statistics.median(v) for k, v in rates.items()}
    out = {
        "benchmark": "attacks",
        "attack": "PGD-10 linf 8/255",
        "model": args.model,
        "dataset": args.dataset,
        "batch": len(x),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "images_per_s": {k: round(v, 2) for k, v in med.items()},
        "ratio_to_bare": round(med["trustlab"] / med["bare"], 4),
    }
    for peer in ("torchattacks", "art"):
        if peer in med:
            out[f"ratio_to_{peer}"] = round(med["trustlab"] / med[peer], 4)
        else:
            out[f"ratio_to_{peer}"] = None
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
