"""Throughput of trustlab's Trainer against a bare PyTorch loop on the same model and data.

Both loops run the same model architecture from the same initial weights, the same optimizer
(SGD, momentum 0.9, weight decay 5e-4), batch size and data; the bare loop is the minimal
``for x, y in batches: zero_grad; loss = ce(model(x), y); backward; step``. They alternate for
``--repeats`` rounds of ``--epochs`` epochs each (timing includes each side's setup: building
the optimizer, and for the trainer validating the data) and the median images/s of each is
reported, so that background load hits both alike. Prints one JSON object; ``ratio`` is
trainer / bare (the foundation's bar: >= 0.95).

    python benchmarks/train_loop.py --model resnet20 --dataset shapes10 --n 2048
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from trustlab.data import load_dataset
from trustlab.models import Normalized, create_model
from trustlab.train import Trainer
from trustlab.utils.device import resolve_device


def build(name: str, data, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    shape = data.input_shape
    model = create_model(name, data.num_classes, shape[0], shape[-1])
    return Normalized(model, data.mean, data.std).to(device)


def bare_loop(model, data, batch_size: int, device: torch.device, epochs: int) -> float:
    sync(device)
    start = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    for epoch in range(epochs):  # plain PyTorch: no trustlab code inside the loop
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(data), batch_size):
            idx = order[i : i + batch_size]
            x, y = data.x[idx].to(device), data.y[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    sync(device)
    return epochs * len(data) / (time.perf_counter() - start)


def trainer_loop(model, data, batch_size: int, device: torch.device, epochs: int) -> float:
    sync(device)
    start = time.perf_counter()
    trainer = Trainer(
        model,
        epochs=epochs,
        batch_size=batch_size,
        lr=0.01,
        schedule="constant",
        device=device,
        progress=False,
    )
    trainer.fit(data)
    sync(device)
    return epochs * len(data) / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="shapes10")
    ap.add_argument("--n", type=int, default=2048, help="training images per epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, "train")
    data = data.subset(torch.arange(min(args.n, len(data))))
    if device.type == "cuda":  # keep the data resident, as the trainer's batches would be
        data.x, data.y = data.x.to(device), data.y.to(device)
    model_bare, model_trainer = build(args.model, data, device), build(args.model, data, device)
    warm = data.subset(torch.arange(args.batch_size))
    bare_loop(model_bare, warm, args.batch_size, device, 1)
    trainer_loop(model_trainer, warm, args.batch_size, device, 1)
    bare, ours = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(model_bare, data, args.batch_size, device, args.epochs))
        ours.append(trainer_loop(model_trainer, data, args.batch_size, device, args.epochs))
    b, t = statistics.median(bare), statistics.median(ours)
    print(
        json.dumps(
            {
                "benchmark": "train_loop",
                "model": args.model,
                "dataset": args.dataset,
                "n": len(data),
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": platform.machine(),
                "trainer_images_per_s": round(t, 2),
                "bare_images_per_s": round(b, 2),
                "ratio": round(t / b, 4),
                "trainer_runs": [round(v, 2) for v in ours],
                "bare_runs": [round(v, 2) for v in bare],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
