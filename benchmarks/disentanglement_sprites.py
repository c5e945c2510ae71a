"""Disentanglement on one budget: VAE, beta-VAE, capacity beta-VAE, DIP-VAE, JointVAE and QLAE on sprites.

Every entry trains on the procedural dSprites grid (``sprites``: 32x32, 3 shapes x 6 scales x 10
orientations x 8 x 8 positions, 9,520 train / 2,000 test; ``aezoo.data.sprites``) for the same
``--epochs`` (Adam, batch 64, lr 1e-3 unless its default objective says otherwise), with D_z = 10
and the zoo's 784-style MLP (two hidden layers of 256 ReLU units), once per seed in ``--seeds``;
each is scored on the first ``--test-size`` test images by ``aezoo.diagnostics.disentanglement``
(MIG, SAP, DCI with the Lasso importance, the FactorVAE score, InfoMEC) from the guide's mean codes,
and by its reconstruction log p(x | mean code) in nats per image:

- ``vae``: the ELBO; ``beta_vae``: ``svi`` with beta = 4 (Higgins et al.);
- ``capacity_vae``: the capacity objective of Burgess et al. (C rising to 15 nats over the budget,
  gamma = 1000; their 25 nats over 100k iterations on the 64x64 data);
- ``dip_vae``: DIP-VAE-II (Kumar et al., lambda_od = 10, lambda_d = 10 lambda_od, as ``dip_ii``);
- ``joint_vae``: JointVAE (Dupont) with its default objective, capacities scaled to the budget
  (C_z to 5 nats, C_c to log 3 over the budget, gamma = 30), three classes for the three shapes;
- ``qlae``: QLAE (Hsu et al.) with its default objective (the ``vq`` term, AdamW, weight decay 0.1).

The table gives the mean and standard deviation over seeds. Published figures are on the 64x64
dSprites after 300k+ steps (e.g. MIG about 0.2-0.4 for beta-TC/beta-VAE in Chen et al.; InfoM
about 0.8 for QLAE in Hsu et al.): only the ordering can be compared here.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.disentanglement_sprites [--epochs 10] [--seeds 0,1,2]``.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch

from aezoo import data
from aezoo.diagnostics import disentanglement
from aezoo.diagnostics.likelihood import reconstruct
from aezoo.inference import ENGINES
from aezoo.models import MODELS
from benchmarks.common import add_device, device_name

NET = {"z_dim": 10, "hidden_dims": (256, 256), "activation": "relu"}
METRICS = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factorvae_score",
           "infomec_modularity", "infomec_compactness", "infomec_explicitness")


def entries(epochs: int) -> dict[str, tuple[str, dict, dict]]:
    """label -> (model, config fields, svi fields); the capacities scaled to ``epochs``."""
    return {
        "vae": ("vae", NET, {}),
        "beta_vae": ("vae", NET, {"beta": 4.0}),
        "capacity_vae": ("vae", NET, {"capacity_max": 15.0, "capacity_epochs": epochs, "gamma": 1000.0}),
        "dip_vae": ("vae", NET, {"penalty": "dip_ii", "penalty_weight": 10.0}),
        "joint_vae": ("joint_vae", {**NET, "num_classes": 3},
                      {**MODELS["joint_vae"].DEFAULT_ENGINE[1], "lr": 1e-3,
                       "capacity_sites": (f"z=5:{epochs}", f"z_c={math.log(3):.4f}:{epochs}")}),
        "qlae": ("qlae", NET, MODELS["qlae"].DEFAULT_ENGINE[1]),
    }


def run(label: str, spec, ds, args, seed: int) -> dict:
    model, fields, engine = spec
    module = MODELS[model]
    pyro.set_rng_seed(seed)
    ae = module.build(module.Config(x_dim=ds.train.shape[-1], image_shape=ds.image_shape, **fields)).to(args.device)
    settings = {"lr": 1e-3, "batch_size": 64, **engine, "epochs": args.epochs, "seed": seed, "progress": False}
    fit = ENGINES["svi"](**settings).fit(ae, ds.train)
    test = ds.test[: args.test_size]
    found = disentanglement.evaluate(ae, (test,), ds.test_covariates["factors"], ds.factor_names, args.test_size,
                                     seed=seed)
    with torch.no_grad():
        ae.eval()
        test = test.to(args.device)
        mean = reconstruct(ae, test).clamp(1e-6, 1 - 1e-6)
        rec = (test * mean.log() + (1 - test) * (1 - mean).log()).sum(-1).mean().item()
    return {**found.metrics, "reconstruction": rec, "train_seconds": fit.stats["train_seconds"].item()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", default="vae,beta_vae,capacity_vae,dip_vae,joint_vae,qlae")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--test-size", type=int, default=2000)
    add_device(p)
    args = p.parse_args(argv)
    pyro.settings.set(module_local_params=True)
    ds = data.load("sprites")
    table = entries(args.epochs)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}
    for label in args.entries.split(","):
        start = time.perf_counter()
        runs = [run(label, table[label], ds, args, seed) for seed in seeds]
        keys = (*METRICS, "reconstruction", "train_seconds")
        rows[label] = {k: {"mean": statistics.fmean(r[k] for r in runs),
                           "sd": statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0} for k in keys}
        rows[label]["seeds"] = runs
        r = rows[label]
        print(f"{label:13s} MIG {r['mig']['mean']:.3f}±{r['mig']['sd']:.3f}  SAP {r['sap']['mean']:.3f}  "
              f"DCI-D {r['dci_disentanglement']['mean']:.3f}  FactorVAE {r['factorvae_score']['mean']:.3f}  "
              f"InfoM {r['infomec_modularity']['mean']:.3f}  InfoC {r['infomec_compactness']['mean']:.3f}  "
              f"InfoE {r['infomec_explicitness']['mean']:.3f}  rec {r['reconstruction']['mean']:.1f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    result = {"benchmark": "disentanglement_sprites", "epochs": args.epochs, "seeds": seeds,
              "num_test": args.test_size, "results": rows, "device": device_name(args.device),
              "threads": torch.get_num_threads(),
              "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
