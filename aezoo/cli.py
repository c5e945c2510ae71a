"""The ``aezoo`` command line: ``list``, ``fit``, ``eval`` and ``compare``."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

import pyro
import torch

from aezoo import compare as comparison
from aezoo import data as datasets
from aezoo import runs
from aezoo.catalogue import applicable
from aezoo.checks import integer
from aezoo.core import key_values
from aezoo.inference import ENGINES, distributed
from aezoo.models import MODELS
from aezoo.report import verdicts


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def _settings(pairs: list[str]) -> dict[str, str]:
    return key_values(pairs, "--set", "model.z_dim=10")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aezoo", description="A probabilistic-programming zoo of autoencoders on Pyro.")
    p.add_argument("--version", action="version", version=f"aezoo {_version()}")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core; on a "
                                               "shared machine 1 is often faster for small models)")
    sub = p.add_subparsers(dest="command", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter
    sub.add_parser("list", help="models (with the datasets and engines that apply to each), engines, datasets")

    f = sub.add_parser("fit", help="train a model, evaluate it, write a run folder", formatter_class=defaults)
    f.add_argument("model", help="a model key (aezoo list)")
    f.add_argument("--data", default="synthetic",
                   help="dataset key (aezoo list) or a .npz/.npy file (x, optional y, c, mask); default: synthetic")
    f.add_argument("--engine", help="engine key (default: the model's DEFAULT_ENGINE, else svi)")
    f.add_argument("--epochs", type=int)
    f.add_argument("--batch-size", type=int)
    f.add_argument("--lr", type=float)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="cpu", help="cpu or cuda")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field: model.z_dim=10, engine.num_particles=5 (repeatable)")
    f.add_argument("--binarize", default="dynamic", choices=datasets.BINARIZATIONS)
    f.add_argument("--train-size", type=int, help="keep the first N training points")
    f.add_argument("--test-size", type=int, help="keep the first N test points")
    f.add_argument("--num-particles", type=int, default=5000, help="importance samples for test log p(x)")
    f.add_argument("--val-size", type=int, help="hold out N training points: a validation curve per epoch, the "
                                                "best epoch kept, early stopping with --set engine.patience=P")
    f.add_argument("--labels", type=int, help="keep N training labels (balanced), hide the rest: semi-supervised")
    f.add_argument("--out", help="run folder (default runs/MODEL-ENGINE-DATA-seedS); an existing one resumes")
    f.add_argument("--eval", default="full", choices=runs.EVAL_MODES, dest="eval_mode",
                   help="after training: the full suite (K=--num-particles, whole test split), quick (K=500 on at "
                        "most 500 test points, in a subfolder) or none (evaluate later with aezoo eval)")
    f.add_argument("--mlflow", metavar="URI", help="also log the run to this MLflow tracking URI (pip install "
                                                    "'aezoo[mlflow]')")
    f.add_argument("--no-progress", action="store_true")
    f.add_argument("--amp", action="store_true", help="mixed precision: the networks compute in bfloat16 (float16 "
                                                      "with loss scaling on older GPUs), likelihoods in float32")
    f.add_argument("--distributed", action="store_true",
                   help="data-parallel training over the processes torchrun starts (gloo on cpu, NCCL on cuda, one "
                        "GPU each); --batch-size is per process: torchrun --nproc_per_node=N -m aezoo fit ... "
                        "--distributed")

    c = sub.add_parser("compare", help="settings that differ, metrics and paired differences of run folders",
                       formatter_class=defaults)
    c.add_argument("run_dirs", nargs="+", help="two or more run folders; the first is the reference")
    c.add_argument("--html", default="compare.html", help="also write the comparison as this page")

    e = sub.add_parser("eval", help="re-evaluate a run folder", formatter_class=defaults)
    e.add_argument("run_dir")
    e.add_argument("--num-particles", type=int, help="K (default: the run's); another K writes to a subfolder")
    e.add_argument("--quick", action="store_true", help="K=500 on at most 500 test points, in a subfolder")
    e.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    pyro.settings.set(module_local_params=True)
    try:
        _set_threads(args.threads)
        if args.command == "list":
            _print_list()
            return 0
        if args.command == "compare":
            result = comparison.compare(args.run_dirs)
            print(comparison.text(result))
            print(f"page: {comparison.write_html(result, args.html)}")
            return 0
        if args.command == "fit":
            device = distributed.init(args.device) if args.distributed else args.device
            try:
                out = runs.fit(
                    args.model, args.data, args.engine, out=args.out, seed=args.seed, device=device,
                    settings=_settings(args.set), binarize=args.binarize, train_size=args.train_size,
                    test_size=args.test_size, num_particles=args.num_particles, labels=args.labels,
                    progress=not args.no_progress, eval_mode=args.eval_mode, val_size=args.val_size,
                    mlflow=args.mlflow, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    amp=True if args.amp else None,
                )
                main_rank = distributed.is_main()  # read before the group is left
            finally:
                if args.distributed:
                    distributed.shutdown()
            if not main_rank:
                return 0  # a data-parallel rank > 0: rank 0 evaluates and reports
            if args.eval_mode == "none":
                print(f"trained; evaluate with: aezoo eval {out} (or --quick)")
                return 0
            metrics = runs.evaluate(out, args.num_particles, args.device, mode=args.eval_mode)
        else:
            metrics = runs.evaluate(args.run_dir, args.num_particles, args.device,
                                    mode="quick" if args.quick else "full")
            if metrics["reused"]:
                print(f"reused {metrics['eval_dir']}/metrics.json: computed from the current checkpoint")
        out = metrics["eval_dir"]
    except (ValueError, RuntimeError, FloatingPointError) as err:
        print(f"aezoo: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a missing file, a read-only or full disk, a path that is a file
        print(f"aezoo: error: {err}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aezoo: stopped; the run folder keeps its last checkpoint: rerun the same command to resume from it",
              file=sys.stderr)
        return 130
    print(_headline(metrics))
    for warning in verdicts(metrics):
        print(f"warning: {warning}")
    print(f"report: {out}/report.html")
    return 0


def _version() -> str:
    try:
        return importlib.metadata.version("aezoo")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (checked)."""
    if threads is not None:
        integer("--threads", threads)
        torch.set_num_threads(threads)


