"""Link prediction on offline graphs: VGAE and GAE against Adamic-Adar and a spectral embedding.

The protocol of "Variational Graph Auto-Encoders" (Kipf & Welling, arXiv:1611.07308): per seed, a
fresh 85/5/10 edge split (:func:`aezoo.data.graphs.link_split`, as many non-edges as held-out edges),
the model trained on the training graph (Adam, learning rate 0.01, the paper's 32-16 GCN, its
``DEFAULT_ENGINE``; ``--epochs``) and scored on the test pairs by ROC AUC and average precision
(:func:`aezoo.diagnostics.links.link_prediction`). Each model is trained with the Bernoulli
log-likelihood (``reweight=none``) and with the paper's reweighted loss (``reweight=paper``).
Baselines on the same training graph: the Adamic-Adar index and the rank-16 spectral reconstruction
of the normalised adjacency. Figures are means over seeds with their standard deviation.

Graphs (no download): ``sbm`` and ``lfr`` with node features, ``karate`` and ``les_miserables``
without (identity features). The paper's Cora figures (VGAE AUC 91.4, AP 92.6) need the Planetoid
files, which are not bundled: they are listed beside the results, not reproduced here.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.graph_links [--seeds 3] [--epochs 200]``.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyro
import torch

from aezoo.data import graphs
from aezoo.diagnostics.links import PAPER_CORA, link_prediction
from aezoo.inference import ENGINES
from aezoo.models import MODELS
from aezoo.runs import covariates_of, sized_to_data
from benchmarks.common import add_device, device_name

GRAPHS = {"sbm": graphs.sbm, "lfr": graphs.lfr, "karate": graphs.karate, "les_miserables": graphs.les_miserables}


def fit_and_score(model: str, reweight: str, dataset, epochs: int, seed: int,
                  device: str = "cpu") -> tuple[dict, float]:
    """Link-prediction scores of ``model`` trained on ``dataset``, and its training seconds."""
    module = MODELS[model]
    cfg = sized_to_data(dataclasses.replace(module.Config(), reweight=reweight), dataset, {})
    pyro.set_rng_seed(seed)
    ae = module.build(cfg).to(device)
    engine, fields = module.DEFAULT_ENGINE
    result = ENGINES[engine](**{**fields, "epochs": epochs, "seed": seed, "progress": False}).fit(
        ae, *covariates_of(ae, dataset, "train"))
    return link_prediction(ae, covariates_of(ae, dataset, "test")), result.stats["train_seconds"].item()


def summary(values: list[float]) -> dict[str, float]:
    """Mean and standard deviation over seeds (ddof 1), with the values."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--graphs", default=",".join(GRAPHS))
    parser.add_argument("--reweights", default="none,paper")
    add_device(parser)
    args = parser.parse_args(argv)
    methods = [f"{m}:{r}" for m in ("vgae", "gae") for r in args.reweights.split(",")]
    results: dict[str, dict] = {}
    for name in args.graphs.split(","):
        made = GRAPHS[name]()
        scores: dict[str, dict[str, list]] = {}
        for seed in range(args.seeds):
            dataset = graphs.graph_dataset(name, *made, seed=seed)
            for method in methods:
                model, reweight = method.split(":")
                links, seconds = fit_and_score(model, reweight, dataset, args.epochs, seed, args.device)
                for key in ("auc", "ap"):
                    scores.setdefault(method, {}).setdefault(key, []).append(links["model"][key])
                scores[method].setdefault("train_seconds", []).append(seconds)
            for baseline in ("adamic_adar", "spectral"):  # the same split's test pairs, so the same for each model
                for key in ("auc", "ap"):
                    scores.setdefault(baseline, {}).setdefault(key, []).append(links[baseline][key])
        results[name] = {"num_nodes": int(made[0].shape[0]), "num_edges": int(made[0].triu(1).sum()),
                         "features": len(made) > 1, "num_test_pairs": links["model"]["num_pairs"],
                         "methods": {m: {k: summary(v) for k, v in s.items()} for m, s in scores.items()}}

    print(f"link prediction, test pairs, mean +- sd over {args.seeds} seeds ({args.epochs} epochs)")
    for name, r in results.items():
        print(f"{name} ({r['num_nodes']} nodes, {r['num_edges']} edges, {r['num_test_pairs']} test pairs"
              f"{', features' if r['features'] else ''})")
        for method, s in r["methods"].items():
            print(f"  {method:12s} AUC {s['auc']['mean']:.3f} +- {s['auc']['std']:.3f}   "
                  f"AP {s['ap']['mean']:.3f} +- {s['ap']['std']:.3f}")
    print(f"paper (Cora, not reproduced offline): {PAPER_CORA}")
    result = {"benchmark": "graph_links", "epochs": args.epochs, "seeds": args.seeds, "results": results,
              "paper_cora": PAPER_CORA, "device": device_name(args.device),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "pyro": pyro.__version__, "python": platform.python_version(), "cpu_seconds": time.process_time()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
