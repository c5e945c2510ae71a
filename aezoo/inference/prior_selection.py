"""Prior hyper-parameter selection for Bayesian autoencoders by the distributional sliced-Wasserstein distance.

Tran et al. [1] choose the prior ``p_psi(theta)`` over a Bayesian autoencoder's weights before
sampling the posterior, by analogy with type-II maximum likelihood: the distribution of the
autoencoder's *outputs* when its weights are drawn from the prior,

    x ~ data,   theta ~ p_psi(theta),   x~ ~ p(x~ | f(x; theta))   (or the decoder mean f(x; theta)),

should be close to the data distribution. Closeness is the distributional sliced-Wasserstein
distance (DSW) [2], estimated from samples, so it scales to image dimensions and needs no density:

    psi* = argmin_psi DSW_p(p_psi(x~), pi(x)).

Here ``psi`` is the ``prior_scale`` ``s`` of :class:`aezoo.models.bayesian_ae.Config`: weights
``N(0, s^2 / fan_in)``, biases ``N(0, s^2)``. Prior draws are reparameterised,
``theta = (s / s_0) * theta_0`` with ``theta_0`` drawn from the model's own prior at its configured
scale ``s_0`` (``= s * eps / sqrt(fan_in)`` for weights, as ``bayesian_mlp`` builds them), so the
DSW is differentiable in ``log s``; the draws enter the model through ``poutine.condition`` on its
``PyroSample`` sites. Each step uses ``num_weight_draws`` prior draws, each applied to its share of
a minibatch, so the outputs are draws from the prior predictive mixture, not from one network.

DSW [2]: for ``mu, nu`` on ``R^D``,

    DSW_p(mu, nu; C) = sup_{sigma in M_C} ( E_{theta ~ sigma} W_p^p(theta # mu, theta # nu) )^(1/p),
    M_C = { sigma on the unit sphere : E_{theta, theta' ~ sigma} |theta^T theta'| <= C },

with ``theta # mu`` the one-dimensional projection of ``mu`` on ``theta``. As in [2], ``sigma`` is
the push-forward of the uniform distribution on the sphere by a learned map
``f_phi(u) = A u / |A u|`` (:class:`Slicer`, a linear layer then normalisation), and the
constraint enters through its Lagrangian: ``phi`` maximises
``(mean_l W_p^p)^(1/p) - lambda_C mean_{l, l'} |f(u_l)^T f(u_l')|`` over ``L`` directions (the
diversity regulariser; ``lambda_C = diversity_weight``). ``C -> 1`` gives max-sliced Wasserstein,
uniform ``sigma`` the plain sliced Wasserstein of :func:`aezoo.inference.penalties.sliced_wasserstein`,
whose exact one-dimensional ``W_p^p`` this module reuses per direction. The inner maximisation
over ``phi`` and the outer minimisation over ``psi`` alternate (``slice_steps`` Adam steps on
``phi``, then one on ``log s``), as in [1, Algorithm 1].

Shapes: data ``x`` ``(N, D_x)``; samples for :func:`dsw` ``(n, D)`` each (the same ``n``).

References:
    1. Model Selection for Bayesian Autoencoders, Tran, Rossi, Milios, Michiardi, Bonilla &
       Filippone, arXiv:2106.06245 (NeurIPS 2021).
    2. Distributional Sliced-Wasserstein and Applications to Generative Modeling, Nguyen, Ho,
       Pham & Bui, arXiv:2002.07367 (ICLR 2021).
    3. The Concrete Distribution, Maddison, Mnih & Teh, arXiv:1611.00712; Categorical
       Reparameterization with Gumbel-Softmax, Jang, Gu & Poole, arXiv:1611.01144.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor, nn

from aezoo.core import Autoencoder
from aezoo.inference.penalties import sliced_wasserstein

OUTPUTS = ("auto", "mean", "sample", "relaxed")
RELAXED_TEMPERATURE = 0.1


class Slicer(nn.Module):
    """The slicing distribution of DSW [2]: ``f(u) = A u / |A u|`` for ``u`` uniform on the sphere ``S^{D-1}``.

    ``A`` ``(D, D)`` starts at the identity (so ``sigma`` starts uniform, the sliced Wasserstein
    distance) and is trained to maximise the distance minus the diversity penalty.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))

    def forward(self, u: Tensor) -> Tensor:
        """Directions ``(L, D)`` on the unit sphere for base draws ``u`` ``(L, D)``."""
        out = self.linear(u)
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def directions(self, num: int) -> Tensor:
        """``num`` directions ``(num, D)`` from ``sigma`` (base draws from the torch RNG)."""
        u = torch.randn(num, self.linear.in_features, dtype=self.linear.weight.dtype,
                        device=self.linear.weight.device)
        return self(u / u.norm(dim=-1, keepdim=True))


