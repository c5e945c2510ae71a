"""An exact JAX twin of a Pyro model's log joint, generated from one trace, for NumPyro's NUTS [1].

:func:`jax_twin` traces the Pyro model once, with its latent values as leaves that require
gradients, and records every call of a torch module. From the trace it emits a NumPyro model
function (no arguments; the data are constants) with the same sites:

* a latent site keeps its name, shape and prior; the prior must be a known distribution
  (:data:`DISTRIBUTIONS`, possibly ``.expand``-ed and ``.to_event``-ed) whose parameters are
  constants (they may not depend on other latents);
* an observed site keeps its value, its ``poutine.scale`` (e.g. ``N / B``) and its distribution; each
  parameter is a constant, a latent itself, or the output of a recorded network call whose
  inputs are the data, latents, constants or other network outputs. Known networks are
  ``nn.Sequential`` (hence :class:`aezoo.nn.MLP`) of ``nn.Linear``, :class:`aezoo.nn.GatedLinear`
  and the activations of :data:`aezoo.nn.ACTIVATIONS`; a ``Linear`` weight or bias is the
  ``PyroSample`` site of that name when there is one (``bayesian_mlp``), else a constant.

Anything else (a factor that depends on latents, a mask, an unknown module or distribution, a
parameter computed outside a known network, discrete latents) raises :class:`NotTwinnable`
naming the site, and the engine falls back to the Pyro backend. NumPyro then handles the
unconstraining transforms as Pyro does (``biject_to`` of each support), so the twin's potential
energy equals Pyro's ``initialize_model`` potential at every unconstrained point (tested to 1e-6
in float64, ``tests/test_jax_twin.py``).

References:
    1. Composable Effects for Flexible and Accelerated Probabilistic Programming in NumPyro,
       Phan, Pradhan & Jankowiak, arXiv:1912.11554.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor, nn

from aezoo.nn import ACTIVATIONS, GatedLinear

# pyro distribution class -> (numpyro class name, parameter names passed by keyword)
DISTRIBUTIONS: dict[type, tuple[str, tuple[str, ...]]] = {
    dist.Normal: ("Normal", ("loc", "scale")),
    dist.LogNormal: ("LogNormal", ("loc", "scale")),
    dist.Cauchy: ("Cauchy", ("loc", "scale")),
    dist.StudentT: ("StudentT", ("df", "loc", "scale")),
    dist.HalfNormal: ("HalfNormal", ("scale",)),
    dist.HalfCauchy: ("HalfCauchy", ("scale",)),
    dist.Exponential: ("Exponential", ("rate",)),
    dist.Gamma: ("Gamma", ("concentration", "rate")),
    dist.Beta: ("Beta", ("concentration1", "concentration0")),
    dist.Laplace: ("Laplace", ("loc", "scale")),
}


class NotTwinnable(ValueError):
    """The model has a site or module the JAX twin cannot express; the message names it."""


def _same(a: Tensor, b: Tensor) -> bool:
    """``a`` is ``b`` in memory, or a broadcast view of it (as distributions store their parameters)."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.dtype != b.dtype or a.data_ptr() != b.data_ptr():
        return False
    try:
        return b.expand(a.shape).stride() == a.stride()
    except RuntimeError:  # not broadcastable to a's shape
        return False


@dataclass
class JaxTwin:
    """A NumPyro model equal in log density to a Pyro model given its data.

    Attributes:
        model: the NumPyro model function (no arguments).
        sites: latent site -> shape, in trace order.
        dtype: the torch dtype of the data (float64 data: run JAX with x64).
    """

    model: Callable[[], None]
    sites: dict[str, torch.Size]
    dtype: torch.dtype


