"""Reproduce Burda et al. (2015) Table 1, one stochastic layer: VAE (k=1) and IWAE (k=5) on MNIST.

Both models use the paper's 784-200-200-50 tanh architecture on dynamically binarized MNIST
(60,000 training images) and are scored by the importance-sampled test log-likelihood with
k = 5000 on the 10,000 test images. The paper trains for 3,280 passes with a decaying learning
rate; this benchmark trains for ``--epochs`` passes at a constant Adam learning rate, so its
numbers are upper bounds on what the architecture reaches, stated beside the epochs used.

Run: ``python -m benchmarks.reproduce_iwae [--epochs 20] [--out runs/reproduce_iwae]``.
The last line printed is one JSON object with the figures.

Reference: Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import pyro
import torch

from aezoo import runs

PAPER_NLL = {"vae": 86.76, "iwae": 85.54}  # Table 1, MNIST, k=1 (VAE) and k=5 (IWAE), nats


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-particles", type=int, default=5000, help="k for the test log-likelihood")
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="runs/reproduce_iwae")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    pyro.settings.set(module_local_params=True)

    rows = {}
    for label, engine, settings in (("vae", "svi", {}), ("iwae", "iwae", {"engine.num_particles": "5"})):
        out = runs.fit(
            "vae", "mnist", engine, out=Path(args.out) / label, seed=args.seed, device=args.device,
            settings=settings, binarize="dynamic", train_size=args.train_size, test_size=args.test_size,
            num_particles=args.num_particles, epochs=args.epochs, lr=args.lr, progress=False,
        )
        rows[label] = json.loads((out / "metrics.json").read_text())

    print(f"{'model':6s} {'epochs':>6s} {'test NLL (k=%d)' % args.num_particles:>18s} {'paper':>7s} {'train s':>8s}")
    for label, m in rows.items():
        print(f"{label:6s} {m['epochs']:6d} {-m['test_log_likelihood']:12.2f} +- {m['test_log_likelihood_se']:.2f}"
              f" {PAPER_NLL[label]:7.2f} {m['train_seconds']:8.0f}")
    result = {
        "benchmark": "reproduce_iwae",
        "epochs": args.epochs,
        "num_particles": args.num_particles,
        "num_test": rows["vae"]["num_test"],
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        **{f"{k}_test_nll": -m["test_log_likelihood"] for k, m in rows.items()},
        **{f"{k}_test_nll_se": m["test_log_likelihood_se"] for k, m in rows.items()},
        **{f"{k}_train_seconds": m["train_seconds"] for k, m in rows.items()},
        **{f"paper_{k}_test_nll": v for k, v in PAPER_NLL.items()},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