def projected_wasserstein(x: Tensor, y: Tensor, directions: Tensor, p: int = 2) -> Tensor:
    """``W_p^p(theta_l # x, theta_l # y)`` per direction ``(L,)``; ``x, y`` ``(n, D)``, ``directions`` ``(L, D)``.

    Each one-dimensional distance is the exact one between the empirical measures (sorted
    projections), computed by :func:`aezoo.inference.penalties.sliced_wasserstein` on ``D = 1``.
    """
    px, py = (x @ directions.T).T.unsqueeze(-1), (y @ directions.T).T.unsqueeze(-1)  # (L, n, 1)
    return sliced_wasserstein(px, py, num_projections=1, p=p)


def diversity(directions: Tensor) -> Tensor:
    """The regulariser of [2]: ``mean_{l, l'} |theta_l^T theta_l'|`` over all pairs (diagonal included), a scalar."""
    return (directions @ directions.T).abs().mean()


def dsw_value(x: Tensor, y: Tensor, directions: Tensor, p: int = 2) -> Tensor:
    """``(mean_l W_p^p(theta_l # x, theta_l # y))^(1/p)``: the DSW objective at fixed directions, a scalar."""
    return projected_wasserstein(x, y, directions, p).mean().pow(1.0 / p)


def train_slicer(slicer: Slicer, optim: torch.optim.Optimizer, x: Tensor, y: Tensor, num_projections: int,
                 steps: int, p: int = 2, diversity_weight: float = 1.0) -> None:
    """``steps`` Adam steps of the inner maximisation of [2] on detached samples ``x``, ``y`` ``(n, D)``."""
    x, y = x.detach(), y.detach()
    for _ in range(steps):
        dirs = slicer.directions(num_projections)
        loss = diversity_weight * diversity(dirs) - dsw_value(x, y, dirs, p)
        optim.zero_grad()
        loss.backward()
        optim.step()


def dsw(x: Tensor, y: Tensor, num_projections: int = 100, p: int = 2, steps: int = 100, lr: float = 0.01,
        diversity_weight: float = 1.0, seed: int | None = 0) -> Tensor:
    """Distributional sliced-Wasserstein distance ``DSW_p`` [2] between two empirical measures.

    A fresh :class:`Slicer` is trained for ``steps`` Adam steps (learning rate ``lr``) to maximise
    ``DSW - diversity_weight * diversity``, then the distance is evaluated on new directions.
    It is an estimate of a supremum from finite samples: for two samples of one distribution it is
    small but positive (of the order of the one-dimensional ``W_p`` between two samples of size ``n``,
    which falls as ``n`` grows), and it is at least the sliced and at most the max-sliced Wasserstein
    distance up to Monte Carlo error.

    Args:
        x: ``(n, D)`` draws from mu.
        y: ``(n, D)`` draws from nu (the same ``n``).
        num_projections: directions ``L`` per step and for the final value.
        p: the order, ``>= 1``.
        steps: inner optimisation steps.
        lr: Adam learning rate of the slicer.
        diversity_weight: ``lambda_C`` of the Lagrangian (larger: more spread directions, closer to SW).
        seed: seeds the directions under a forked torch RNG (None: use the global RNG).

    Returns:
        A scalar tensor, ``DSW_p`` in the units of the data (not its ``p``-th power), without gradient.
    """
    if x.shape[-2] != y.shape[-2] or x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"dsw needs two (n, D) samples of the same size, got {tuple(x.shape)} and {tuple(y.shape)}")
    with torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
        if seed is not None:
            torch.manual_seed(seed)
        slicer = Slicer(x.shape[-1]).to(x)
        optim = torch.optim.Adam(slicer.parameters(), lr=lr)
        with torch.enable_grad():
            train_slicer(slicer, optim, x, y, num_projections, steps, p, diversity_weight)
        with torch.no_grad():
            return dsw_value(x, y, slicer.directions(num_projections), p)


