"""Bayesian autoencoder (SGHMC) versus VAE (SVI) with little data: 500 binarized 8x8 digits.

Data: scikit-learn's 8x8 digits scaled to [0, 1] and binarized once with a fixed seed
(``aezoo.data.load("digits", "static")``): the first ``--train-size`` (500) of the 1,497 training
images, and the 300 test images. Both models use the Bernoulli likelihood and the same
architecture 64-50-z-50-64 (tanh, ``z = --z-dim``, 5 by default).

* VAE: ``vae`` trained by ``svi`` (ELBO, Adam) for ``--vae-epochs``.
* BAE: ``bayesian_ae`` (Gaussian priors on all encoder and decoder weights) sampled by ``sghmc``,
  once with the default prior scale (1) and once with the scale chosen by
  :func:`aezoo.inference.prior_selection.select_prior` (DSW between prior outputs and data).

Test metrics, nats per image (sum over the 64 pixels), mean over the test images:

* ``pred_ll``: the *predictive reconstruction* log-likelihood. BAE: ``log (1/S) sum_s p(x | x,
  theta_s)`` over posterior draws (``bayesian_ae.predict(...)[2]``). VAE: ``log (1/K) sum_k
  p(x | z_k)``, ``z_k ~ q(z | x)``, the same mixture over the encoder's uncertainty.
* ``E_q ll`` (VAE only): ``E_q log p(x | z)``, the reconstruction term of the ELBO (lower than
  ``pred_ll`` by Jensen).
* ``IS log p(x)`` (VAE only): the importance-sampled marginal likelihood with ``K`` particles,
  a different quantity (it scores x under the generative model, paying for the code); the BAE
  has no marginal likelihood (its code is deterministic), so no counterpart.
* ``MSE``: mean squared error per pixel between the test image and the predictive mean.
* predictive variance: the variance of the decoder mean across posterior draws (BAE) or encoder
  draws (VAE), mean over pixels; on test digits (in distribution), Bernoulli(0.5) noise images
  and test digits rotated by 90 degrees (out of distribution). ``anomaly`` is the mean of
  ``-pred_ll`` on each set.

BAE chains: rank-normalised split R-hat and bulk ESS (``aezoo.diagnostics.az.mcmc_summary``) over
all weights (weight space has sign and permutation symmetries, so poor values there are
expected) and over one function-space quantity, the per-draw mean test log-likelihood.

``--samplers sghmc,nuts`` adds a row for ``nuts`` with ``backend="jax"`` (the model's JAX twin,
:mod:`aezoo.inference.jax_twin`, all ``--nuts-chains`` chains vectorized in XLA; full batch, exact
gradients) on the default-prior posterior, with its own network size (``--nuts-hidden``; the
encoder fixed at its random initialisation with ``--nuts-decoder-only``) and length
(``--nuts-warmup``, ``--nuts-samples``, ``--nuts-max-tree-depth``), so that its wall time
(compilation and warm-up included) can be matched to the SGHMC run's (``train_seconds`` of each row;
``budget_share`` is the NUTS row's seconds over SGHMC's). The NUTS row adds divergences, mean
leapfrog steps per draw, the adapted step size and the mean acceptance probability. On one CPU
thread most of a NUTS run's time is XLA's compilation of the twin (about a minute for the
64-50-5-50-64 network), so its wall time barely grows with the number of draws.

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.bae_digits`` (about 5 minutes on one CPU thread;
``--device cuda`` trains and evaluates the torch models on a GPU, NUTS's JAX twin runs on JAX's
own device). The last line printed is one JSON object with the figures.

Reference: Model Selection for Bayesian Autoencoders, Tran, Rossi, Milios, Michiardi, Bonilla &
Filippone, arXiv:2106.06245.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch

import aezoo
from aezoo.core import flatten_draws
from aezoo.diagnostics import importance_estimate
from aezoo.diagnostics.az import mcmc_summary
from aezoo.inference.mcmc import INIT_STRATEGIES
from aezoo.inference.prior_selection import prior_objective, select_prior
from aezoo.models import bayesian_ae, vae
from aezoo.runs import versions
from benchmarks.common import add_device, device_name


def rotate(x: torch.Tensor, shape=(8, 8)) -> torch.Tensor:
    """Images ``(N, H W)`` rotated by 90 degrees."""
    return torch.rot90(x.reshape(-1, *shape), 1, (1, 2)).reshape(len(x), -1)


@torch.no_grad()
def vae_metrics(ae, x: torch.Tensor, num_particles: int) -> dict:
    """Per-image figures of a trained VAE on ``x`` ``(N, D_x)`` (see the module docstring)."""
    loc, scale = ae.guide.encode(x)
    z = loc + scale * torch.randn(num_particles, *loc.shape, device=loc.device)  # (K, N, D_z)
    px = ae.model.x_dist(z)
    ll = px.log_prob(x)  # (K, N)
    means = px.mean  # (K, N, D_x)
    return {"pred_ll": ll.logsumexp(0) - math.log(num_particles), "eq_ll": ll.mean(0),
            "mse": (means.mean(0) - x).pow(2).mean(-1), "pred_var": means.var(0, unbiased=False).mean(-1)}


@torch.no_grad()
def bae_metrics(ae, samples: dict, x: torch.Tensor, num_draws: int) -> dict:
    mean, var, ll = bayesian_ae.predict(ae, samples, x, num_draws)
    return {"pred_ll": ll, "mse": (mean - x).pow(2).mean(-1), "pred_var": var.mean(-1)}


@torch.no_grad()
def per_draw_test_ll(ae, samples: dict, x: torch.Tensor) -> torch.Tensor:
    """``(C, S)`` mean over ``x`` of ``log p(x | x, theta_s)`` at every draw: a function-space trace."""
    chains, draws = next(iter(samples.values())).shape[:2]
    out = []
    for draw in (dict(zip(samples, v)) for v in zip(*flatten_draws(samples).values())):
        tr = pyro.poutine.trace(pyro.poutine.condition(ae.model, data=draw)).get_trace(x)
        out.append(tr.nodes["x"]["fn"].log_prob(x).mean())
    return torch.stack(out).reshape(chains, draws)


def vae_row(args, x: torch.Tensor, x_test: torch.Tensor, sets: dict) -> dict:
    """The VAE trained by ``svi``, its figures on ``sets`` (module docstring)."""
    pyro.set_rng_seed(args.seed)
    v = vae.build(vae.Config(x_dim=64, z_dim=args.z_dim, hidden_dims=(args.hidden,))).to(args.device)
    fit = aezoo.ENGINES["svi"](epochs=args.vae_epochs, batch_size=100, lr=args.vae_lr, seed=args.seed,
                               progress=False).fit(v, x)
    pyro.set_rng_seed(args.seed + 2)
    vm = {k: vae_metrics(v, xs, args.num_particles) for k, xs in sets.items()}
    est = importance_estimate(v, x_test, num_particles=args.num_particles)
    return {**{k: float(t.mean()) for k, t in vm["test"].items()}, "is_log_px": float(est.log_likelihood.mean()),
            **_ood(vm), "train_seconds": float(fit.stats["train_seconds"])}


def bae_row(ae, res, sets: dict) -> dict:
    """Figures of a BAE's posterior draws ``res.samples`` on ``sets``, and their R-hat / ESS (module docstring)."""
    device = sets["test"].device
    samples = {k: v.to(device) for k, v in res.samples.items()}
    bm = {k: bae_metrics(ae, samples, xs, None) for k, xs in sets.items()}
    weights = mcmc_summary(res.samples, per_coordinate=True)
    rhat = torch.tensor([r for site in weights["sites"].values() for r in _flat(site["r_hat"])], dtype=torch.float64)
    trace = per_draw_test_ll(ae, samples, sets["test"]).cpu()
    func = mcmc_summary({"test_ll": trace}, per_coordinate=False)
    return {**{k: float(t.mean()) for k, t in bm["test"].items()}, "prior_scale": ae.config.prior_scale, **_ood(bm),
            "parameters": sum(v[0, 0].numel() for v in res.samples.values()),
            "r_hat_max_weights": weights["r_hat_max"], "ess_bulk_min_weights": weights["ess_bulk_min"],
            "share_r_hat_ok_weights": float((rhat <= 1.01).double().mean()),
            "r_hat_test_ll": func["r_hat_max"], "ess_bulk_test_ll": func["ess_bulk_min"],
            "test_ll_chain_means": trace.mean(1).tolist(), "test_ll_chain_sds": trace.std(1).tolist(),
            "train_seconds": float(res.stats["train_seconds"].sum())}