class _Graph:
    """The values a JAX expression can be built from: data, latents and recorded module calls."""

    def __init__(self, latents: dict[str, Tensor], calls: list) -> None:
        self.latents, self.calls = latents, calls

    def expr(self, t: Any, where: str) -> Callable[[dict], Any]:
        """A function ``env -> jnp value`` of ``t``; ``env`` holds ``"latent:<name>"`` values."""
        import jax.numpy as jnp

        if not isinstance(t, Tensor):
            return lambda env, v=t: v
        for name, v in self.latents.items():
            if _same(t, v):
                return lambda env, name=name: env[name]
        if not t.requires_grad:
            const = jnp.asarray(t.detach().cpu().numpy())
            return lambda env: const
        for module, inputs, output in reversed(self.calls):  # the outermost call that produced t
            if isinstance(output, Tensor) and _same(t, output):
                fn = _module_fn(module, self.latents, where)
                args = [self.expr(a, where) for a in inputs]
                return lambda env, fn=fn, args=args: fn(env, *(a(env) for a in args))
        raise NotTwinnable(f"{where} depends on the latents through a computation outside a known network "
                           "(aezoo.nn.MLP, nn.Linear, activations)")


def _linear_param(layer: nn.Linear, name: str, latents: dict) -> Callable:
    import jax.numpy as jnp

    site = f"{getattr(layer, '_pyro_name', '')}.{name}"
    if site in latents:
        return lambda env: env[site]
    p = layer._parameters.get(name)
    if p is None:
        return lambda env: 0.0
    const = jnp.asarray(p.detach().cpu().numpy())
    return lambda env: const


def _activation_fn(m: nn.Module) -> Callable | None:
    import jax
    import jax.numpy as jnp

    if isinstance(m, nn.Tanh):
        return jnp.tanh
    if isinstance(m, nn.ReLU):
        return jax.nn.relu
    if isinstance(m, nn.ELU):
        return lambda h: jax.nn.elu(h, m.alpha)
    if isinstance(m, nn.LeakyReLU):
        return lambda h: jax.nn.leaky_relu(h, m.negative_slope)
    if isinstance(m, nn.GELU):
        return lambda h: jax.nn.gelu(h, approximate=m.approximate == "tanh")
    if isinstance(m, nn.Softplus):  # torch's: linear above the threshold
        return lambda h: jnp.where(h * m.beta > m.threshold, h, jnp.log1p(jnp.exp(h * m.beta)) / m.beta)
    if isinstance(m, nn.Sigmoid):
        return jax.nn.sigmoid
    if isinstance(m, nn.Identity):
        return lambda h: h
    return None


def _module_fn(m: nn.Module, latents: dict, where: str) -> Callable:
    """``(env, *inputs) -> output`` in JAX for a known torch module."""
    import jax

    if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
        w, b = _linear_param(m, "weight", latents), _linear_param(m, "bias", latents)
        return lambda env, h: h @ w(env).T + b(env)
    if isinstance(m, GatedLinear) and type(m).forward is GatedLinear.forward:
        h_fn, g_fn = _module_fn(m.h, latents, where), _module_fn(m.g, latents, where)
        return lambda env, h: h_fn(env, h) * jax.nn.sigmoid(g_fn(env, h))
    if type(m).forward is nn.Sequential.forward:  # MLP and plain Sequentials
        fns = [_module_fn(child, latents, where) for child in m]

        def seq(env, h):
            for f in fns:
                h = f(env, h)
            return h

        return seq
    known = (*ACTIVATIONS.values(), nn.Sigmoid, nn.Identity)
    act = _activation_fn(m)  # to_pyro_module_ makes subclasses (PyroTanh): same forward
    if act is not None and any(isinstance(m, k) and type(m).forward is k.forward for k in known):
        return lambda env, h: act(h)
    raise NotTwinnable(f"{where} goes through module {type(m).__name__}, which the JAX twin does not know")