@dataclass
class PriorSelection:
    """What :func:`select_prior` found.

    Attributes:
        prior_scale: the selected ``s`` (Polyak average of ``log s`` over the last ``average_last``
            of the steps), for ``bayesian_ae.Config(prior_scale=...)``.
        initial_scale: ``s`` at the start.
        curve: ``(T,)`` the DSW objective at each step (minibatch estimate, data units).
        scales: ``(T,)`` ``s`` at each step (before that step's update).
        sites: the prior sites whose scale was tuned.
        settings: the arguments of the call (JSON-ready).
    """

    prior_scale: float
    initial_scale: float
    curve: Tensor
    scales: Tensor
    sites: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def config(self, cfg):
        """A copy of a ``bayesian_ae.Config`` with the selected ``prior_scale``."""
        import dataclasses

        return dataclasses.replace(cfg, prior_scale=self.prior_scale)

    def to_dict(self) -> dict:
        """JSON-ready: ``prior_scale, initial_scale, dsw_first, dsw_last`` (means over the first / last
        tenth of the steps), ``curve`` and ``scales`` (lists), ``sites`` and ``settings``."""
        tenth = max(1, len(self.curve) // 10)
        d = asdict(self)
        d.update(curve=self.curve.tolist(), scales=self.scales.tolist(),
                 dsw_first=float(self.curve[:tenth].mean()), dsw_last=float(self.curve[-tenth:].mean()))
        return d


def prior_sites(ae: Autoencoder, x: Tensor) -> dict[str, Tensor]:
    """Site -> prior standard deviation ``(site_shape)`` at the configured scale, for every latent site.

    Raises:
        ValueError: a latent site whose prior is not a zero-mean Normal (the reparameterisation
            ``theta = (s / s_0) theta_0`` would not hold), or a model without latent sites.
    """
    with torch.no_grad():
        tr = prune_subsample_sites(poutine.trace(ae.model).get_trace(x[:1]))
    out = {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        fn = site["fn"]
        while hasattr(fn, "base_dist"):
            fn = fn.base_dist
        if type(fn).__name__ != "Normal" or bool((fn.loc != 0).any()):
            raise ValueError(f"select_prior needs zero-mean Normal priors; site {name!r} has {site['fn']}")
        out[name] = fn.scale.expand(site["value"].shape).detach()
    if not out:
        raise ValueError("select_prior: the model has no latent (weight) sites to put a prior on")
    return out


def _resolve_output(ae: Autoencoder, x: Tensor, output: str) -> str:
    """``output`` with ``"auto"`` replaced: ``"sample"`` if the likelihood has ``rsample``, ``"relaxed"`` for a
    Bernoulli one, else ``"mean"``; raises ``ValueError`` where the choice does not apply."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; choose one of {OUTPUTS}")
    with torch.no_grad():
        fn = poutine.trace(ae.model).get_trace(x[:1]).nodes["x"]["fn"]
    base = fn.base_dist if hasattr(fn, "base_dist") else fn
    bernoulli = isinstance(base, dist.Bernoulli)
    if output == "auto":
        return "sample" if fn.has_rsample else "relaxed" if bernoulli else "mean"
    if output == "sample" and not fn.has_rsample:
        raise ValueError(f"output='sample' needs a reparameterisable likelihood, not {type(base).__name__}: "
                         "use output='relaxed' (Bernoulli) or 'mean'")
    if output == "relaxed" and not bernoulli:
        raise ValueError(f"output='relaxed' applies to the Bernoulli likelihood, not {type(base).__name__}")
    return output


def _outputs(ae: Autoencoder, xb: Tensor, sd: dict[str, Tensor], ratio: Tensor, draws: int, output: str) -> Tensor:
    """Outputs ``(B, D_x)`` of the autoencoder on ``xb`` under ``draws`` reparameterised prior draws."""
    outs = []
    for chunk in xb.tensor_split(draws):
        if not len(chunk):
            continue
        values = {k: ratio * s * torch.randn_like(s) for k, s in sd.items()}
        tr = poutine.trace(poutine.condition(ae.model, data=values)).get_trace(chunk)
        fn = tr.nodes["x"]["fn"]
        if output == "relaxed":  # a Concrete / relaxed Bernoulli draw [3]: near-binary and reparameterised
            base = fn.base_dist if hasattr(fn, "base_dist") else fn
            outs.append(dist.RelaxedBernoulli(torch.tensor(RELAXED_TEMPERATURE), logits=base.logits).rsample())
        else:
            outs.append(fn.rsample() if output == "sample" else fn.mean)
    return torch.cat(outs)


def select_prior(
    ae: Autoencoder,
    x: Tensor,
    num_steps: int = 300,
    batch_size: int = 256,
    num_weight_draws: int = 16,
    lr: float = 0.05,
    init_scale: float | None = None,
    num_projections: int = 100,
    p: int = 2,
    slice_steps: int = 5,
    slice_warmup: int = 50,
    slice_lr: float = 0.01,
    diversity_weight: float = 1.0,
    output: str = "auto",
    average_last: float = 0.25,
    seed: int = 0,
) -> PriorSelection:
    """Choose the prior scale of a Bayesian autoencoder by minimising DSW(prior outputs, data) [1].

    Per step: a minibatch ``x_b`` of ``batch_size`` data; ``num_weight_draws`` prior draws of all
    weight sites at the current ``s`` (reparameterised), each applied to its share of ``x_b``; the
    outputs ``x~`` ``(B, D_x)``; ``slice_steps`` steps of the slicer on ``DSW(x~, x_b)``; one Adam
    step on ``log s`` down the gradient of ``DSW(x~, x_b)``. Runs under a forked torch RNG seeded
    with ``seed``; the autoencoder is not changed.

    Args:
        ae: a ``bayesian_ae`` autoencoder (any model whose latent sites have zero-mean Normal priors
            and whose observed site is ``"x"``).
        x: data ``(N, D_x)``, as the model takes them (binary for the Bernoulli likelihood).
        num_steps: outer steps ``T``.
        batch_size: data per step ``B`` (capped at ``N``).
        num_weight_draws: prior draws per step.
        lr: Adam learning rate on ``log s``.
        init_scale: starting ``s``; None: the model's configured ``prior_scale``.
        num_projections: slicing directions ``L`` per step.
        p: Wasserstein order.
        slice_steps, slice_lr, diversity_weight: the inner DSW maximisation (see :func:`dsw`).
        slice_warmup: extra slicer steps before the first step, so that the curve starts from a
            trained slicing distribution rather than the uniform one.
        output: what of ``p(x~ | f(x; theta))`` is compared with the data: ``"sample"`` a
            reparameterised draw (Gaussian and continuous Bernoulli likelihoods), ``"relaxed"`` a
            relaxed Bernoulli (Concrete [3]) draw at temperature ``RELAXED_TEMPERATURE`` (0.1: near
            0/1 pixels, like binary data), ``"mean"`` the decoder mean (pixel probabilities for the
            Bernoulli likelihood, which binary data match poorly), ``"auto"`` a draw where the
            likelihood can be reparameterised, ``"relaxed"`` for the Bernoulli one, else the mean.
        average_last: share of the final steps whose ``log s`` is averaged into the result.
        seed: seeds minibatches, prior draws and directions.

    Returns:
        :class:`PriorSelection` with the selected ``prior_scale`` and the per-step objective.
    """
    if num_steps < 1 or not 0 < average_last <= 1:
        raise ValueError("need num_steps >= 1 and 0 < average_last <= 1")
    ae.validate(x)
    s0 = float(ae.config.prior_scale)
    init = float(init_scale if init_scale is not None else s0)
    if not init > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    settings = {k: v for k, v in locals().items() if k not in ("ae", "x", "s0", "init")}
    device = x.device
    sd = prior_sites(ae, x)
    n = len(x)
    bsz = min(batch_size, n)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        output = _resolve_output(ae, x, output)
        log_s = torch.tensor(math.log(init), device=device, requires_grad=True)
        optim = torch.optim.Adam([log_s], lr=lr)
        slicer = Slicer(x.shape[-1]).to(x)
        slicer_optim = torch.optim.Adam(slicer.parameters(), lr=slice_lr)
        curve, path = [], []
        for _ in range(num_steps):
            xb = x[torch.randperm(n, device=device)[:bsz]]
            ratio = log_s.exp() / s0
            out = _outputs(ae, xb, sd, ratio, num_weight_draws, output)
            inner = slice_steps + (slice_warmup if not curve else 0)
            train_slicer(slicer, slicer_optim, out, xb, num_projections, inner, p, diversity_weight)
            with torch.no_grad():
                dirs = slicer.directions(num_projections)
            value = dsw_value(out, xb, dirs, p)
            optim.zero_grad()
            value.backward()
            optim.step()
            curve.append(value.item())
            path.append(ratio.item() * s0)
    last = max(1, round(average_last * num_steps))
    chosen = math.exp(torch.tensor(path[-last:]).log().mean().item())
    settings["output"] = output
    return PriorSelection(chosen, init, torch.tensor(curve), torch.tensor(path), sorted(sd), settings)


@torch.no_grad()
def prior_objective(ae: Autoencoder, x: Tensor, scales, num_weight_draws: int = 16, output: str = "auto",
                    num_projections: int = 100, p: int = 2, steps: int = 100, diversity_weight: float = 1.0,
                    seed: int = 0) -> Tensor:
    """``DSW_p(prior outputs, x)`` at each of a grid of ``scales``: ``(len(scales),)``, for plots and checks.

    Uses all of ``x`` ``(N, D_x)`` (keep it to a few hundred rows) with the same prior noise at every
    scale (common random numbers), and a fresh slicer trained ``steps`` steps per scale (:func:`dsw`).
    """
    s0 = float(ae.config.prior_scale)
    sd = prior_sites(ae, x)
    output = _resolve_output(ae, x, output)
    values = []
    for s in scales:
        with torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
            torch.manual_seed(seed)
            out = _outputs(ae, x, sd, torch.tensor(float(s) / s0, device=x.device), num_weight_draws, output)
        values.append(dsw(out, x, num_projections, p, steps, diversity_weight=diversity_weight, seed=seed))
    return torch.stack(values)