def _ood(m: dict) -> dict:
    return {"pred_var_noise": float(m["noise"]["pred_var"].mean()),
            "pred_var_rotated": float(m["rotated"]["pred_var"].mean()),
            "anomaly_test": -float(m["test"]["pred_ll"].mean()), "anomaly_noise": -float(m["noise"]["pred_ll"].mean()),
            "anomaly_rotated": -float(m["rotated"]["pred_ll"].mean())}


def _jax_device() -> str:
    import jax

    return str(jax.devices()[0].device_kind)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-size", type=int, default=500)
    p.add_argument("--z-dim", type=int, default=5)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--vae-epochs", type=int, default=400)
    p.add_argument("--vae-lr", type=float, default=3e-3)
    p.add_argument("--num-particles", type=int, default=1000, help="K for the VAE's IS log p(x) and predictive")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2000, help="SGHMC burn-in steps per chain")
    p.add_argument("--samples", type=int, default=100, help="SGHMC draws kept per chain")
    p.add_argument("--thin", type=int, default=10)
    p.add_argument("--sghmc-lr", type=float, default=1e-2)
    p.add_argument("--select-steps", type=int, default=200)
    p.add_argument("--samplers", default="svi,sghmc",
                   help="rows, comma-separated: svi (the VAE), sghmc (the BAE, --priors), nuts (the BAE, jax twin)")
    p.add_argument("--priors", default="default,selected", help="prior scales of the sghmc rows: default, selected")
    p.add_argument("--nuts-chains", type=int, default=None, help="NUTS chains (default: --chains)")
    p.add_argument("--nuts-warmup", type=int, default=200)
    p.add_argument("--nuts-samples", type=int, default=200)
    p.add_argument("--nuts-max-tree-depth", type=int, default=6)
    p.add_argument("--nuts-init", default="sample", choices=sorted(INIT_STRATEGIES),
                   help="where NUTS chains start (Pyro's init_to_*; sample: a prior draw, at the weights' scale)")
    p.add_argument("--nuts-hidden", type=int, default=None,
                   help="NUTS network's hidden units (default: --hidden; 0: linear encoder and decoder)")
    p.add_argument("--nuts-decoder-only", action="store_true",
                   help="NUTS samples the decoder only; the encoder stays at its (seeded) random initialisation")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    samplers, priors = args.samplers.split(","), args.priors.split(",")
    if set(samplers) - {"svi", "sghmc", "nuts"}:
        p.error(f"--samplers takes svi, sghmc and nuts, got {args.samplers!r}")
    if set(priors) - {"default", "selected"}:
        p.error(f"--priors takes default and selected, got {args.priors!r}")
    pyro.settings.set(module_local_params=True)
    start = time.perf_counter()

    ds = aezoo.data.load("digits", "static", train_size=args.train_size)
    x, x_test = ds.train, ds.test
    g = torch.Generator().manual_seed(args.seed + 1)
    sets = {"test": x_test, "noise": torch.bernoulli(torch.full_like(x_test, 0.5), generator=g),
            "rotated": rotate(x_test)}
    x, x_test = x.to(args.device), x_test.to(args.device)
    sets = {k: v.to(args.device) for k, v in sets.items()}
    rows = {}

    bcfg = bayesian_ae.Config(x_dim=64, z_dim=args.z_dim, hidden_dims=(args.hidden,))
    if "svi" in samplers:
        rows["vae (svi)"] = vae_row(args, x, x_test, sets)
    selection = None
    if "sghmc" in samplers and "selected" in priors:
        t0 = time.perf_counter()
        selection = select_prior(bayesian_ae.build(bcfg).to(args.device), x, num_steps=args.select_steps,
                                 seed=args.seed)
        select_seconds = time.perf_counter() - t0
        grid = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
        objective = prior_objective(bayesian_ae.build(bcfg).to(args.device), x[:300], grid, seed=args.seed)
    if "sghmc" in samplers:
        engine = aezoo.ENGINES["sghmc"](num_samples=args.samples, warmup_steps=args.warmup, thin=args.thin,
                                        lr=args.sghmc_lr, num_chains=args.chains, seed=args.seed, progress=False)
        scales = {"default": 1.0, "selected": selection.prior_scale if selection else None}
        for prior in priors:
            pyro.set_rng_seed(args.seed)
            ae = bayesian_ae.build(bayesian_ae.Config(**{**bcfg.__dict__, "prior_scale": scales[prior]}))
            res = engine.fit(ae.to(args.device), x)
            rows[f"bae {prior} prior (sghmc)"] = bae_row(ae, res, sets)
    if "nuts" in samplers:
        hidden = args.hidden if args.nuts_hidden is None else args.nuts_hidden
        ncfg = bayesian_ae.Config(x_dim=64, z_dim=args.z_dim, hidden_dims=(hidden,) if hidden else (),
                                  bayesian_encoder=not args.nuts_decoder_only)
        engine = aezoo.ENGINES["nuts"](num_samples=args.nuts_samples, warmup_steps=args.nuts_warmup,
                                       max_tree_depth=args.nuts_max_tree_depth,
                                       num_chains=args.nuts_chains or args.chains,
                                       init_strategy=args.nuts_init, seed=args.seed, progress=False, backend="jax")
        pyro.set_rng_seed(args.seed)
        ae = bayesian_ae.build(ncfg).to(args.device)
        res = engine.fit(ae, x)
        size = "" if hidden == args.hidden else f", {hidden} hidden" if hidden else ", linear"
        label = f"bae default prior (nuts jax{size}{', decoder only' if args.nuts_decoder_only else ''})"
        st = res.stats
        rows[label] = {**bae_row(ae, res, sets), "hidden": hidden, "bayesian_encoder": ncfg.bayesian_encoder,
                       "divergences": int(st["diverging"].sum()),
                       "mean_leapfrog_steps": float(st["num_steps"].double().mean()),
                       "step_size": st["step_size"][:, -1].tolist(), "accept_prob": float(st["accept_prob"].mean())}
        sg = rows.get("bae default prior (sghmc)")
        if sg:
            rows[label]["budget_share"] = rows[label]["train_seconds"] / sg["train_seconds"]

    # -- report ------------------------------------------------------------------------------------
    print(f"bae_digits: {len(x)} train / {len(x_test)} test binarized 8x8 digits, 64-{args.hidden}-{args.z_dim}-"
          f"{args.hidden}-64 tanh, Bernoulli; nats per image (64 pixels), means over test images\n")
    if selection is not None:
        print(f"prior selection (DSW, {args.select_steps} steps, {select_seconds:.0f} s): prior_scale "
              f"{selection.prior_scale:.3f}; DSW first/last tenth {selection.to_dict()['dsw_first']:.3f} / "
              f"{selection.to_dict()['dsw_last']:.3f}")
        print("DSW(prior outputs, data) at s = " + ", ".join(f"{s:g}: {o:.3f}"
                                                             for s, o in zip(grid, objective.tolist())))
    print()
    head = (f"{'model':44s} {'pred_ll':>8s} {'E_q ll':>8s} {'IS logpx':>9s} {'MSE':>7s} {'var test':>9s} "
            f"{'var noise':>9s} {'var rot':>8s} {'anom test':>9s} {'anom noise':>10s} {'anom rot':>9s} "
            f"{'Rhat fn':>7s} {'ESS fn':>7s} {'Rhat w':>7s} {'w ok':>5s} {'train s':>7s}")
    print(head)

    def f(v, spec):
        return format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0].lstrip(">"))

    for label, r in rows.items():
        print(f"{label:44s} {r['pred_ll']:8.2f} {f(r.get('eq_ll'), '8.2f')} {f(r.get('is_log_px'), '9.2f')} "
              f"{r['mse']:7.4f} {r['pred_var']:9.5f} {r['pred_var_noise']:9.5f} {r['pred_var_rotated']:8.5f} "
              f"{r['anomaly_test']:9.2f} {r['anomaly_noise']:10.2f} {r['anomaly_rotated']:9.2f} "
              f"{f(r.get('r_hat_test_ll'), '7.3f')} {f(r.get('ess_bulk_test_ll'), '7.0f')} "
              f"{f(r.get('r_hat_max_weights'), '7.2f')} {f(r.get('share_r_hat_ok_weights'), '5.2f')} "
              f"{r['train_seconds']:7.0f}")
    print("\npred_ll: predictive reconstruction log-lik (BAE: posterior predictive over weight draws; VAE: "
          "log mean_k p(x|z_k), z_k ~ q). E_q ll: VAE's E_q log p(x|z). IS logpx: VAE's importance-sampled "
          f"log p(x), K={args.num_particles} (a marginal likelihood, not a reconstruction). var: predictive "
          "variance of the decoder mean per pixel. anom: -pred_ll. Rhat/ESS fn: split R-hat / bulk ESS of the "
          "per-draw mean test log-lik; Rhat w: max over all weights; w ok: share of weights with R-hat <= 1.01.")
    for label, r in rows.items():
        if "divergences" in r:
            print(f"{label}: {r['parameters']} parameters, {r['divergences']} divergences, "
                  f"{r['mean_leapfrog_steps']:.1f} leapfrog steps per draw, accept {r['accept_prob']:.2f}"
                  + (f", {r['budget_share']:.2f}x SGHMC's wall seconds" if "budget_share" in r else ""))
    result = {
        "benchmark": "bae_digits",
        "train_size": len(x), "test_size": len(x_test), "z_dim": args.z_dim, "hidden": args.hidden,
        "vae_epochs": args.vae_epochs, "num_particles": args.num_particles,
        "samplers": samplers, "priors": priors,
        "sghmc": {"chains": args.chains, "warmup": args.warmup, "samples": args.samples, "thin": args.thin,
                  "lr": args.sghmc_lr},
        "nuts": {"backend": "jax", "chains": args.nuts_chains or args.chains, "warmup": args.nuts_warmup,
                 "samples": args.nuts_samples, "max_tree_depth": args.nuts_max_tree_depth,
                 "init": args.nuts_init, "hidden": args.hidden if args.nuts_hidden is None else args.nuts_hidden,
                 "decoder_only": args.nuts_decoder_only,
                 "jax_device": _jax_device()} if "nuts" in samplers else None,
        "selected_prior_scale": selection.prior_scale if selection else None,
        "dsw_grid": dict(zip(map(str, grid), objective.tolist())) if selection else None,
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "device": device_name(args.device), "threads": torch.get_num_threads(), "machine": platform.machine(),
        "versions": versions(),
    }
    print(json.dumps(result))
    return result


def _flat(values) -> list[float]:
    """Nested lists of numbers (``None`` for NaN) as one flat list of floats."""
    if isinstance(values, list):
        return [v for item in values for v in _flat(item)]
    return [math.nan if values is None else float(values)]


if __name__ == "__main__":
    main()
