"""Stochastic-gradient Hamiltonian Monte Carlo over the global latent sites of a Pyro model.

SGHMC [1] simulates Hamiltonian dynamics with friction on a *minibatch* estimate of the
potential energy, so one step costs one minibatch instead of the whole data set; the friction
and injected noise make the chain sample the posterior without a Metropolis correction (exact
only as the step size goes to zero). With ``scale_adapted`` (the default) it is the adaptive
SGHMC of Bayesian neural networks [2]: during burn-in a per-coordinate preconditioner
``M^-1 = 1 / sqrt(v_hat)`` is estimated from running averages of the squared minibatch gradient,
whose window ``tau`` adapts by itself, and is frozen afterwards.

Update per step, with ``theta`` the unconstrained position ``(D,)``, ``v`` the momentum (a
position increment), ``eps = lr`` and ``U~`` the minibatch potential::

    v     <- v - eps^2 M^-1 grad U~(theta) - mdecay v + N(0, 2 eps^2 mdecay M^-1 - eps^4 I)
    theta <- theta + v

``mdecay`` is the friction per step (``eps C M^-1`` in [2]) and ``eps^4 I`` the estimate of the
minibatch-gradient noise under that preconditioner [2] (variance clamped at ``1e-16``). Without
``scale_adapted`` it is plain SGHMC in the "SGD with momentum" form of [1] (Sec. 4): ``M = I``,
learning rate ``eta = eps^2``, ``alpha = mdecay`` and no noise estimate (``beta_hat = 0``).

Potential energy: the parameterisation comes from Pyro (``initialize_model`` on the first
minibatch: an unconstrained transform per site, ``init_to_uniform`` initial values). Each step
conditions the model on the constrained values, traces ``model(x_b, *cov_b, num_data=N)`` on a
minibatch of indices ``b`` and takes ``U~ = -(log_prob_sum - sum log|det J|)``: the ``"data"``
plate (``pyro.plate("data", num_data, subsample=x)``) scales the minibatch likelihood by
``N / B``, and the Jacobian term makes the density one over the unconstrained space, exactly as
Pyro's HMC potential. Minibatches come from epochs of shuffled indices.

Requirements (checked by :meth:`SGHMC.check`): every continuous latent site is global (outside
the ``"data"`` plate), observed sites lie inside it when ``batch_size < N``, and the model takes
``num_data``. Local latents (a VAE's ``z``) have one coordinate per datum that a minibatch step
never sees: use ``nuts`` on a handful of points, or a gradient engine (``svi``, ``iwae``,
``rws``) for an amortized guide.

Randomness (minibatch order, noise) comes from one ``torch.Generator`` per chain, seeded with
``seed + chain``; the chain checkpoints its whole state (position, momentum, preconditioner,
step, draws so far, generator state) after an epoch, at most every ``checkpoint_seconds``, and
a resumed chain continues bit for bit as if uninterrupted.

References:
    1. Stochastic Gradient Hamiltonian Monte Carlo, Chen, Fox & Guestrin, arXiv:1402.4102.
    2. Bayesian Optimization with Robust Bayesian Neural Networks, Springenberg, Klein, Falkner &
       Hutter, NeurIPS 2016 (adaptive SGHMC, as in ``pybnn``/``pysgmcmc``).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Callable

import torch
from pyro import poutine
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor
from tqdm.auto import tqdm

from aezoo.core import Autoencoder, check_lengths, rows
from aezoo.inference.mcmc import Draws, FlatSpace, McmcEngine, data_dtype, model_of, plate_nesting

_EPS = 1e-16  # keeps 1 / sqrt(v_hat) and g^2 / v_hat finite, as in [2]


def _takes_num_data(model: Callable) -> bool:
    try:
        params = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    return any(p.name == "num_data" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _in_data_plate(site: dict) -> bool:
    return any(frame.name == "data" for frame in site["cond_indep_stack"])


@dataclass(frozen=True)
class SGHMC(McmcEngine):
    """(Scale-adapted) stochastic-gradient HMC with minibatches; see the module docstring.

    Draws are kept every ``thin`` steps after ``warmup_steps`` burn-in steps, so a chain runs
    ``warmup_steps + num_samples * thin`` steps of one minibatch each.

    Attributes:
        num_samples: draws ``S`` kept per chain, after thinning.
        warmup_steps: burn-in steps per chain (the preconditioner is estimated here), discarded.
        lr: step size ``eps``; a step moves ``theta`` by about ``eps^2 M^-1 grad U``.
        mdecay: friction, the fraction of momentum lost per step, in ``(0, 1]``.
        batch_size: minibatch size ``B``; ``B >= N`` uses the full data every step.
        thin: keep one draw every ``thin`` steps.
        scale_adapted: adaptive SGHMC [2] (burn-in preconditioner) instead of plain SGHMC [1].
        noise_estimate: with ``scale_adapted``, subtract [2]'s minibatch-noise estimate ``eps^4`` from
            the injected noise variance. It assumes independent minibatch noise each step; with
            shuffled epochs much of that noise cancels and the chain runs cold, by up to
            ``eps^2 / (2 mdecay M^-1)`` of the variance (measured on 2-D Gaussian posteriors,
            ``N = 200``, ``B = 50``, ``lr = 0.05``: 0.85x to 0.91x, and 0.38x for a stiff
            coordinate, of the exact variances; without it 0.99x to 1.05x). Off (``beta_hat = 0``
            of [1]) is the safer choice unless ``lr`` is small.
        checkpoint_seconds: save the chain state after an epoch once this long has passed since
            the last save (0: every epoch); only when ``fit`` has a ``checkpoint``.

    Per-draw statistics ``(C, S)``: ``step_size`` (``lr``) and ``potential_energy`` (the minibatch
    estimate ``U~`` at the draw, a noisy number; no Hamiltonian, so no BFMI).
    """

    num_samples: int = 500
    warmup_steps: int = 3000
    lr: float = 1e-2
    mdecay: float = 0.05
    batch_size: int = 100
    thin: int = 10
    scale_adapted: bool = True
    noise_estimate: bool = False
    checkpoint_seconds: float = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr}; the step size must be positive")
        if not 0 < self.mdecay <= 1:
            raise ValueError(f"mdecay={self.mdecay}; the friction per step must lie in (0, 1]")
        for name in ("batch_size", "thin", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; must be at least 1")
        if self.warmup_steps < 0 or self.checkpoint_seconds < 0:
            raise ValueError("warmup_steps and checkpoint_seconds must be non-negative")

    def check(self, target: Autoencoder | Callable, *data: Tensor) -> None:
        """Raise ``ValueError`` ("does not apply") for models SGHMC cannot sample.

        That is: data of unequal length, a model without a ``num_data`` argument, no latent
        site, a latent site inside the ``"data"`` plate (local latents) or a discrete one, or
        (with ``batch_size < N``) an observed site outside the ``"data"`` plate.
        """
        name = type(self).__name__
        n = check_lengths(data)
        model = model_of(target)
        if not _takes_num_data(model):
            raise ValueError(f"{name} does not apply: it calls model(x_batch, *covariates, num_data=N), and the "
                             "model takes no num_data to scale its 'data' plate")
        batch = rows(data, slice(0, self.batch_size))
        with torch.no_grad():
            tr = prune_subsample_sites(poutine.trace(model).get_trace(*batch, num_data=n))
        sites = [s for s in tr.nodes.values() if s["type"] == "sample"]
        latent = [s for s in sites if not s["is_observed"]]
        if not latent:
            raise ValueError(f"{name} does not apply: the model has no latent sample sites")
        local = [s["name"] for s in latent if _in_data_plate(s)]
        if local:
            raise ValueError(
                f"{name} does not apply: latent site(s) {local} lie inside the 'data' plate (local latents, one "
                "per datum, which a minibatch step never updates consistently); SGHMC samples global latents "
                "only. For the posterior of local latents use `nuts` on a handful of data points, or fit an "
                "amortized guide with a gradient engine (svi, iwae, rws)")
        discrete = [s["name"] for s in latent if s["fn"].support.is_discrete]
        if discrete:
            raise ValueError(f"{name} does not apply: latent site(s) {discrete} are discrete; SGHMC needs "
                             "continuous latents (marginalise them out or use a gradient engine)")
        outside = [s["name"] for s in sites if s["is_observed"] and not _in_data_plate(s)]
        if outside and self.batch_size < n:
            raise ValueError(
                f"{name} does not apply: observed site(s) {outside} lie outside the 'data' plate, so a minibatch "
                "likelihood cannot be rescaled by N / B; put them in pyro.plate('data', num_data, subsample=x) "
                "or use batch_size >= N")

    def run_chain(self, model: Callable, data: tuple[Tensor, ...], chain: int,
                  checkpoint: Callable[[dict], None], resume: dict | None) -> tuple[Draws, Draws]:
        """One chain of ``warmup_steps + num_samples * thin`` minibatch steps.

        Args:
            model: the Pyro model, called as ``model(x_b, *cov_b, num_data=N)``.
            data: ``x`` ``(N, D_x)`` then covariates ``(N, ...)``.
            chain: chain index; the generator is seeded with ``seed + chain``.
            checkpoint: called with the chain state (a dict of tensors and numbers) after epochs.
            resume: the last such state when the fit resumes, else ``None``.

        Returns:
            ``(draws, stats)``: site -> ``(S, *site_shape)`` constrained draws, and
            ``step_size``, ``potential_energy`` ``(S,)``.
        """
        start = time.perf_counter()
        n = len(data[0])
        bsz = min(self.batch_size, n)
        init, _, transforms, _ = initialize_model(model, model_args=rows(data, slice(0, bsz)),
                                                  model_kwargs={"num_data": bsz},
                                                  init_strategy=self.init_fn(data_dtype(data)),
                                                  max_plate_nesting=plate_nesting(model, *rows(data, slice(0, bsz)),
                                                                                  num_data=bsz))
        space = FlatSpace(init, transforms)
        potential = _Potential(model, space, n)
        theta = space.flatten(init).detach()
        dev = theta.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(self.seed + chain)
        v, tau, g, v_hat = (torch.zeros_like(theta), torch.ones_like(theta), torch.ones_like(theta),
                            torch.ones_like(theta))
        draws, energies, t, before = [], [], 0, 0.0
        if resume is not None:
            theta, v, tau, g, v_hat = (resume[k].to(dev) for k in ("theta", "momentum", "tau", "g", "v_hat"))
            draws, energies = list(resume["draws"].to(dev)), resume["potential_energy"].tolist()
            t, before = int(resume["step"]), float(resume["seconds"])
            gen.set_state(resume["generator"])
        total = self.warmup_steps + self.num_samples * self.thin
        lr2 = self.lr**2
        bar = tqdm(total=total, initial=t, desc=f"chain {chain}", disable=not self.progress, leave=False)
        saved = time.perf_counter()
        while t < total:
            epoch = [None] if bsz >= n else torch.randperm(n, generator=gen, device=dev).split(bsz)
            for idx in epoch:
                if t >= total:
                    break
                batch = data if idx is None else rows(data, idx)
                energy, grad = potential.value_and_grad(theta, batch)
                kept = t >= self.warmup_steps and (t - self.warmup_steps + 1) % self.thin == 0
                if kept:
                    if not torch.isfinite(energy):
                        raise RuntimeError(f"SGHMC chain {chain} diverged at step {t} (potential energy "
                                           f"{energy.item()}); lower lr or raise mdecay")
                    draws.append(theta)
                    energies.append(energy.item())
                    if len(draws) % 50 == 0:
                        bar.set_postfix(potential_energy=f"{energies[-1]:.4g}", refresh=False)
                if self.scale_adapted:
                    if t < self.warmup_steps:  # Eq. 8-9 of [2]: window tau, mean gradient g, second moment v_hat
                        tau_inv = 1.0 / (tau + 1.0)
                        tau = tau - tau * g * g / (v_hat + _EPS) + 1.0
                        g = g - g * tau_inv + tau_inv * grad
                        v_hat = v_hat - v_hat * tau_inv + tau_inv * grad * grad
                    minv = 1.0 / (v_hat.sqrt() + _EPS)
                    noise_var = (2.0 * lr2 * self.mdecay * minv - lr2 * lr2 * self.noise_estimate).clamp(min=_EPS)
                    step = -lr2 * minv * grad
                else:
                    noise_var = torch.full_like(theta, 2.0 * lr2 * self.mdecay)
                    step = -lr2 * grad
                noise = torch.randn(theta.shape, generator=gen, device=dev, dtype=theta.dtype)
                v = v + step - self.mdecay * v + noise_var.sqrt() * noise
                theta = theta + v
                t += 1
                bar.update()
            now = time.perf_counter()
            if t < total and now - saved >= self.checkpoint_seconds:
                checkpoint({"step": t, "theta": theta, "momentum": v, "tau": tau, "g": g, "v_hat": v_hat,
                            "draws": torch.stack(draws) if draws else theta.new_zeros((0, len(theta))),
                            "potential_energy": torch.tensor(energies, dtype=torch.float64),
                            "generator": gen.get_state(), "seconds": before + now - start})
                saved = time.perf_counter()
        bar.close()
        flat = torch.stack(draws)
        stats = {"step_size": torch.full((len(flat),), self.lr),
                 "potential_energy": torch.tensor(energies, dtype=torch.float64)}
        return space.constrained(flat), stats


class _Potential:
    """Minibatch potential ``U~(theta) = -log p(x_b, theta) * scaled + log-Jacobian``, and its gradient."""

    def __init__(self, model: Callable, space: FlatSpace, num_data: int) -> None:
        self.model, self.space, self.num_data = model, space, num_data

    def __call__(self, theta: Tensor, batch: tuple[Tensor, ...]) -> Tensor:
        unconstrained = self.space.unflatten(theta)
        values = self.space.constrained(theta)
        tr = poutine.trace(poutine.condition(self.model, data=values)).get_trace(*batch, num_data=self.num_data)
        log_joint = tr.log_prob_sum()  # the "data" plate scales the minibatch terms by N / B
        for k, t in self.space.transforms.items():
            log_joint = log_joint - t.log_abs_det_jacobian(values[k], unconstrained[k]).sum()
        return -log_joint

    def value_and_grad(self, theta: Tensor, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = self(theta, batch)
            (grad,) = torch.autograd.grad(energy, theta)
        return energy.detach(), grad


ENGINE = SGHMC
