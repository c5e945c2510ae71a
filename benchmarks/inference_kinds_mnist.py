"""Other ways to infer the code on one budget: VAE, GON, Unscented AE, Coupled VAE, WAE-MMD, SWAE, InfoVAE, WAE-GAN.

Every entry trains with its default objective (``DEFAULT_ENGINE``) on the first ``--train-size``
dynamically binarized MNIST training images for ``--epochs`` (Adam 1e-3 unless the objective says
otherwise, batch 100), with D_z = ``--z-dim``, once per seed in ``--seeds``, and is scored on the first
``--test-size`` test images:

- ``reconstruction``: log p(x | z) at a draw of the guide (its point for deterministic guides), nats;
- ``log_likelihood``: the importance-sampled log p(x) (``--num-particles``) where the guide is a density
  (VAE, variational GON); none for point-mass guides;
- ``aggregate_mmd``: the unbiased MMD^2 (IMQ kernel, scale 1) between the guide's codes of the test
  images and as many prior draws N(0, I): the prior holes of the WAE papers (0 when q(z) = p(z));
- ``far_from_data``: the share of decoded prior draws (decoder means at z ~ N(0, I)) whose nearest test
  image is farther than the 95 % quantile of the test images' distances to their nearest reconstruction
  (the decoded prior holes);
- ``confidence``: the mean top-class probability that a digit classifier trained once on MNIST
  (:func:`aezoo.diagnostics.multimodal.digit_classifier`) gives those decoded prior draws, a sample-quality
  proxy that needs no download (FID needs an Inception network);
- ``loss_sd``: the standard deviation of the objective's estimate over 20 evaluations on one fixed batch of
  100 test images, the training-loss variance the Unscented AE paper compares;
- ``train_seconds``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.inference_kinds_mnist [--epochs 5] [--seeds 0,1]``.
The last line printed is one JSON object with the figures (mean and sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch
from pyro import poutine

from aezoo import data
from aezoo.diagnostics import importance_estimate, multimodal
from aezoo.inference import ENGINES
from aezoo.inference.penalties import mmd
from aezoo.models import MODELS
from aezoo.traces import check_weights_exist
from benchmarks.common import add_device, device_name

ENTRIES = ("vae", "gon", "unscented_ae", "coupled_vae", "wae", "swae", "info_vae", "wae_gan")
HOLE_QUANTILE = 0.95  # a prior sample is "far from the data" beyond this quantile of the test images' own distances


@torch.no_grad()
def scores(ae, engine, x: torch.Tensor, num_particles: int, judge) -> dict:
    """Reconstruction, IS log p(x) (or None), the aggregate-posterior MMD^2, the decoded prior holes, the
    classifier's confidence on prior samples and the loss estimate's spread on ``x`` (module docstring)."""
    ae.eval()
    guide_tr = poutine.trace(ae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(x)
    rec = model_tr.nodes["x"]["fn"].log_prob(x).mean().item()
    codes = guide_tr.nodes["z"]["value"].reshape(len(x), -1)
    prior = torch.randn_like(codes)
    fakes = poutine.trace(poutine.condition(poutine.uncondition(ae.model), {"z": prior})).get_trace(x)
    fakes = fakes.nodes["x"]["fn"].mean
    own = (model_tr.nodes["x"]["fn"].mean - x).norm(dim=-1).quantile(HOLE_QUANTILE)
    holes = (torch.cdist(fakes, x).min(-1).values > own).double().mean().item()
    confidence = judge(fakes).softmax(-1).max(-1).values.mean().item()
    batch = x[:100]
    with torch.enable_grad():
        spread = torch.stack([engine.loss(ae, batch, num_data=len(batch)).detach() for _ in range(20)]).std().item()
    try:
        check_weights_exist(ae, "importance sampling", x[:2])
        ll = importance_estimate(ae, x, num_particles=num_particles).log_likelihood.mean().item()
    except ValueError:  # a point-mass guide: no density over z
        ll = None
    return {"reconstruction": rec, "log_likelihood": ll, "aggregate_mmd": mmd(codes, prior).item(),
            "far_from_data": holes, "confidence": confidence, "loss_sd": spread}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", default=",".join(ENTRIES))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--z-dim", type=int, default=16)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--num-particles", type=int, default=500)
    add_device(p)
    args = p.parse_args(argv)
    pyro.settings.set(module_local_params=True)
    ds = data.load("mnist", "dynamic", args.train_size, args.test_size)
    seeds = [int(s) for s in args.seeds.split(",")]
    judge = multimodal.digit_classifier().to(args.device)
    test = ds.test.to(args.device)
    rows = {}
    for name in args.entries.split(","):
        module = MODELS[name]
        engine, fields = getattr(module, "DEFAULT_ENGINE", ("svi", {}))
        runs = []
        for seed in seeds:
            pyro.set_rng_seed(seed)
            ae = module.build(module.Config(z_dim=args.z_dim)).to(args.device)
            settings = {"lr": 1e-3, "batch_size": 100, **fields, "epochs": args.epochs, "seed": seed, "progress": False}
            trainer = ENGINES[engine](**settings)
            fit = trainer.fit(ae, ds.train, transform=ds.transform)
            runs.append({**scores(ae, trainer, test, args.num_particles, judge),
                         "train_seconds": fit.stats["train_seconds"].item()})
        rows[name] = {}
        for key in runs[0]:
            values = [r[key] for r in runs if r[key] is not None]
            rows[name][key] = None if not values else {
                "mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
        rows[name]["seeds"] = runs
        r = rows[name]
        ll = "    -  " if r["log_likelihood"] is None else f"{r['log_likelihood']['mean']:7.2f}"
        print(f"{name:13s} reconstruction {r['reconstruction']['mean']:8.2f} ± {r['reconstruction']['sd']:.2f}  "
              f"log p(x) {ll}  aggregate MMD^2 {r['aggregate_mmd']['mean']:.4f} ± {r['aggregate_mmd']['sd']:.4f}  "
              f"far {r['far_from_data']['mean']:.3f}  confidence {r['confidence']['mean']:.3f}  "
              f"loss sd {r['loss_sd']['mean']:.2f}  ({r['train_seconds']['mean']:.0f} s per fit)", flush=True)
    result = {"benchmark": "inference_kinds_mnist", "epochs": args.epochs, "seeds": seeds, "z_dim": args.z_dim,
              "num_train": args.train_size, "num_test": args.test_size, "num_particles": args.num_particles,
              "results": rows, "device": device_name(args.device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
