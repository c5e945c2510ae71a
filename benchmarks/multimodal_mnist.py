"""Product, mixture and mixture-of-products multimodal VAEs side by side on multi-view MNIST.

``mnist_views`` (``aezoo.data.views``): an image ``x``, an inverted other image ``x2`` of the same
class and the label ``y``. Each entry is ``mvae`` with one aggregation, trained as its paper does on
one budget (``--epochs``, Adam 1e-3, batch 100, one seed, ``svi`` with 3 particles):

- ``poe``: MVAE (Wu & Goodman), product of experts with the prior expert and the sub-sampled
  objective (the ``modality_subsets`` term: unimodal and one random subset ELBO added);
- ``moe``: MMVAE (Shi et al.), mixture of experts, the stratified ELBO (each expert proposes once);
- ``mopoe``: MoPoE (Sutter et al.), mixture of the products of all subsets, the joint ELBO;
- ``vae``: a unimodal VAE of ``x`` with the same encoder and decoder sizes, the reference for the
  generative quality gap of Daunhawer et al.: log p(x) of mixture-based models falls below it.

Measured on the first ``--test-size`` test data (``aezoo.diagnostics.multimodal``): log p(x_S) for
every subset and the conditionals log p(x_t | x_S) by importance sampling (``--num-particles``),
cross-modal and joint coherence judged by a digit classifier trained once on MNIST, and the
diversity ratio of label-conditional generations (Wolff et al.'s critique of mixtures).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.multimodal_mnist [--epochs 10]``. The last
line printed is one JSON object with the figures.
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
from aezoo.diagnostics import importance_estimate, multimodal
from aezoo.inference import ENGINES
from aezoo.models import MODELS
from benchmarks.common import add_device, device_name

ENTRIES = {  # label -> (model config fields, svi fields)
    "poe": ({"aggregation": "poe"}, {"penalty": "modality_subsets"}),
    "moe": ({"aggregation": "moe"}, {}),
    "mopoe": ({"aggregation": "mopoe"}, {}),
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", default="vae," + ",".join(ENTRIES))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--num-particles", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    pyro.settings.set(module_local_params=True)
    ds = data.load("mnist_views", "dynamic", args.train_size, args.test_size)
    train, test = ds.arrays("train", ("x2", "y")), ds.arrays("test", ("x2", "y"))
    test = tuple(t.to(args.device) for t in test)
    judge = multimodal.digit_classifier().to(args.device)
    base = MODELS["mvae"].Config()
    rows = {}
    for label in args.entries.split(","):
        pyro.set_rng_seed(args.seed)
        common = {"epochs": args.epochs, "lr": 1e-3, "batch_size": 100, "seed": args.seed, "progress": False}
        start = time.perf_counter()
        if label == "vae":
            vae = MODELS["vae"]
            ae = vae.build(vae.Config(z_dim=base.z_dim, hidden_dims=base.hidden_dims, activation=base.activation))
            ae = ae.to(args.device)
            fit = ENGINES["svi"](**common).fit(ae, train[0], transform=ds.transform)
            ll = importance_estimate(ae, test[0], num_particles=args.num_particles).log_likelihood
            rows[label] = {"log_likelihood": {"x": ll.mean().item()}}
        else:
            fields, engine = ENTRIES[label]
            ae = MODELS["mvae"].build(MODELS["mvae"].Config(**fields)).to(args.device)
            fit = ENGINES["svi"](num_particles=3, **engine, **common).fit(ae, *train, transform=ds.transform)
            rows[label] = multimodal.evaluate(ae, *test, num_particles=args.num_particles, classifier=judge).to_dict()
        rows[label].update(train_seconds=fit.stats["train_seconds"].item(), final_loss=fit.losses[-1].item(),
                           seconds=time.perf_counter() - start)
        r = rows[label]
        print(f"{label:6s} log p(x) {r['log_likelihood']['x']:8.2f}", end="")
        if "coherence" in r:
            print(f"  log p(x,x2,y) {r['log_likelihood']['x,x2,y']:8.2f}  log p(y|x) {r['conditional']['y|x']:6.3f}"
                  f"  coherence y->x {r['coherence']['y->x']:.2f} x->y {r['coherence']['x->y']:.2f} x->x2 "
                  f"{r['coherence']['x->x2']:.2f} joint {r['coherence']['joint']:.2f}  diversity y->x "
                  f"{r['diversity']['y->x']:.2f}", end="")
        print(f"  ({r['seconds']:.0f} s)", flush=True)
    result = {"benchmark": "multimodal_mnist", "epochs": args.epochs, "num_particles": args.num_particles,
              "num_test": len(test[0]), "classifier_accuracy": judge.test_accuracy, "results": rows,
              "device": device_name(args.device),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "pyro": pyro.__version__,
              "python": platform.python_version()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
