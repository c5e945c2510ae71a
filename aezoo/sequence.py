"""Shared pieces of the sequence models: Gaussian priors over time, the masked likelihood, checks.

Sequence data ``x`` are ``(B, T, D_x)`` with a covariate ``mask`` ``(B, T, D_x)`` bool (True where
observed; ``None`` means all observed). The local latent ``z`` is ``(B, T, D_z)``: batch shape
``(B,)`` in the ``"data"`` plate and event shape ``(T, D_z)``.

Priors over ``z`` (each channel ``d`` a time series ``z[:, d]``):

- :func:`lds_prior`: a linear dynamical system seen through Gaussian noise, as Pyro's
  :class:`~pyro.distributions.GaussianHMM` (log density by Kalman filtering, linear in ``T``).
- :func:`matern_prior`: independent Matern GPs per channel written as a linear state-space model
  [1, 2] with a small white-noise ``jitter``; covariance ``k(t, t') + jitter * 1[t = t']`` exactly.
- :func:`dense_gp_prior`: the same kind of GP with the dense ``(T, T)`` kernel matrix from
  :mod:`pyro.contrib.gp.kernels` (cost cubic in ``T``), as a :class:`TimeMajorMVN`.

GP hyper-parameters (:func:`set_hyper`) are fixed buffers, positive ``PyroParam`` point estimates
(trained by the ELBO), or ``PyroSample`` global latents with LogNormal priors, which
:class:`HyperMAP` gives Delta (MAP) guide sites; :func:`matern_ssm` is differentiable in them.

References:
    1. Kalman filtering and smoothing solutions to temporal Gaussian process regression models,
       Hartikainen & Saerkkae, MLSP 2010.
    2. Markovian Gaussian Process Variational Autoencoders, Zhu, Tebbutt, ... & Turner, arXiv:2207.05543.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.contrib.gp import kernels
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch import Tensor, nn
from torch.distributions import constraints
from torch.distributions.kl import kl_divergence, register_kl

from aezoo.likelihoods import LIKELIHOODS, check_mask, check_x, x_dist
from aezoo.nn import MLP

MATERN_NUS = (0.5, 1.5, 2.5)
KERNELS = ("cauchy", "rbf", "matern12", "matern32", "matern52")


# -- Matern state-space form -----------------------------------------------------------------------


def _matrix(rows: list[list[Tensor]]) -> Tensor:
    return torch.stack([torch.stack(row) for row in rows])


def matern_ssm(nu: float, lengthscale: float | Tensor, variance: float | Tensor, dt: float = 1.0,
               dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """The exact discrete-time state-space form of a Matern GP with unit output row [1].

    State ``s = (f, f', ...)`` of size ``S = nu + 1/2``: ``s_{t+1} = A s_t + N(0, Q)``,
    ``f_t = s_t[0]``, stationary covariance ``P``; then ``Cov(f_t, f_{t+k}) = k_nu(k dt)``.
    ``lengthscale`` (in units of ``dt``) and ``variance`` may be scalar tensors: the matrices are
    differentiable in them (built with torch ops, ``expm`` by ``torch.linalg.matrix_exp`` in float64).

    Returns:
        ``(A, Q, P)``, each ``(S, S)``: ``A = expm(F dt)``, ``Q = P - A P A^T``.

    Raises:
        ValueError: ``nu`` not in :data:`MATERN_NUS`.
    """
    ell = torch.as_tensor(lengthscale, dtype=torch.float64).reshape(())
    var = torch.as_tensor(variance, dtype=torch.float64).reshape(()).to(ell.device)
    lam, zero = math.sqrt(2 * nu) / ell, ell.new_zeros(())
    if nu == 0.5:
        Fc, P = _matrix([[-lam]]), _matrix([[var]])
    elif nu == 1.5:
        Fc = _matrix([[zero, zero + 1], [-lam**2, -2 * lam]])
        P = _matrix([[var, zero], [zero, lam**2 * var]])
    elif nu == 2.5:
        k = lam**2 * var / 3
        Fc = _matrix([[zero, zero + 1, zero], [zero, zero, zero + 1], [-lam**3, -3 * lam**2, -3 * lam]])
        P = _matrix([[var, zero, -k], [zero, k, zero], [-k, zero, lam**4 * var]])
    else:
        raise ValueError(f"nu must be one of {MATERN_NUS}, got {nu}")
    A = torch.linalg.matrix_exp(Fc * dt)
    Q = P - A @ P @ A.T
    return A.to(dtype), ((Q + Q.T) / 2).to(dtype), P.to(dtype)


def lds_prior(T: int, A: Tensor, Q: Tensor, C: Tensor, R: Tensor, P0: Tensor) -> dist.GaussianHMM:
    """``z_t = C h_t + N(0, R)``, ``h_t = A h_{t-1} + N(0, Q)``, ``h_0 ~ N(0, P0)``: a GaussianHMM.

    Args:
        T: duration; A, Q, P0: ``(S, S)``; C: ``(D_z, S)``; R: ``(D_z, D_z)`` positive definite.

    Returns:
        batch shape ``()``, event shape ``(T, D_z)``. Pyro's matrices act on the right
        (``h_t = h_{t-1} @ A^T``), and its ``h_0`` precedes the first time step.
    """
    zeros_s, zeros_z = A.new_zeros(A.shape[-1]), A.new_zeros(C.shape[-2])
    return dist.GaussianHMM(dist.MultivariateNormal(zeros_s, P0), A.T, dist.MultivariateNormal(zeros_s, Q),
                            C.T, dist.MultivariateNormal(zeros_z, R), duration=T)


def matern_prior(T: int, z_dim: int, nu: float, lengthscale: float | Tensor, variance: float | Tensor,
                 jitter: float, like: Tensor) -> dist.GaussianHMM:
    """Independent Matern GPs (unit time steps) for ``z_dim`` channels plus ``jitter`` white noise.

    The state stacks the channels' states (block-diagonal ``A``, ``Q``), so the cost is
    ``O(T (D_z S)^3)``: linear in ``T``. ``like`` gives dtype and device.
    """
    A, Q, P = (m.to(like) for m in matern_ssm(nu, lengthscale, variance, dtype=like.dtype))
    eye = torch.eye(z_dim, dtype=like.dtype, device=like.device)
    C = torch.kron(eye, torch.eye(1, A.shape[0], dtype=like.dtype, device=like.device))
    return lds_prior(T, torch.kron(eye, A), torch.kron(eye, Q), C, jitter * eye, torch.kron(eye, P))


def kernel(name: str, lengthscale: float, variance: float, learn: bool = False,
           prior_scale: float = 0.0) -> kernels.Isotropy:
    """A kernel from :mod:`pyro.contrib.gp.kernels` on time (1-d inputs), fixed unless ``learn``.

    ``cauchy`` is ``variance / (1 + r^2 / lengthscale^2)`` (GP-VAE's kernel), i.e.
    ``RationalQuadratic`` with ``scale_mixture = 1`` (always fixed) and lengthscale
    ``lengthscale / sqrt(2)``. ``learn`` and ``prior_scale`` act on the lengthscale and the variance
    as in :func:`set_hyper`.
    """
    if name == "cauchy":
        k = kernels.RationalQuadratic(1, torch.tensor(variance), torch.tensor(lengthscale / math.sqrt(2)),
                                      scale_mixture=torch.tensor(1.0))
        set_hyper(k, "scale_mixture", learn=False)
    else:
        cls = {"rbf": kernels.RBF, "matern12": kernels.Exponential, "matern32": kernels.Matern32,
               "matern52": kernels.Matern52}.get(name)
        if cls is None:
            raise ValueError(f"unknown kernel {name!r}; choose one of {KERNELS}")
        k = cls(1, torch.tensor(variance), torch.tensor(lengthscale))
    for hyper in HYPERS:
        set_hyper(k, hyper, learn, prior_scale)
    return k


# -- GP hyper-parameters: fixed, point estimates, or global latents ----------------------------------

HYPERS = ("lengthscale", "variance")  # the kernel hyper-parameters a Config's learn_kernel acts on


def set_hyper(module: PyroModule, name: str, learn: bool, prior_scale: float = 0.0) -> None:
    """Make the positive scalar ``module.<name>`` fixed, a point estimate, or a global latent.

    * ``learn=False``: a buffer (moves with ``.to()``, saved, no gradient).
    * ``learn=True, prior_scale=0``: a :class:`~pyro.nn.PyroParam` with a positive constraint
      (trained by the ELBO; a maximum-likelihood-II point estimate).
    * ``learn=True, prior_scale>0``: a :class:`~pyro.nn.PyroSample` with prior
      ``LogNormal(log v0, prior_scale)`` around the current value ``v0``; a latent site named
      ``module._pyro_get_fullname(name)``, which a guide must sample (:class:`HyperMAP`).

    Raises:
        ValueError: a negative ``prior_scale``.
    """
    if prior_scale < 0:
        raise ValueError(f"the hyper-parameter prior's scale must be >= 0 (0: no prior), got {prior_scale}")
    value = getattr(module, name).detach().clone()
    delattr(module, name)
    if not learn:
        module.register_buffer(name, value)
    elif prior_scale > 0:
        module.register_buffer(f"{name}_prior_loc", value.log())
        setattr(module, name, PyroSample(lambda self: dist.LogNormal(getattr(self, f"{name}_prior_loc"),
                                                                     prior_scale)))
    else:
        setattr(module, name, PyroParam(value, constraints.positive))


def prior_hypers(model: nn.Module) -> tuple[tuple[str, str], ...]:
    """``(module path in model, attribute)`` of every hyper-parameter with a prior (:func:`set_hyper`)."""
    return tuple((path, name[: -len("_prior_loc")]) for path, m in model.named_modules()
                 for name, _ in m.named_buffers(recurse=False) if name.endswith("_prior_loc"))


def draw_hypers(model: nn.Module) -> None:
    """Read every hyper-parameter with a prior once, so that its site is drawn here (call it outside the
    ``"data"`` plate, inside the model's call: later reads in the same call reuse the draw)."""
    for path, name in prior_hypers(model):
        getattr(model.get_submodule(path), name)


class HyperMAP(PyroModule):
    """A guide wrapper: Delta (MAP) sites for the model's hyper-parameter priors, then ``inner``.

    The hyper-parameters are a few scalars informed by every datum, so their posterior is sharp and
    a point mass is the usual choice (as ``AutoDelta`` and :mod:`pyro.contrib.gp`'s default
    autoguide): the bound is then ``E_q[log p(x, z | theta)] + log p(theta) - ...`` at the MAP
    ``theta`` (no entropy term for ``theta``). The inner guide sees the same values: its reads of
    the model's hyper-parameters (a guide that evaluates the prior) are conditioned on them and
    hidden from the trace.

    Args:
        inner: the guide of the local (and other global) latents, called as ``(x, *covariates, num_data=)``.
        model: the model; held by its bound ``get_submodule`` only, so its parameters keep their names.
        hypers: :func:`prior_hypers` of the model.
    """

    def __init__(self, inner: nn.Module, model: nn.Module, hypers: tuple[tuple[str, str], ...]) -> None:
        super().__init__()
        self.inner, self.find, self.hypers = inner, model.get_submodule, hypers
        for i, (path, name) in enumerate(hypers):
            init = getattr(self.find(path), f"{name}_prior_loc").exp()
            setattr(self, f"map{i}", PyroParam(init.clone(), constraints.positive))

    def values(self) -> dict[str, Tensor]:
        """``{site name: MAP value}``, sampled as Delta sites."""
        out = {}
        for i, (path, name) in enumerate(self.hypers):
            site = self.find(path)._pyro_get_fullname(name)
            out[site] = pyro.sample(site, dist.Delta(getattr(self, f"map{i}")))
        return out

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None):
        values = self.values()
        with poutine.block(hide=list(values)), poutine.condition(data=values):
            return self.inner(x, *covariates, num_data=num_data)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # e.g. posterior(x, mask) of the inner guide
            return getattr(super().__getattr__("inner"), name)


def with_hyper_guide(model: nn.Module, guide: nn.Module) -> nn.Module:
    """``guide`` wrapped in :class:`HyperMAP` when ``model`` has hyper-parameter priors, else ``guide``."""
    hypers = prior_hypers(model)
    return HyperMAP(guide, model, hypers) if hypers else guide


class TimeMajorMVN(TorchDistribution):
    """Independent multivariate normals over time per channel, laid out time-major.

    Wraps ``base``, a MultivariateNormal with batch shape ``(..., D)`` and event shape ``(T,)``,
    as a distribution with batch shape ``(...)`` and event shape ``(T, D)`` (values are
    ``base``'s transposed).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, base: dist.MultivariateNormal, validate_args=None) -> None:
        self.base = base
        super().__init__(base.batch_shape[:-1], (base.event_shape[0], base.batch_shape[-1]), validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return TimeMajorMVN(self.base.expand(batch_shape + self.base.batch_shape[-1:]))

    @property
    def mean(self) -> Tensor:
        return self.base.mean.transpose(-1, -2)

    @property
    def variance(self) -> Tensor:
        return self.base.variance.transpose(-1, -2)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        return self.base.rsample(sample_shape).transpose(-1, -2)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value.transpose(-1, -2)).sum(-1)


@register_kl(TimeMajorMVN, TimeMajorMVN)
def _kl_time_major(p: TimeMajorMVN, q: TimeMajorMVN) -> Tensor:
    return kl_divergence(p.base, q.base).sum(-1)


def dense_gp_prior(T: int, z_dim: int, k: kernels.Isotropy, jitter: float, like: Tensor) -> TimeMajorMVN:
    """``z[:, d] ~ N(0, K + jitter I)`` per channel with ``K = k(t, t')``, ``t = 0..T-1``: O(T^3).

    Raises:
        ValueError: ``K + jitter I`` is not positive definite in ``like``'s precision (long sequences with a
            long length scale in float32): the message says what to change.
    """
    t = torch.arange(T, dtype=like.dtype, device=like.device)
    K = k.to(like)(t) + jitter * torch.eye(T, dtype=like.dtype, device=like.device)
    tril, info = torch.linalg.cholesky_ex(K)
    if info.any():
        raise ValueError(f"the GP prior's kernel matrix over T={T} steps is not positive definite in {like.dtype} "
                         f"(length scale {float(k.lengthscale):.3g}, variance {float(k.variance):.3g}, jitter "
                         f"{jitter:g}): raise model.jitter, fix the kernel (model.learn_kernel=false), fit in float64, "
                         "or use markov_gp_vae, whose state-space form needs no (T, T) matrix")
    base = dist.MultivariateNormal(like.new_zeros(z_dim, T), scale_tril=tril.expand(z_dim, T, T))
    return TimeMajorMVN(base)


# -- the shared generative model ----------------------------------------------------------------------


def check_gp_settings(likelihood: str, lengthscale: float, variance: float, jitter: float,
                      kernel_prior: float = 0.0) -> None:
    """Raise ``ValueError`` for an unknown likelihood or a non-positive GP hyper-parameter (model configs)."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if not (lengthscale > 0 and variance > 0 and jitter > 0):
        raise ValueError("lengthscale, variance and jitter must be positive")
    if not kernel_prior >= 0:
        raise ValueError(f"kernel_prior (the LogNormal scale of the hyper-parameters' prior) must be >= 0, "
                         f"got {kernel_prior}")


def time_valid(x: Tensor, mask: Tensor | None) -> Tensor:
    """``(B, T)`` bool: True up to and including each sequence's last time step with an observed entry."""
    if mask is None:
        return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    seen = mask.any(-1)
    return seen.flip(-1).cummax(-1).values.flip(-1)  # some observed step at or after t


def check_sequence(x: Tensor, mask: Tensor | None, x_dim: int, likelihood: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, T, D_x)`` data for ``likelihood`` and ``mask`` fits it."""
    if x.dim() != 3 or x.shape[-1] != x_dim:
        raise ValueError(f"expected sequence data of shape (B, T, {x_dim}), got {tuple(x.shape)}; "
                         f"set model.x_dim={x.shape[-1] if x.dim() else '?'} or add a time axis")
    check_mask(mask, x)
    check_x(x.reshape(-1, x_dim), x_dim, likelihood)


def masked_x_dist(likelihood: str, out: Tensor, scale: Tensor | None, mask: Tensor | None) -> dist.Distribution:
    """p(x | decoder output) with unobserved entries left out: event shape ``(T, D_x)``.

    ``out`` is ``(..., B, T, D_x)``; where ``mask`` (``(B, T, D_x)`` bool) is False the log density
    is 0, so the values there do not enter the likelihood.
    """
    return x_dist(likelihood, out, scale, mask, event_dims=2)


class SequenceModel(PyroModule):
    """p(z) p(x | z) for sequences: a prior over ``z`` ``(B, T, D_z)`` and a per-frame MLP decoder.

    Subclasses define :meth:`z_prior`; ``x_t | z_t ~ p(x | decoder(z_t))``, masked.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden_dims: tuple[int, ...], activation: str,
                 likelihood: str) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
        self.x_dim, self.z_dim, self.likelihood = x_dim, z_dim, likelihood
        self.decoder = MLP(z_dim, hidden_dims[::-1], x_dim, activation)
        if likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(x_dim))

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_prior(x).expand((len(x),)))
            pyro.sample("x", self.x_dist(z, mask), obs=x)

    def z_prior(self, x: Tensor) -> dist.Distribution:
        """The prior over ``z``: batch shape ``()``, event shape ``(T, D_z)`` for ``x`` ``(B, T, D_x)``."""
        raise NotImplementedError

    def x_dist(self, z: Tensor, mask: Tensor | None = None) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., B, T, D_z)``; event shape ``(T, D_x)``, masked entries left out."""
        scale = F.softplus(self.scale_raw) + 1e-3 if self.likelihood == "gaussian" else None
        return masked_x_dist(self.likelihood, self.decoder(z), scale, mask)

    def validate(self, x: Tensor, mask: Tensor | None = None) -> None:
        check_sequence(x, mask, self.x_dim, self.likelihood)


def sequence_example_data(x_dim: int, likelihood: str, n: int, T: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(x, mask)`` of ``n`` sequences ``(n, T, D_x)`` from :func:`aezoo.data.lds_video`, fit for ``likelihood``.

    Bernoulli kinds get the video squashed to (0, 1) (and binarized for ``bernoulli``).
    """
    from aezoo.data import lds_video

    seqs = lds_video(n, T=T, x_dim=x_dim, p_missing=0.2, p_missing_frame=0.2, seed=seed)
    x = seqs.x
    if likelihood != "gaussian":
        x = torch.sigmoid(2 * x)
        if likelihood == "bernoulli":
            x = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))
        x = x.where(seqs.mask, 0.0)
    return x, seqs.mask


@torch.no_grad()
def impute(ae, x: Tensor, mask: Tensor, num_samples: int = 20) -> Tensor:
    """Fill the unobserved entries of ``x`` with the posterior predictive mean.

    ``E[x | z]`` under the decoder, averaged over ``num_samples`` draws of ``z`` from the guide's
    ``posterior(x, mask)`` (the models' guides in :mod:`aezoo.guides.structured` have one).

    Args:
        ae: a sequence autoencoder (``svae``, ``gp_vae``, ``markov_gp_vae``).
        x, mask: ``(B, T, D_x)``; mask True where observed.

    Returns:
        ``(B, T, D_x)``: ``x`` where observed, the imputed mean elsewhere.
    """
    z = ae.guide.posterior(x, mask).rsample((num_samples,))  # (S, B, T, D_z)
    x_hat = ae.model.x_dist(z).mean.mean(0)
    return x.where(mask, x_hat)
