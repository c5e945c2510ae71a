"""VQ-VAE on MNIST: reconstruction, codebook usage and the learned prior's bound, beside the VAE's log p(x).

``vq_vae`` (7 x 7 grid of codes, ``--num-codes`` entries of ``--code-dim``, the ``vq`` term with beta =
0.25, or ``--ema`` codebook updates) is trained with ``svi`` for ``--epochs`` on dynamically binarized
MNIST; then its PixelCNN prior is fitted to the training codes for ``--prior-epochs``
(:func:`aezoo.inference.code_prior.fit_prior`). On the first ``--test-size`` test images it reports
the reconstruction (Bernoulli NLL ``-log p(x | k(x))``, nats per image, and the per-pixel squared
error of the decoder's mean), the codebook perplexity and dead codes, and the bound ``log p(x | k(x)) +
log p(k(x))`` with the uniform prior and with the learned one, in nats and bits/dim (``-bound /
(784 ln 2)``). Beside it the continuous ``vae`` (784-200-200-50 tanh, ``svi``, ``--vae-epochs``) with its
importance-sampled log p(x) (``--num-particles``) on the same test images.

[1] reports bits/dim on CIFAR-10 and ImageNet, not MNIST; the VAE's figure for comparison is Burda et
al.'s 86.76 nats (dynamic MNIST, 3,280 passes). This budget is a few epochs.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.vq_mnist [--epochs 5] [--train-size 60000]``.
The last line printed is one JSON object with the figures.

References:
    1. Neural Discrete Representation Learning, van den Oord, Vinyals & Kavukcuoglu, arXiv:1711.00937.
    2. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch

from aezoo import data
from aezoo.diagnostics import importance_estimate
from aezoo.inference import ENGINES
from aezoo.inference.code_prior import fit_prior
from aezoo.models import MODELS, vq_vae
from benchmarks.common import add_device, device_name


def bound_figures(ae, x) -> dict[str, float]:
    b = vq_vae.bound(ae, x)
    return {"nats": -b.mean().item(), "nats_se": (b.std() / len(b) ** 0.5).item(),
            "bits_per_dim": -b.mean().item() / (x.shape[1] * math.log(2))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--prior-epochs", type=int, default=10)
    p.add_argument("--vae-epochs", type=int, default=5)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--num-codes", type=int, default=128)
    p.add_argument("--ema", action="store_true")
    p.add_argument("--restart-threshold", type=float, default=0.0)
    p.add_argument("--prior-channels", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--num-particles", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    pyro.settings.set(module_local_params=True)
    ds = data.load("mnist", "dynamic", args.train_size, args.test_size)

    pyro.set_rng_seed(args.seed)
    cfg = vq_vae.Config(code_dim=args.code_dim, num_codes=args.num_codes, ema=args.ema,
                        restart_threshold=args.restart_threshold, prior_channels=args.prior_channels)
    ae = vq_vae.build(cfg).to(args.device)
    train, test = ds.train.to(args.device), ds.test.to(args.device)
    _, fields = vq_vae.DEFAULT_ENGINE
    fit = ENGINES["svi"](**fields, epochs=args.epochs, lr=args.lr, seed=args.seed,
                         progress=False).fit(ae, train, transform=ds.transform)
    usage = vq_vae.codebook_usage(ae, test)
    uniform = bound_figures(ae, test)
    prior_fit = fit_prior(ae, train, epochs=args.prior_epochs, lr=args.lr, seed=args.seed, transform=ds.transform)
    learned = bound_figures(ae, test)
    vq = {"config": {"code_dim": cfg.code_dim, "num_codes": cfg.num_codes, "grid": list(cfg.grid), "ema": cfg.ema,
                     "restart_threshold": cfg.restart_threshold, "prior_channels": cfg.prior_channels},
          "train_loss": fit.losses[-1].item(), "train_seconds": fit.stats["train_seconds"].item(),
          "prior_train_nll": prior_fit.losses[-1].item(), "prior_seconds": prior_fit.stats["train_seconds"].item(),
          **usage, "bound_uniform_prior": uniform, "bound_learned_prior": learned}
    print(f"vq_vae  rec NLL {usage['reconstruction_nll']:.2f}  MSE {usage['mse']:.4f}  perplexity "
          f"{usage['perplexity']:.1f}/{cfg.num_codes}  dead {usage['dead_codes']}  -bound uniform {uniform['nats']:.2f}"
          f"  learned {learned['nats']:.2f} nats ({learned['bits_per_dim']:.3f} bits/dim)", flush=True)

    pyro.set_rng_seed(args.seed)
    vae = MODELS["vae"].build(MODELS["vae"].Config()).to(args.device)
    vfit = ENGINES["svi"](epochs=args.vae_epochs, lr=args.lr, seed=args.seed, progress=False).fit(
        vae, train, transform=ds.transform)
    est = importance_estimate(vae, test, num_particles=args.num_particles)
    ll = est.log_likelihood
    vae_row = {"test_nll": -ll.mean().item(), "test_nll_se": (ll.std() / len(ll) ** 0.5).item(),
               "bits_per_dim": -ll.mean().item() / (ds.test.shape[1] * math.log(2)),
               "test_neg_elbo": -est.elbo.mean().item(), "train_seconds": vfit.stats["train_seconds"].item()}
    print(f"vae     NLL {vae_row['test_nll']:.2f} +- {vae_row['test_nll_se']:.2f} (K = {args.num_particles})  "
          f"-ELBO {vae_row['test_neg_elbo']:.2f}", flush=True)
    result = {"benchmark": "vq_mnist", "epochs": args.epochs, "prior_epochs": args.prior_epochs,
              "vae_epochs": args.vae_epochs, "train_size": len(ds.train), "num_test": len(ds.test),
              "num_particles": args.num_particles, "device": device_name(args.device), "vq_vae": vq, "vae": vae_row,
              "threads": torch.get_num_threads(),
              "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
