"""A short VSSM fit on ``mnist_rows`` (MNIST as 28 pixel rows): the test bound in nats per image, and its budget.

What it measures: a ``vssm`` (:mod:`aezoo.models.vssm`, sizes from the flags) fitted with
``ENGINES["svi"]`` (the ELBO, analytic KL, Adam) on the first ``--train-size`` training images of
``mnist_rows`` under dynamic binarization, for ``--epochs`` epochs; then, on the first
``--test-size`` test images (binarized once, as :func:`aezoo.data.load` does), the ELBO and the
importance-sampled estimate of log p(x) with ``--particles`` samples from the guide
(:func:`aezoo.diagnostics.likelihood.importance_estimate`), each averaged over images with its
standard error. A short CPU budget, so far from the paper's full-data figures [1].

Run from the repository root (about 2 minutes on one core)::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.vssm_mnist_rows
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.vssm_mnist_rows --quick   # seconds

The last line printed is one JSON object with the figures.

References:
    1. Parallelizing Autoregressive Generation with Variational State Space Models, Lambrechts,
       Claes, Geurts & Ernst, arXiv:2407.08415.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch

from aezoo.data import load
from aezoo.diagnostics.likelihood import importance_estimate
from aezoo.inference import ENGINES
from aezoo.models import vssm
from benchmarks.common import add_device, device_name


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--z-dim", type=int, default=8)
    p.add_argument("--hidden-dim", type=int, default=64)
    p.add_argument("--state-dim", type=int, default=64)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--particles", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="300 images, 1 epoch, 10 particles")
    add_device(p)
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.test_size, args.epochs, args.particles = 300, 100, 1, 10
    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    torch.manual_seed(args.seed)
    data = load("mnist_rows", "dynamic", args.train_size, args.test_size)
    cfg = vssm.Config(x_dim=28, z_dim=args.z_dim, hidden_dim=args.hidden_dim, state_dim=args.state_dim,
                      num_layers=args.num_layers)
    ae = vssm.build(cfg).to(args.device)
    engine = ENGINES["svi"](epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    start = time.perf_counter()
    fit = engine.fit(ae, data.train, transform=data.transform)
    train_seconds = time.perf_counter() - start
    ae.eval()
    torch.manual_seed(args.seed + 1)
    est = importance_estimate(ae, data.test, num_particles=args.particles)
    n = len(data.test)
    result = {
        "benchmark": "vssm_mnist_rows", "train_size": args.train_size, "test_size": n, "epochs": args.epochs,
        "config": {k: getattr(cfg, k) for k in ("z_dim", "hidden_dim", "state_dim", "num_layers")},
        "parameters": sum(q.numel() for q in ae.parameters()), "train_seconds": train_seconds,
        "train_loss_per_epoch": [round(v, 2) for v in fit.losses.tolist()],
        "test_elbo": est.elbo.mean().item(), "test_elbo_se": (est.elbo.std() / n**0.5).item(),
        "test_log_px": est.log_likelihood.mean().item(), "test_log_px_se": (est.log_likelihood.std() / n**0.5).item(),
        "particles": args.particles, "seed": args.seed, "device": device_name(args.device),
    }
    print(f"vssm on mnist_rows: {args.train_size} train images, {args.epochs} epochs in {train_seconds:.0f} s; "
          f"test ({n} images): ELBO {result['test_elbo']:.1f} +- {result['test_elbo_se']:.1f} nats/image, "
          f"log p(x) ~ {result['test_log_px']:.1f} (K={args.particles})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