def _headline(metrics: dict) -> str:
    """The one line ``aezoo fit`` / ``eval`` prints, by the kind of evaluation."""
    kind = metrics["kind"]
    if kind == "mcmc":
        r_hat, ess = metrics["r_hat_max"], metrics["ess_bulk_min"]
        lines = []
        if metrics.get("test_log_predictive") is not None:
            lines.append(f"test posterior predictive log p(x | data): {metrics['test_log_predictive']:.3f} nats per "
                         "datum")
        lines.append(f"MCMC: {metrics['num_chains']} chains x {metrics['num_draws']} draws, R-hat max "
                     f"{'n/a (one chain)' if r_hat is None else f'{r_hat:.3f}'}, min bulk ESS "
                     f"{'n/a' if ess is None else f'{ess:.0f}'}")
        return "\n".join(lines)
    if kind == "elbo":
        return f"test ELBO: {metrics['test_elbo']:.3f} nats per datum"
    if kind == "graph":
        return (f"test link prediction: AUC {metrics['test_link_auc']:.3f}, AP {metrics['test_link_ap']:.3f} on "
                f"{metrics['num_test_pairs']} pairs (Adamic-Adar AUC {metrics['adamic_adar_auc']:.3f}, spectral AUC "
                f"{metrics['spectral_auc']:.3f})")
    if kind == "reconstruction":
        return (f"test reconstruction log p(x | encoder(x)): {metrics['test_reconstruction']:.3f} nats per datum "
                f"({metrics['note']})")
    joint = "".join(f", {n}" for n in metrics.get("observed_covariates", []))
    given = f"{joint} | {', '.join(metrics['covariates'])}" if metrics.get("covariates") else joint
    unit = "sequence" if kind == "sequence" else "datum"
    return (f"test log-likelihood log p(x{given}): {metrics['test_log_likelihood']:.3f} nats per {unit} "
            f"(K={metrics['num_particles']}, test ELBO {metrics['test_elbo']:.3f})")


def _print_list() -> None:
    """Models with the datasets and engines that apply to each, then engines and datasets."""
    print("models:")
    for key, module in MODELS.items():
        data, engines = applicable(key)
        print(f"  {key:18s} {_first_line(module.__doc__)}")
        print(f"  {'':18s}   datasets: {', '.join(data) or 'none'}; engines: {', '.join(engines)}")
    print("engines:")
    for key, engine in ENGINES.items():
        print(f"  {key:18s} {_first_line(sys.modules[engine.__module__].__doc__)}")
    print("datasets (or any .npz / .npy file: aezoo fit MODEL --data FILE):")
    for key, source in datasets.DATASETS.items():
        print(f"  {key:18s} {source.description}")
