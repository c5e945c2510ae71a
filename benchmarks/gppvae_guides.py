"""GPPVAE on rotated MNIST: the SVGP-VAE guide against the mean-field q(u) guide after the same budget.

For each guide and seed: fit ``gppvae`` (learned kernel and inducing inputs) with ``svi`` on the first
``--train`` rotated 3s, then report the test bound: the ELBO of the whole test set as one batch
(``num_data = N_test``, so ``u``'s KL is paid once), ``--particles`` particles, in nats per image
(higher is better), and the learned lengthscale. The svgp guide builds q(u) from the test images'
pseudo-observations; the mean-field guide uses its trained q(u): both bound log p(X_test | c_test) / N_test.

    OMP_NUM_THREADS=1 python -m benchmarks.gppvae_guides --train 512 --test 256 --epochs 20 --seeds 0 1

References: Scalable Gaussian Process Variational Autoencoders, Jazbec et al., arXiv:2010.13472;
Gaussian Process Prior Variational Autoencoders, Casale et al., arXiv:1810.11738.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch
from pyro.infer import Trace_ELBO

from aezoo import data
from aezoo.inference import ENGINES
from aezoo.models import gppvae
from benchmarks.common import add_device, device_name

VARIANTS = {"svgp": dict(guide="svgp"), "svgp_batch_scale": dict(guide="svgp", svgp_batch_scale=True),
            "mean_field": dict(guide="mean_field"), "svgp_fixed_kernel": dict(guide="svgp", learn_kernel=False),
            "mean_field_fixed_kernel": dict(guide="mean_field", learn_kernel=False)}


def run(variant: str, seed: int, ds, epochs: int, batch_size: int, particles: int, device: str = "cpu") -> dict:
    cfg = gppvae.Config(z_dim=4, hidden_dims=(64,), num_inducing=8, **VARIANTS[variant])
    torch.manual_seed(seed)
    ae = gppvae.build(cfg).to(device)
    start = time.perf_counter()
    result = ENGINES["svi"](epochs=epochs, batch_size=batch_size, lr=1e-2, seed=seed, progress=False).fit(
        ae, ds.train, ds.train_covariates["c"])
    seconds = time.perf_counter() - start
    x, c = ds.test.to(device), ds.test_covariates["c"].to(device)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        loss = Trace_ELBO(num_particles=particles, vectorize_particles=False).loss(ae.model, ae.guide, x, c,
                                                                                   num_data=len(x))
    return {"variant": variant, "seed": seed, "train_loss": float(result.losses[-1]),
            "test_bound": -loss / len(x), "lengthscale": float(ae.model.prior.kernel.lengthscale.detach()),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--test", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    add_device(parser)
    args = parser.parse_args()
    pyro.settings.set(module_local_params=True)
    ds = data.load("rotated_mnist", "static", train_size=args.train, test_size=args.test)
    print(f"device: {device_name(args.device)}")
    print(f"{'variant':18s} {'seed':>4s} {'train loss':>10s} {'test bound':>10s} {'lengthscale':>11s} {'s':>6s}")
    for variant in args.variants:
        for seed in args.seeds:
            r = run(variant, seed, ds, args.epochs, args.batch_size, args.particles, args.device)
            print(f"{r['variant']:18s} {r['seed']:4d} {r['train_loss']:10.2f} {r['test_bound']:10.2f} "
                  f"{r['lengthscale']:11.3f} {r['seconds']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
