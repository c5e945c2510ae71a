"""The compiled path: ELBO and importance weights from one minimal handler, checked against Pyro's.

Pyro's ``TraceMeanField_ELBO`` / ``Trace_ELBO`` and the engines' ``poutine.trace`` + ``replay``
pairs build ``Trace`` objects, copy every message, prune subsample sites, re-check site shapes
and supports and compute score parts on every step. For a model whose sites are fixed per input
shape (the common case) none of that is needed after the first step: here model and guide run
under ONE small :class:`Sites` handler that records each sample message (its ``fn``, ``value``,
``scale``, ``mask``, plates) and replays the guide's draws into the model, and the objective is
summed from those messages as a pure tensor function:

* :func:`mean_field_elbo`: the value and gradient of ``TraceMeanField_ELBO`` (closed-form
  KL(q || p) where registered, ``log p - log q`` otherwise) or, with ``analytic_kl=False``, of
  ``Trace_ELBO`` for fully reparameterised guides; plate scales and masks as Pyro applies them;
* :func:`trace_pair`: the :class:`aezoo.traces.Traces` of :func:`aezoo.traces.trace_pair` (the
  IWAE/DReG log-weights and :func:`aezoo.inference.estimators.stopped_guide_log_prob`), with
  plain dicts of messages in place of Pyro traces.

Which path runs is decided per fit by :func:`choose`: on the first ``CHECK_ROWS`` rows of the fit's
first minibatch both paths run from the same seed and the compiled one is taken only when the loss
and every parameter gradient agree (relative ``RTOL``, float32); it keeps the :func:`signature` of
those sites. A later call whose sites differ (a labelled batch of M2, a new latent) runs Pyro's path for that
call. Anything the check cannot prove equal (enumeration, ``TraceGraph_ELBO``, relaxations, the
capacity objective, score-function terms) stays on Pyro's path, the reference. Model and guide run
under :func:`direct_attributes`, which skips PyroModule's ``pyro.param`` messages for plain parameters
and submodules (nothing here reads them) and enters the modules' call context once for both. The summed
function is not passed to ``torch.compile`` (not tried: the model and guide code around it and the
distribution objects stay Python either way). On a 784-200-200-50 VAE (``benchmarks/svi_overhead.py``,
one thread) a fit of 20 steps of B = 100 took 1.59x the plain loop's time before those two skips and
~1.38x after, with bitwise-identical losses and parameters.

References:
    1. Pyro: Deep Universal Probabilistic Programming, Bingham et al., arXiv:1810.09538.
    2. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
"""

from __future__ import annotations

import random
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Callable, Iterator

import numpy
import pyro
import torch
from pyro.distributions.util import scale_and_mask
from pyro.nn import PyroModule
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor
from torch.distributions import kl_divergence

from aezoo.core import Autoencoder, rows
from aezoo.progress import current_epoch
from aezoo.traces import Traces, max_plate_nesting

PATHS = ("pyro", "compiled")
RTOL = 1e-5  # float32 sums of a few thousand terms in another order differ by ~1e-7 relative
ATOL = 1e-6  # for gradients that are zero up to rounding
CHECK_ROWS = 8  # data the one-step check uses (of the first minibatch)


