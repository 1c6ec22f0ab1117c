"""GAN inpainting training throughput: trustlab's loop against a bare PyTorch loop, and what the
iLID and pLID regularisers cost.

Three ways train the same networks (:class:`~trustlab.models.inpainting.InpaintGenerator`,
:class:`~trustlab.models.inpainting.InpaintDiscriminator`) for one epoch on the same ``--images``
``photo-patches`` images, batch 64, centred holes:

- ``bare``: a plain loop written here: one discriminator step (BCE on originals and
  restorations) and one generator step (L1 + 0.001 adversarial, the discriminator's parameters
  frozen as in trustlab) per batch, masks made once;
- ``trustlab``: :func:`~trustlab.generative.inpainting.train_inpainter` with both regularisers
  off (seeded masks per step, per-epoch bookkeeping, no checkpoint);
- ``trustlab+lid``: the same with iLID and pLID on (0.001 each; the fixed ``cnn-small``
  extractor on the restored and the original images every step).

Rounds alternate (median of ``--repeats``), so background load hits all three alike. Prints one
JSON object: images per second of each, ``ratio`` = trustlab / bare (the loop's overhead) and
``lid_cost`` = trustlab / trustlab+lid (how much slower the regularisers make a step).

    python benchmarks/inpainting.py --quick
    python benchmarks/inpainting.py --device cuda --images 4096 --width 32
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
from trustlab.generative.inpainting import composite, corrupt, train_inpainter
from trustlab.generative.masks import centre_mask
from trustlab.models.inpainting import InpaintDiscriminator, InpaintGenerator
from trustlab.utils.device import resolve_device


def bare(x: torch.Tensor, width: int, dev: torch.device, batch: int) -> float:
    """Seconds for one epoch of the plain loop."""
    torch.manual_seed(0)
    c, h, w = x.shape[1:]
    gen, disc = InpaintGenerator(c, width).to(dev), InpaintDiscriminator(c, (h, w), width).to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    m = centre_mask(batch, (h, w)).to(dev)
    ones, zeros = torch.ones(batch, device=dev), torch.zeros(batch, device=dev)
    bce = F.binary_cross_entropy_with_logits
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(0, len(x) - batch + 1, batch):
        xb = x[i : i + batch].to(dev)
        out = gen(corrupt(xb, m))
        fake = composite(xb, out, m)
        d_loss = bce(disc(xb, m), ones) + bce(disc(fake.detach(), m), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        disc.requires_grad_(False)  # as trustlab: the generator's step writes no D gradients
        loss = (out - xb).abs().mean() + 1e-3 * bce(disc(fake, m), ones)
        disc.requires_grad_(True)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
    _sync(dev)
    return time.perf_counter() - t0


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def trustlab(data, width: int, dev: torch.device, batch: int, lam: float) -> float:
    """Seconds of training (the history's epoch time: the extractor set-up is not counted)."""
    s = {"epochs": 1, "batch_size": batch, "width": width, "mask": "centre",
         "lambda_ilid": lam, "lambda_plid": lam, "extractor_epochs": 0}  # fmt: skip
    inp = train_inpainter(data, s, seed=0, device=dev, progress=False)
    return inp.history[0]["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="512 images, 2 repeats")
    a = p.parse_args()
    if a.quick:
        a.images, a.repeats = 512, 2
    torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    train = load_dataset("photo-patches", "train")
    data = train.subset(torch.arange(0, len(train), max(1, len(train) // a.images))[: a.images])
    n = (len(data) // a.batch) * a.batch
    times: dict[str, list[float]] = {"bare": [], "trustlab": [], "trustlab+lid": []}
    for _ in range(a.repeats):
        times["bare"].append(bare(data.x, a.width, dev, a.batch))
        times["trustlab"].append(trustlab(data, a.width, dev, a.batch, 0.0))
        times["trustlab+lid"].append(trustlab(data, a.width, dev, a.batch, 1e-3))
    ips = {k: n / statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "inpainting",
                "device": str(dev),
                "threads": a.threads,
                "images": n,
                "width": a.width,
                "batch": a.batch,
                "repeats": a.repeats,
                "images_per_s": {k: round(v, 1) for k, v in ips.items()},
                "ratio": round(ips["trustlab"] / ips["bare"], 3),
                "lid_cost": round(ips["trustlab"] / ips["trustlab+lid"], 3),
                "torch": torch.__version__,
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
