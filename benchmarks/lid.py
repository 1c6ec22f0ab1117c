"""LID throughput: trustlab's batched torch estimator vs a SciPy cdist + NumPy reference.

Both estimate the maximum-likelihood LID (k = 20) of every point of ``--n`` feature vectors of
dimension ``--dim`` against its clean minibatch of ``--batch`` (the ICLR 2018 protocol: minibatches
of 100, each point excluding itself). The reference is the authors' formulation: per minibatch
``scipy.spatial.distance.cdist``, a per-row sort, and ``-k / sum(log(r_i / r_k))``. The two
alternate for ``--repeats`` rounds (median points/s) and their estimates are compared. Prints one
JSON object with ``ratio`` = trustlab / reference (the issue's bar: >= 10).

    python benchmarks/lid.py --n 10000 --dim 4096
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from scipy.spatial.distance import cdist

from trustlab.metrics.lid import lid_in_batches
from trustlab.utils.device import resolve_device


def reference(feats: np.ndarray, batch: int, k: int) -> np.ndarray:
    out = []
    for s in range(0, len(feats), batch):
        b = feats[s : s + batch]
        kk = min(k, len(b) - 1)
        d = np.apply_along_axis(np.sort, 1, cdist(b, b))[:, 1 : kk + 1]
        out.append(np.apply_along_axis(lambda v, kk=kk: -kk / np.sum(np.log(v / v[-1])), 1, d))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(args.n, args.dim, generator=g)
    feats_dev = feats.to(dev)
    feats_np = feats.double().numpy()

    def ours() -> torch.Tensor:
        out = lid_in_batches(feats_dev, feats_dev, args.batch, args.k)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return out

    rates: dict[str, list[float]] = {"trustlab": [], "reference": []}
    ours()  # warm-up
    for _ in range(args.repeats):
        start = time.perf_counter()
        got = ours()
        rates["trustlab"].append(args.n / (time.perf_counter() - start))
        start = time.perf_counter()
        want = reference(feats_np, args.batch, args.k)
        rates["reference"].append(args.n / (time.perf_counter() - start))
    med = {k: statistics.median(v) for k, v in rates.items()}
    err = float(np.max(np.abs(got.double().cpu().numpy() - want) / np.abs(want)))
    print(
        json.dumps(
            {
                "benchmark": "lid",
                "n": args.n,
                "dim": args.dim,
                "batch": args.batch,
                "k": args.k,
                "device": str(dev),
                "threads": torch.get_num_threads(),
                "points_per_s": {k: round(v, 1) for k, v in med.items()},
                "ratio": round(med["trustlab"] / med["reference"], 2),
                "max_relative_difference": err,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
