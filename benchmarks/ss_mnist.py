"""Semi-supervised MNIST with M2: test classification accuracy against the number of labels.

``m2`` (Kingma et al.'s sizes: one hidden layer of 500 softplus units, D_z = 50) is trained on all
60,000 training images, of which ``--labels`` (balanced, seeded) keep their label, with its default
objective (the ELBO summed exactly over the unknown labels, ``svi`` with ``elbo=traceenum``, plus
the classification term with ``penalty_weight = 0.1 N / N_labelled``, the paper's alpha = 0.1 N),
for ``--epochs`` passes, dynamically binarized, each minibatch of 100 holding
``--labelled-per-batch`` labelled images (0: random minibatches, where 100 labels among 60,000
images appear in one step of six); then q(y | x) classifies the 10,000 test images.

Published (Kingma et al., arXiv:1406.5298, Table 1, M2 alone, test error): 11.97 % (100 labels),
4.94 % (600), 3.60 % (1000), 3.92 % (3000), after thousands of epochs; the budget here is a few
epochs, so the figures stand beside the paper's.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.ss_mnist [--labels 100,3000] [--epochs 5]``.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch

from aezoo import data
from aezoo.inference import ENGINES
from aezoo.models import m2
from aezoo.runs import keep_labels
from benchmarks.common import add_device, device_name

PAPER_ERROR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}  # % test error, Table 1, M2


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", default="100,3000")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labelled-per-batch", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    pyro.settings.set(module_local_params=True)

    ds = data.load("mnist", "dynamic")
    rows = {}
    for n in (int(v) for v in args.labels.split(",")):
        y = keep_labels(ds, n)
        pyro.set_rng_seed(args.seed)
        ae = m2.build(m2.Config()).to(args.device)
        name, fields = m2.DEFAULT_ENGINE
        engine = ENGINES[name](**{**fields, "penalty_weight": 0.1 * len(y) / n,
                                  "labelled_per_batch": args.labelled_per_batch},
                               epochs=args.epochs, lr=args.lr, seed=args.seed, progress=False)
        fit = engine.fit(ae, ds.train, y, transform=ds.transform)
        ae.eval()
        accuracy = (m2.classify(ae, ds.test.to(args.device)).cpu() == ds.test_labels).double().mean().item()
        rows[n] = {"test_error_percent": 100 * (1 - accuracy), "paper_error_percent": PAPER_ERROR.get(n),
                   "train_seconds": fit.stats["train_seconds"].item(), "final_train_loss": fit.losses[-1].item()}
        print(f"{n:5d} labels: test error {rows[n]['test_error_percent']:6.2f} %  (paper {PAPER_ERROR.get(n)} %), "
              f"{rows[n]['train_seconds']:.0f} s", flush=True)
    result = {"benchmark": "ss_mnist", "epochs": args.epochs, "labelled_per_batch": args.labelled_per_batch,
              "results": {str(k): v for k, v in rows.items()}, "device": device_name(args.device),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "pyro": pyro.__version__,
              "python": platform.python_version()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