class Nodes:
    """A trace's stand-in: ``nodes`` maps site name -> the sample message (``fn``, ``value``, ``scale``, ...)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}


class Sites(Messenger):
    """Record every sample message into ``self.trace.nodes``; replay ``values`` into non-observed sites.

    Outermost of the handlers, so plates, ``LatentScale`` and the like have set ``scale`` and ``mask``.
    """

    def __init__(self, values: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        self.values = values
        self.trace = Nodes()

    def _pyro_sample(self, msg) -> None:
        if self.values is not None and not msg["is_observed"] and msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True

    def _pyro_post_sample(self, msg) -> None:
        if not isinstance(msg["fn"], _Subsample):  # plates' subsample sites (Pyro's prune_subsample_sites)
            self.trace.nodes[msg["name"]] = msg


@contextmanager
def direct_attributes(ae: Autoencoder) -> Iterator[None]:
    """Inside: PyroModule bookkeeping that :class:`Sites` does not need is skipped; everything is restored after.

    * The ``nn.Parameter`` s and submodules of ``ae``'s PyroModules are plain attributes. PyroModule's
      ``__getattr__`` issues a ``pyro.param`` message through the handler stack for every parameter of a plain
      ``nn.Module`` child and every ``nn.Parameter`` it returns (~1.5 ms of a 784-200-200-50 VAE's 20 ms step);
      :class:`Sites` ignores param messages, so the same objects are found by ordinary lookup instead.
      PyroParams (constrained) and PyroSamples still go through ``__getattr__``, and unnamed sub-PyroModules
      are left to it (it names them).
    * Without PyroSamples anywhere in ``ae``, the PyroModules' shared call context is entered once around
      guide and model rather than by each call (the module-local parameter store's scope entered once, not
      twice); its cache, which only PyroSamples use, would otherwise carry a draw from guide to model.

    Whether the fit needed any of that is what :func:`choose` checks: its compiled run is inside this too.
    Not covered: a model that reassigns a sub-PyroModule inside its ``forward`` (none in the zoo) gets a
    ``KeyError`` from ``add_module`` here (it finds the plain attribute); in the check that means Pyro's path.
    """
    placed, contexts, sampled = [], {}, False
    for module in ae.modules():
        if not isinstance(module, PyroModule):
            continue
        sampled = sampled or bool(module.__dict__.get("_pyro_samples"))
        contexts[id(module._pyro_context)] = module._pyro_context
        attrs = module.__dict__
        for table in (module._modules, module._parameters):
            for name, value in table.items():
                if value is None or name in attrs or (isinstance(value, PyroModule) and not value._pyro_name):
                    continue
                attrs[name] = value
                placed.append((attrs, name, value))
    with ExitStack() as stack:
        try:
            for context in () if sampled else contexts.values():
                stack.enter_context(context)
            yield
        finally:
            for attrs, name, value in placed:
                if attrs.get(name) is value:
                    del attrs[name]


def run_pair(model, guide, batch: tuple, num_data: int | None, num_particles: int = 1,
             dim: int | None = None) -> tuple[Nodes, Nodes]:
    """Guide then model (on the guide's draws) under :class:`Sites`; with ``dim`` inside a particle plate.

    ``dim`` is the plate's (negative) dim; ``None`` runs no particle plate (Pyro's ELBOs add none for
    one particle).
    """
    with pyro.plate("num_particles_vectorized", num_particles, dim=dim) if dim is not None else nullcontext():
        with Sites() as q:
            guide(*batch, num_data=num_data)
        values = {n: s["value"] for n, s in q.trace.nodes.items() if not s["is_observed"]}
        with Sites(values) as p:
            model(*batch, num_data=num_data)
    return p.trace, q.trace


def signature(model_tr: Nodes, guide_tr: Nodes) -> tuple:
    """What the check proved equal: per site its name, kind, distribution type and reparameterisation."""
    return tuple((n, s["is_observed"], type(s["fn"]), s["fn"].has_rsample) for tr in (model_tr, guide_tr)
                 for n, s in tr.nodes.items())


def _log_prob_sum(site: dict) -> Tensor:
    return scale_and_mask(site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"]), site["scale"],
                          site["mask"]).sum()


def mean_field_elbo(model_tr: Nodes, guide_tr: Nodes, analytic_kl: bool) -> Tensor:
    """The (plate-scaled) ELBO of one vectorised draw, as ``TraceMeanField_ELBO`` / ``Trace_ELBO`` sum it.

    Needs reparameterised guide sites (``ValueError`` otherwise; Pyro's path handles the rest).
    """
    elbo = 0.0
    for name, site in model_tr.nodes.items():
        if site["is_observed"]:
            elbo = elbo + _log_prob_sum(site)
            continue
        q = guide_tr.nodes.get(name)
        if q is None or not q["fn"].has_rsample:
            raise ValueError(f"site {name!r}: the compiled path needs a reparameterised guide site")
        kl = None
        if analytic_kl:
            try:
                kl = kl_divergence(q["fn"], site["fn"])
            except NotImplementedError:
                kl = None
        if kl is None:
            elbo = elbo + _log_prob_sum(site) - _log_prob_sum(q)
        else:
            kl = scale_and_mask(kl, q["scale"], q["mask"])
            elbo = elbo - (kl.sum() if torch.is_tensor(kl) else kl * q["fn"].batch_shape.numel())
    for name, q in guide_tr.nodes.items():  # auxiliary sites (autoguides)
        if name not in model_tr.nodes:
            if not q["fn"].has_rsample:
                raise ValueError(f"site {name!r}: the compiled path needs a reparameterised guide site")
            elbo = elbo - _log_prob_sum(q)
    return elbo


def negative_elbo(ae: Autoencoder, model, guide, batch: tuple, num_data: int, num_particles: int,
                  analytic_kl: bool, expected: tuple) -> Tensor | None:
    """``-ELBO`` averaged over ``num_particles`` as Pyro's vectorised ELBOs give it, or ``None`` when the
    sites' :func:`signature` is not ``expected`` (:func:`accepts`; the caller then runs Pyro's path)."""
    nesting = max_plate_nesting(ae, *batch)
    with direct_attributes(ae):
        model_tr, guide_tr = run_pair(model, guide, batch, num_data, num_particles,
                                      None if num_particles == 1 else -nesting - 1)
    if not accepts(expected, model_tr, guide_tr):
        return None
    return -mean_field_elbo(model_tr, guide_tr, analytic_kl) / num_particles


def trace_pair(ae: Autoencoder, *batch: Tensor, num_particles: int, num_data: int | None = None) -> Traces:
    """:func:`aezoo.traces.trace_pair` (guide and replayed model, ``K`` particles) through :class:`Sites`."""
    nesting = max_plate_nesting(ae, *batch)
    with direct_attributes(ae), pyro.plate("particles", num_particles, dim=-nesting - 1):
        with Sites() as q:
            ae.guide(*batch, num_data=num_data)
        with Sites({n: s["value"] for n, s in q.trace.nodes.items() if not s["is_observed"]}) as p:
            ae.model(*batch, num_data=num_data)
    return Traces(q.trace, p.trace, nesting, num_particles, len(batch[0]), batch[0].device)


# -- choosing the path --------------------------------------------------------------------------------------------


def _seed(seed: int, device: torch.device) -> None:
    """``pyro.set_rng_seed`` for the streams a check can draw from, without ``torch.manual_seed``'s queueing of
    lazy seeds for absent accelerators (it formats a traceback each: ~0.5 ms, more than the rest of the seeding)."""
    random.seed(seed)
    numpy.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


def _close(a: Tensor, b: Tensor) -> bool:
    """``|a - b| <= ATOL + RTOL |b|`` elementwise (``torch.isclose``); the common bitwise-equal case first."""
    return a.shape == b.shape and (torch.equal(a, b) or bool(torch.isclose(a, b, rtol=RTOL, atol=ATOL).all()))


def _loss_and_grads(loss: Callable[[], Tensor], params: list, seed: int) -> tuple[Tensor, list]:
    _seed(seed, params[0].device if params else torch.device("cpu"))
    value = loss()
    grads = torch.autograd.grad(value, params, allow_unused=True) if value.requires_grad else [None] * len(params)
    return value.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def agree(reference: Callable[[], Tensor], fast: Callable[[], Tensor], params: list, seed: int = 0) -> bool:
    """Whether ``fast()`` and ``reference()`` give the same loss and gradients from the same seed.

    Both run with Pyro's validation as set by the caller; the random streams are left as they were.
    Equal means ``|a - b| <= ATOL + RTOL |b|`` elementwise, for the loss and every gradient.
    """
    device = params[0].device if params else torch.device("cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        ref_value, ref_grads = _loss_and_grads(reference, params, seed)
        try:
            value, grads = _loss_and_grads(fast, params, seed)
        except (ValueError, NotImplementedError, KeyError, RuntimeError):
            return False
    pairs = [(value, ref_value), *zip(grads, ref_grads)]
    return all(_close(a, b) for a, b in pairs)


ANY = ("any",)  # the signature while a check runs the compiled path: whatever the sites are
_trial: dict = {"on": False, "signature": None}


def checked(ae: Autoencoder, engine) -> tuple | None:
    """The signature the compiled path was checked on, inside a fit's steps only; ``None``: Pyro's path.

    Outside a fit (``current_epoch() is None``: evaluation, tests, diagnostics) Pyro's path runs.
    """
    if _trial["on"]:
        return ANY
    if current_epoch() is None:
        return None
    return ae.__dict__.get("_compiled_paths", {}).get(engine)


def accepts(expected: tuple, model_tr: Nodes, guide_tr: Nodes) -> bool:
    """Whether the sites are the checked ones (under a check: always, and their signature is kept)."""
    sig = signature(model_tr, guide_tr)
    if expected is ANY:
        _trial["signature"] = sig
        return True
    return sig == expected


def choose(ae: Autoencoder, engine, batch: tuple, num_data: int, loss: Callable | None = None) -> str:
    """Check ``loss`` (``engine.loss``; an engine passes its own undecorated objective, so that hooks of a
    subclass's ``loss`` see only the fit's steps) on the first ``CHECK_ROWS`` rows of ``batch`` along both paths
    (:func:`agree`) and keep the result for the fit.

    Returns:
        ``"compiled"`` when the compiled path gave the same loss and gradients, else ``"pyro"``.
    """
    batch = rows(batch, slice(0, CHECK_ROWS))  # the sites' structure, not their number, is checked: a small batch
    params = [p for p in ae.parameters() if p.requires_grad]
    loss = engine.loss if loss is None else loss

    # state that a forward pass moves in place (batch-norm statistics, an EMA codebook): each pass starts from
    # it and the check leaves no trace
    state = [(t, t.detach().clone()) for t in (*ae.buffers(), *(p for p in ae.parameters() if not p.requires_grad))]

    def restore() -> None:
        with torch.no_grad():
            for t, saved in state:
                t.copy_(saved)

    def reference() -> Tensor:
        restore()
        return loss(ae, *batch, num_data=num_data)

    def fast() -> Tensor:
        restore()
        _trial.update(on=True, signature=None)
        try:
            return loss(ae, *batch, num_data=num_data)
        finally:
            _trial["on"] = False

    with pyro.validation_enabled(False):  # as in the steps: the warm-up step has checked shapes and supports
        ok = bool(params) and agree(reference, fast, params)
    restore()
    sig = _trial["signature"] if ok else None
    ae.__dict__.setdefault("_compiled_paths", {})[engine] = sig
    return "pyro" if sig is None else "compiled"
