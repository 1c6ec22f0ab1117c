"""Neural Cleanse scan time: all classes of a model, against the bare cost of its passes.

Scans every class of ``--model`` (default resnet20, random weights or ``--checkpoint``) on
``--samples`` clean test images of ``--dataset`` (default shapes10) with a budgeted scan
(``NeuralCleanse(epochs=5, reset_cost_to_zero=False)``: 5 epochs of batch 32 over 1000 images,
all classes in one pass per step; the default schedule stops each class on convergence, which
a random-weight model may never reach), then times a bare PyTorch loop of the same number of
forward + input-gradient backward passes on batches of the same shape. Prints one JSON object:
the scan's seconds, the bare seconds and ``ratio`` = bare / scan (1.0 = no overhead over the
passes themselves). The bar: a 10-class ResNet-20 scan on shapes10 in under 3 minutes on 2 CPU
cores.

    python benchmarks/neural_cleanse.py
    python benchmarks/neural_cleanse.py --checkpoint runs/run-000003/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from trustlab.data import load_dataset
from trustlab.defenses.backdoor import NeuralCleanse
from trustlab.models.spec import ModelSpec
from trustlab.train.checkpoint import load_model
from trustlab.utils.device import resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="shapes10")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=5, help="the scan's epochs (default 5)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    test = load_dataset(args.dataset, "test")
    torch.manual_seed(0)
    if args.checkpoint:
        model = load_model(args.checkpoint, device=dev)
    else:
        model = ModelSpec.for_data(args.model, test).build().to(dev)
    model.eval()
    nc = NeuralCleanse(samples=args.samples, epochs=args.epochs, reset_cost_to_zero=False)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    start = time.perf_counter()
    report = nc.inspect(model, test)
    sync()
    scan = time.perf_counter() - start

    k = len(report.norms)
    n = min(args.samples, len(test))
    steps = report.epochs * math.ceil(n / nc.batch_size)
    x = test.x[: nc.batch_size].to(dev).repeat(k, 1, 1, 1).requires_grad_(True)
    for p in model.parameters():
        p.requires_grad_(False)
    start = time.perf_counter()
    for _ in range(steps):
        model(x).sum().backward()
    sync()
    bare = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "neural_cleanse",
                "model": args.model if not args.checkpoint else args.checkpoint,
                "dataset": args.dataset,
                "classes": k,
                "samples": n,
                "epochs": report.epochs,
                "steps": steps,
                "device": str(dev),
                "threads": torch.get_num_threads(),
                "scan_s": round(scan, 1),
                "bare_s": round(bare, 1),
                "ratio": round(bare / scan, 3),
                "flagged": report.flagged,
            }
        )
    )


if __name__ == "__main__":
    main()
