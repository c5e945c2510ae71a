"""Beyond the Gaussian VAE on one budget: two stochastic layers, the VampPrior and an IAF guide on MNIST.

Each entry is trained for the same ``--epochs`` on the 60,000 MNIST training images (Adam, one
seed, the same minibatch order) and scored by the importance-sampled test log-likelihood with
``--num-particles`` (k = 5000 as in the papers) on the first ``--test-size`` test images, with the
test ELBO and the active units per latent site:

- ``vae``: 784-200-200-50 tanh, ``svi`` (Burda et al.'s one-layer VAE);
- ``hvae`` and ``hvae_iwae5``: Burda et al.'s two-layer architecture, ``svi`` (Trace_ELBO) and ``iwae`` K = 5;
- ``vamp_vae``: the VampPrior (K = 500 pseudo-inputs, D_z = 40, 300-300 gated units as in [2]) on static MNIST,
  with the KL warmed up over the first 10 epochs as [2] does (over 100); with tanh layers it collapsed;
- ``vae_static``: the same VAE on static MNIST, its reference; ``vae_static_gated``: the standard-prior VAE
  with the VampPrior entry's network (D_z = 40, 300-300 gated units), the paper's own baseline;
- ``vae_iaf4``: the VAE with a 4-layer IAF guide;
- ``vlae``: the VAE with a 2-layer autoregressive-flow prior (Chen et al.), D_z = 50.

Each row also gives the KL term of the test ELBO (nats per image), the information the code pays.

Published figures beside them (test NLL, nats, k = 5000): Burda et al. Table 1 (dynamic MNIST,
3,280 passes): VAE 1 layer 86.76, VAE 2 layers 85.33, IWAE-5 2 layers 83.89; Tomczak & Welling
(static MNIST): standard prior 88.56, VampPrior 85.57. This budget is a few epochs, not thousands.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.priors_mnist [--epochs 10] [--test-size 1000]``.
The last line printed is one JSON object with the figures.

References:
    1. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
    2. VAE with a VampPrior, Tomczak & Welling, arXiv:1705.07120.
    3. Improved Variational Inference with Inverse Autoregressive Flow, Kingma et al., arXiv:1606.04934.
    4. Variational Lossy Autoencoder, Chen et al., arXiv:1611.02731.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch

from aezoo import data
from aezoo.diagnostics import active_units, elbo_decomposition, importance_estimate
from aezoo.inference import ENGINES
from aezoo.models import MODELS
from benchmarks.common import add_device, device_name

ENTRIES = {  # label -> (model, config fields, engine, engine fields, binarization)
    "vae": ("vae", {}, "svi", {}, "dynamic"),
    "hvae": ("hvae", {}, "svi", {"analytic_kl": False}, "dynamic"),
    "hvae_iwae5": ("hvae", {}, "iwae", {"num_particles": 5}, "dynamic"),
    "vae_static": ("vae", {}, "svi", {}, "static"),
    "vae_static_gated": ("vae", {"z_dim": 40, "hidden_dims": (300, 300), "activation": "gated"}, "svi", {}, "static"),
    "vamp_vae": ("vamp_vae", {}, "svi", {"kl_warmup_epochs": 10}, "static"),  # [2] warms the KL up (100 epochs)
    "vae_iaf4": ("vae", {"flow_layers": 4}, "svi", {}, "dynamic"),
    "vlae": ("vlae", {"z_dim": 50}, "svi", {}, "dynamic"),
}
PAPER = {"vae": 86.76, "hvae": 85.33, "hvae_iwae5": 83.89, "vae_static": 88.56, "vae_static_gated": 88.56,
         "vamp_vae": 85.57}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", default=",".join(ENTRIES))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--num-particles", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    pyro.settings.set(module_local_params=True)

    rows = {}
    for label in args.entries.split(","):
        model, fields, engine, engine_fields, binarization = ENTRIES[label]
        ds = data.load("mnist", binarization, args.train_size, args.test_size)
        module = MODELS[model]
        pyro.set_rng_seed(args.seed)
        ae = module.build(module.Config(**fields)).to(args.device)
        test = ds.test.to(args.device)
        fit = ENGINES[engine](**engine_fields, epochs=args.epochs, lr=args.lr, seed=args.seed,
                              progress=False).fit(ae, ds.train, transform=ds.transform)
        start = time.perf_counter()
        est = importance_estimate(ae, test, num_particles=args.num_particles)
        units = active_units(ae, test)
        kl = elbo_decomposition(ae, test, num_particles=10).kl.mean().item()
        n = len(ds.test)
        rows[label] = {"test_nll": -est.log_likelihood.mean().item(),
                       "test_nll_se": (est.log_likelihood.std() / n**0.5).item(),
                       "test_neg_elbo": -est.elbo.mean().item(), "test_kl": kl,
                       "active_units": {k: u.count for k, u in units.items()},
                       "paper_nll": PAPER.get(label), "train_seconds": fit.stats["train_seconds"].item(),
                       "eval_seconds": time.perf_counter() - start, "binarization": binarization}
        print(f"{label:11s} NLL {rows[label]['test_nll']:7.2f} +- {rows[label]['test_nll_se']:.2f}  "
              f"-ELBO {rows[label]['test_neg_elbo']:7.2f}  KL {kl:6.2f}  AU {rows[label]['active_units']}  "
              f"paper {PAPER.get(label, '-')}", flush=True)
    result = {"benchmark": "priors_mnist", "epochs": args.epochs, "num_particles": args.num_particles,
              "num_test": args.test_size, "results": rows, "device": device_name(args.device),
              "threads": torch.get_num_threads(),
              "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
