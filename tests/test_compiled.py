"""The compiled path (aezoo.inference.compiled): chosen only where it equals Pyro's loss and gradients.

Every model x {svi, iwae} that applies: the one-step check either picks the compiled path, and then the compiled
loss and every gradient equal Pyro's on another seed, batch size and ``num_data`` (an independent re-check), or
falls back to Pyro's path. Constructed wrong compiled paths (a value off by 1e-3, a gradient cut) must be refused.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from aezoo.diagnostics.likelihood import importance_estimate
from aezoo.inference import compiled
from aezoo.likelihoods import check_x
from aezoo.models import MODELS
from aezoo.traces import log_weights
from tests.conftest import skip_unless_applies

ENGINE_NAMES = ("svi", "iwae")
VAE_FAMILY = ("vae", "info_vae", "vamp_vae", "hvae", "vlae")  # must compile (Gaussian guides, fixed sites)


def applicable(engine_name: str, model_name: str, tiny, engine):
    """``(ae, data, engine)`` at tiny sizes, skipping a pair whose check says "does not apply"."""
    ae, data = tiny(model_name, n=10)
    eng = engine(engine_name, model=model_name)
    skip_unless_applies(eng, ae, *data)
    eng.loss(ae, *data, num_data=len(data[0]))  # warm-up, as in fit: lazy parameters, cached plate nesting
    return ae, data, eng


def both_paths(eng, ae, data, num_data: int, seed: int):
    """Pyro's and the compiled path's (loss, gradients) from the same seed."""
    params = [p for p in ae.parameters() if p.requires_grad]

    def fast():
        compiled._trial.update(on=True, signature=None)
        try:
            return eng.loss(ae, *data, num_data=num_data)
        finally:
            compiled._trial["on"] = False

    with torch.random.fork_rng():
        ref = compiled._loss_and_grads(lambda: eng.loss(ae, *data, num_data=num_data), params, seed)
        got = compiled._loss_and_grads(fast, params, seed)
    return ref, got


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_compiled_path_equals_pyro_or_falls_back(model_name, engine_name, tiny, engine):
    ae, data, eng = applicable(engine_name, model_name, tiny, engine)
    path = eng.compile(ae, data, num_data=len(data[0]) + 7)
    assert path in compiled.PATHS
    if model_name in VAE_FAMILY:
        assert path == "compiled", f"{model_name} x {engine_name} should compile"
    if path == "pyro":
        return
    sub = tuple(d[:6] for d in data)  # another batch size and N than the check saw
    (ref_value, ref_grads), (value, grads) = both_paths(eng, ae, sub, num_data=31, seed=11)
    assert torch.isclose(value, ref_value, rtol=compiled.RTOL, atol=compiled.ATOL)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=compiled.RTOL, atol=compiled.ATOL)


@pytest.mark.parametrize("fault", ["value", "gradient"])
def test_a_compiled_path_that_differs_is_refused(fault, tiny, engine, monkeypatch):
    ae, data, eng = applicable("svi", "vae", tiny, engine)
    assert eng.compile(ae, data, num_data=len(data[0])) == "compiled"
    right = compiled.mean_field_elbo

    def wrong(model_tr, guide_tr, analytic_kl):
        elbo = right(model_tr, guide_tr, analytic_kl)
        if fault == "value":
            return elbo * (1 + 1e-3)
        return elbo.detach() + 0.5 * (elbo - elbo.detach())  # same value, half the gradient

    monkeypatch.setattr(compiled, "mean_field_elbo", wrong)
    assert eng.compile(ae, data, num_data=len(data[0])) == "pyro"
    assert compiled.checked(ae, eng) is None


def test_fit_reports_its_path_and_trains_as_pyro_does(tiny, engine, monkeypatch):
    fits = {}
    for path in ("compiled", "pyro"):
        ae, data = tiny("vae", n=30)
        eng = engine("svi", model="vae", epochs=2, batch_size=8)
        if path == "pyro":
            monkeypatch.setattr(type(eng), "compile", lambda self, ae, batch, num_data: "pyro")
        fits[path] = eng.fit(ae, *data)
        assert bool(fits[path].stats["compiled"]) == (path == "compiled")
    # the same objective on the same draws: only float32 summation order differs
    torch.testing.assert_close(fits["compiled"].losses, fits["pyro"].losses, rtol=1e-5, atol=1e-5)


def test_other_sites_than_the_checked_run_pyros_path(tiny, engine):
    ae, data, eng = applicable("svi", "vae", tiny, engine)
    eng.compile(ae, data, num_data=len(data[0]))
    checked = ae.__dict__["_compiled_paths"][eng]
    assert compiled.negative_elbo(ae, ae.model, ae.guide, data, len(data[0]), 1, True, checked) is not None
    other = checked[:-1]  # a site fewer than checked: the compiled function is not used for these sites
    assert compiled.negative_elbo(ae, ae.model, ae.guide, data, len(data[0]), 1, True, other) is None


def test_compiled_path_only_inside_a_fit(tiny, engine):
    ae, data, eng = applicable("iwae", "vae", tiny, engine)
    assert eng.compile(ae, data, num_data=len(data[0])) == "compiled"
    assert compiled.checked(ae, eng) is None  # evaluation outside a fit's steps: Pyro's path, the reference


def test_importance_estimate_unchanged_by_validation_off_after_the_first_chunk(tiny):
    ae, data = tiny("vae", n=12)
    pyro.set_rng_seed(3)
    est = importance_estimate(ae, *data, num_particles=7, batch_size=5)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        lw = torch.cat([log_weights(ae, *(d[i:i + 5] for d in data), num_particles=7) for i in (0, 5, 10)], 1)
    torch.testing.assert_close(est.log_likelihood, lw.logsumexp(0) - math.log(7))


@pytest.mark.parametrize("likelihood, values, message", [
    ("bernoulli", [0.0, 0.5], "binary"), ("bernoulli", [0.0, math.nan], "NaN"),
    ("continuous_bernoulli", [0.2, 1.5], r"\[0, 1\]"), ("continuous_bernoulli", [0.2, math.inf], "NaN"),
    ("gaussian", [0.2, -math.inf], "NaN"),
])
def test_check_x_in_one_pass_keeps_its_errors(likelihood, values, message):
    check_x(torch.tensor([[0.0, 1.0]]), 2, likelihood)  # fine data pass
    with pytest.raises(ValueError, match=message):
        check_x(torch.tensor([values]), 2, likelihood)