def _dist_fn(fn, graph: _Graph | None, where: str) -> Callable[[dict], Any]:
    """``env -> numpyro distribution`` for a Pyro distribution; ``graph=None``: its parameters must be constants."""
    import numpyro.distributions as nd

    if isinstance(fn, dist.Independent):
        base, n = _dist_fn(fn.base_dist, graph, where), fn.reinterpreted_batch_ndims
        return lambda env: base(env).to_event(n)
    if isinstance(fn, ExpandedDistribution):
        base, shape = _dist_fn(fn.base_dist, graph, where), tuple(fn.batch_shape)
        return lambda env: base(env).expand(shape)
    if type(fn) is dist.Bernoulli:
        key = "logits" if "logits" in fn.__dict__ else "probs"
        names, cls = (key,), getattr(nd, "BernoulliLogits" if key == "logits" else "BernoulliProbs")
    elif type(fn) in DISTRIBUTIONS:
        cls_name, names = DISTRIBUTIONS[type(fn)]
        cls = getattr(nd, cls_name)
    else:
        raise NotTwinnable(f"{where} has distribution {type(fn).__name__}, which the JAX twin does not know")
    params = {}
    for name in names:
        value = getattr(fn, name)
        if graph is None and isinstance(value, Tensor) and value.requires_grad:
            raise NotTwinnable(f"{where}: its prior's {name} depends on other latents")
        params[name] = (graph or _Graph({}, [])).expr(value, where)
    shape = tuple(fn.batch_shape)
    return lambda env: cls(**{k: p(env) for k, p in params.items()}).expand(shape) if shape else \
        cls(**{k: p(env) for k, p in params.items()})


def jax_twin(model: Callable, data: tuple, init_values: dict[str, Tensor]) -> JaxTwin:
    """The NumPyro twin of ``model(*data)`` (module docstring).

    Args:
        model: a Pyro model (a ``PyroModule`` or a function).
        data: its positional arguments (tensors ``(N, ...)`` and constants), used as constants by the twin.
        init_values: site -> a value of each latent site (constrained), e.g. from an init strategy.

    Returns:
        The :class:`JaxTwin`.

    Raises:
        NotTwinnable: a site or module the twin cannot express (the message names it).
    """
    import jax.numpy as jnp
    import numpyro
    from numpyro import handlers

    latents = {k: v.detach().clone().requires_grad_(True) for k, v in init_values.items()}
    calls: list = []
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i, o))) for m in modules]
    # only the latents require gradients while tracing: what does not depend on them is a constant of the twin
    frozen = [p for m in modules for p in m.parameters(recurse=False) if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with torch.enable_grad():
            tr = prune_subsample_sites(poutine.trace(poutine.condition(model, data=latents)).get_trace(*data))
    finally:
        for h in hooks:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    graph = _Graph(latents, calls)
    steps = []  # (name, dist fn, observed value or None, scale)
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site["infer"].get("_deterministic"):
            continue
        where = f"site {name!r}"
        if site["mask"] is not None:
            raise NotTwinnable(f"{where} is masked")
        if name not in latents and isinstance(site["fn"], dist.Unit):
            raise NotTwinnable(f"{where} is a factor (pyro.factor)")
        if name in latents:
            if site["fn"].support.is_discrete:
                raise NotTwinnable(f"{where} is discrete")
            steps.append((name, _dist_fn(site["fn"], None, where), None, float(site["scale"])))
        elif site["is_observed"]:
            obs = jnp.asarray(site["value"].detach().cpu().numpy())
            steps.append((name, _dist_fn(site["fn"], graph, where), obs, float(site["scale"])))
        else:
            raise NotTwinnable(f"{where} is latent but has no start value")

    def twin() -> None:
        env: dict[str, Any] = {}
        for name, dist_fn, obs, scale in steps:
            with handlers.scale(scale=scale):
                value = numpyro.sample(name, dist_fn(env), obs=obs)
            if obs is None:
                env[name] = value

    return JaxTwin(twin, {k: v.shape for k, v in latents.items()}, next(iter(latents.values())).dtype)


def twin_or_reason(model: Callable, data: tuple, init_values: dict[str, Tensor]) -> tuple[JaxTwin | None, str]:
    """``(twin, "")`` or ``(None, why not)``."""
    try:
        return jax_twin(model, data, init_values), ""
    except NotTwinnable as err:
        return None, str(err)


def to_numpy(values: dict[str, Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in values.items()}
