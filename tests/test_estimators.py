"""IWAE-family gradient estimators (standard, STL, DReG) and variants (MIWAE, PIWAE, CIWAE).

Unbiasedness is checked against a reference that never touches the surrogates: a central finite
difference, with common random numbers, of a test-local implementation of each objective over
many draws. Per-datum parameters on the 1-D toy model make one backward pass give thousands of
independent single-datum gradients; on linear_gaussian, gradients along random directions are
averaged over repeated calls.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from toy_model import ToyGuide, ToyModel, toy

from aezoo.core import Autoencoder
from aezoo.inference import ENGINES
from aezoo.models.linear_gaussian import set_exact_guide
from aezoo.traces import log_weights

IWAE = ENGINES["iwae"]
ESTIMATORS = ("standard", "stl", "dreg")
VARIANTS = ("iwae", "piwae", "ciwae")


# -- the toy model with one parameter set per datum -------------------------------------------------


class PerDatumToyModel(ToyModel):
    """The toy model with a learnable shift per datum: ``x_b | z_b ~ N(z_b + c_b, 1)`` (``c = 0``: the toy)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z + self.c[: len(x), None], 1.0).to_event(1), obs=x)


class PerDatumToyGuide(ToyGuide):
    """The toy guide ``N(a_b x_b + b_b, s_b^2)`` with its own ``a, b, s`` per datum."""

    def __init__(self, a: float, b: float, s: float, n: int) -> None:
        super().__init__(a, b, s)
        self.a, self.b, self.s = (nn.Parameter(torch.full((n,), v, dtype=torch.float64)) for v in (a, b, s))

    def forward(self, x, *covariates, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=x):
            a, b, s = (p[: len(x), None] for p in (self.a, self.b, self.s))  # [:len(x)]: shape probes use 2 data
            return pyro.sample("z", dist.Normal(a * x + b, s).to_event(1))


def per_datum_toy(a: float, b: float, s: float, n: int, x0: float = 1.3) -> tuple[Autoencoder, torch.Tensor]:
    ae = Autoencoder(PerDatumToyModel(n), PerDatumToyGuide(a, b, s, n), config=None, name="toy")
    return ae, torch.full((n, 1), x0, dtype=torch.float64)


def toy_params(ae: Autoencoder) -> dict[str, nn.Parameter]:
    return {"c": ae.model.c, "a": ae.guide.a, "b": ae.guide.b, "s": ae.guide.s}


def per_datum_grads(eng, ae: Autoencoder, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """``name -> (n,)`` single-datum gradients of the objective (minus the loss) from one step."""
    ae.zero_grad()
    pyro.set_rng_seed(seed)
    eng.loss(ae, x, num_data=len(x)).backward()
    return {k: -len(x) * p.grad.clone() for k, p in toy_params(ae).items()}


# -- a reference implementation of the objectives, independent of aezoo.inference.estimators ------


def reference_objective(eng, ae: Autoencoder, x: torch.Tensor, part: str) -> torch.Tensor:
    """``(n,)`` per-datum objective of ``eng`` that ``part`` ("model" or "guide") parameters follow."""
    m, k = eng.num_groups, eng.num_particles
    lw = log_weights(ae, x, num_particles=m * k).reshape(m, k, -1)
    groups = (torch.logsumexp(lw, 1) - math.log(k)).mean(0)
    if eng.variant == "ciwae":
        return eng.ciwae_beta * lw.mean((0, 1)) + (1 - eng.ciwae_beta) * groups
    if eng.variant == "piwae" and part == "model":
        return torch.logsumexp(lw.reshape(m * k, -1), 0) - math.log(m * k)
    return groups


@torch.no_grad()
def finite_difference(eng, ae: Autoencoder, x: torch.Tensor, direction: dict, part: str, seed: int,
                      h: float = 1e-5) -> torch.Tensor:
    """``(n,)`` central difference of the per-datum objective along ``direction`` (param -> step), common draws."""
    values = []
    for sign in (1.0, -1.0):
        for p, v in direction.items():
            p.add_(sign * h * v)
        pyro.set_rng_seed(seed)
        values.append(reference_objective(eng, ae, x, part))
        for p, v in direction.items():
            p.sub_(sign * h * v)
    return (values[0] - values[1]) / (2 * h)


# -- the toy model: unbiasedness, per parameter ---------------------------------------------------

A, B, S = 0.3, 0.2, 1.0  # an imperfect guide; the exact posterior is a = 1/2, b = 0, s = sqrt(1/2)

UNBIASED = [  # (estimator, variant, M, K); STL only where it is unbiased: the ELBO (K = 1)
    ("standard", "iwae", 1, 8),
    ("dreg", "iwae", 1, 8),
    ("dreg", "iwae", 2, 4),
    ("dreg", "ciwae", 1, 8),
    ("dreg", "piwae", 2, 4),
    ("standard", "piwae", 2, 4),
    ("standard", "ciwae", 2, 4),
    ("stl", "iwae", 1, 1),
    ("stl", "iwae", 4, 1),
]


def toy_comparison(estimator, variant, m, k, n_est=20_000, n_ref=100_000):
    """``name -> (estimator mean, reference mean, combined SE)`` for c (model) and a, b, s (guide)."""
    eng = IWAE(num_particles=k, num_groups=m, estimator=estimator, variant=variant, ciwae_beta=0.3)
    ae, x = per_datum_toy(A, B, S, n_est)
    grads = per_datum_grads(eng, ae, x, seed=1)
    ref_ae, ref_x = per_datum_toy(A, B, S, n_ref)
    out = {}
    for name, p in toy_params(ref_ae).items():
        part = "model" if name == "c" else "guide"
        fd = finite_difference(eng, ref_ae, ref_x, {p: torch.ones_like(p)}, part, seed=2)
        se = math.sqrt(grads[name].var() / n_est + fd.var() / n_ref)
        out[name] = (grads[name].mean().item(), fd.mean().item(), se)
    return out


@pytest.mark.parametrize("estimator, variant, m, k", UNBIASED)
def test_toy_gradient_is_unbiased_for_its_objective(estimator, variant, m, k):
    # 4 parameters x 9 cases, each two-sided at 4.5 SE (normal: 6.8e-6): false failure ~2.5e-4.
    # Measured |z| at most 0.8, except 2.4 for s with STL at K = 1.
    for name, (mean, ref, se) in toy_comparison(estimator, variant, m, k).items():
        assert abs(mean - ref) < 4.5 * se, (name, mean, ref, se)


@pytest.mark.parametrize("variant", VARIANTS)
def test_toy_stl_is_biased_for_the_guide_when_k_exceeds_one(variant):
    # STL drops sum_k w~_k d log q(z_k) / d phi, whose mean is zero only for K = 1 (Tucker et al.
    # 2018, arXiv:1810.04152): for K = 8 the guide gradient is off. Its model gradient is the standard one,
    # hence unbiased (4.5 SE, two-sided: 6.8e-6). The guide bias measured 130-240 SE for s; demanding
    # 8 SE leaves room for chance.
    out = toy_comparison("stl", variant, 2 if variant == "piwae" else 1, 8 if variant != "piwae" else 4)
    mean, ref, se = out["c"]
    assert abs(mean - ref) < 4.5 * se, ("c", mean, ref, se)
    mean, ref, se = out["s"]
    assert abs(mean - ref) > 8 * se, ("s", mean, ref, se)


# -- exact posterior: zero guide-gradient variance for STL and DReG -------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_toy_exact_posterior_gives_zero_guide_gradients(estimator):
    ae, x = per_datum_toy(0.5, 0.0, math.sqrt(0.5), 2000)
    grads = per_datum_grads(IWAE(num_particles=8, estimator=estimator), ae, x, seed=3)
    guide = torch.stack([grads[k] for k in "abs"])
    if estimator == "standard":  # the score term: sd ~1 / (s sqrt(K)) = 0.5 per datum for b
        assert (guide.std(1) > 1e-2).all(), guide.std(1)
    else:  # every single-datum estimate vanishes (up to float64 rounding)
        assert guide.abs().max() < 1e-10, guide.abs().max()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_linear_gaussian_exact_posterior_gives_zero_guide_gradients(estimator, linear_gaussian):
    ae, x = linear_gaussian(20)
    set_exact_guide(ae)
    eng = IWAE(num_particles=8, estimator=estimator)
    sizes = []
    for seed in range(5):
        ae.zero_grad()
        pyro.set_rng_seed(seed)
        eng.loss(ae, x, num_data=len(x)).backward()
        sizes.append(max(p.grad.abs().max().item() for p in ae.guide.parameters()))
        assert all(p.grad.abs().max() > 0 for p in ae.model.parameters() if p.requires_grad)
    if estimator == "standard":
        assert min(sizes) > 1e-3, sizes
    else:
        assert max(sizes) < 1e-10, sizes


# -- DReG lowers the guide-gradient variance ------------------------------------------------------


def test_toy_dreg_guide_variance_is_below_standard():
    # 20,000 single-datum gradients each: a variance ratio is known to ~2%. With this guide (wider
    # than the posterior) the measured ratios were 0.004 (a, b) and 0.003 (s) for K = 8; demanding
    # < 0.1 fails only if DReG lost its edge.
    n = 20_000
    var = {}
    for estimator in ("standard", "dreg"):
        ae, x = per_datum_toy(A, B, S, n)
        grads = per_datum_grads(IWAE(num_particles=8, estimator=estimator), ae, x, seed=4)
        var[estimator] = torch.stack([grads[k].var() for k in "abs"])
    ratio = var["dreg"] / var["standard"]
    assert (ratio < 0.1).all(), ratio


@pytest.mark.parametrize("s", [1.0, 0.4])
def test_toy_single_particle_variances_match_closed_forms(s):
    # K = 1, q = N(m, s^2), z = m + s eps: the standard b-gradient is d log p(x, z) / dz = x - 2z,
    # variance 4 s^2; STL (= DReG at K = 1) keeps -d log q / dz, giving x - 2m + (1/s - 2s) eps,
    # variance (1/s - 2s)^2. So STL/DReG are noisier than the standard estimator for guides
    # narrower than s = 1/2 (the posterior's s is 0.71): the variance reduction is not universal.
    # 20,000 draws: relative SE of a variance sqrt(2 / n) = 1%; 4.5 SE two-sided (4 checks: ~3e-5).
    n = 20_000
    for estimator, expected in (("standard", 4 * s**2), ("stl", (1 / s - 2 * s) ** 2)):
        ae, x = per_datum_toy(0.0, 0.6, s, n)
        var = per_datum_grads(IWAE(num_particles=1, estimator=estimator), ae, x, seed=8)["b"].var().item()
        assert abs(var / expected - 1) < 4.5 * math.sqrt(2 / n), (estimator, var, expected)


def test_linear_gaussian_dreg_guide_variance_is_below_standard(linear_gaussian):
    # Near the posterior (exact guide, every parameter moved by N(0, 0.03^2)) DReG's guide gradient
    # is far less noisy: the summed coordinate variance over 100 draws of a 10-datum batch measured
    # a ratio of 0.06 for K = 8 (each variance has 99 degrees of freedom, ~15% error). Demanding
    # < 0.3 is a 5x margin. Far from the posterior (the fixture's random guide) the ratio measured
    # 0.7, and for guides narrower than the posterior it exceeds 1 (see the closed forms above).
    ae, x = linear_gaussian(10)
    set_exact_guide(ae)
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in ae.guide.parameters():
            p.add_(0.03 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    total = {}
    for estimator in ("standard", "dreg"):
        eng = IWAE(num_particles=8, estimator=estimator)
        grads = []
        for seed in range(100):
            ae.zero_grad()
            pyro.set_rng_seed(seed)
            eng.loss(ae, x, num_data=len(x)).backward()
            grads.append(torch.cat([p.grad.flatten() for p in ae.guide.parameters()]))
        total[estimator] = torch.stack(grads).var(0).sum().item()
    assert total["dreg"] < 0.3 * total["standard"], total


# -- linear_gaussian: unbiased along random directions --------------------------------------------


@pytest.mark.parametrize("estimator, variant, m, k", [
    ("standard", "iwae", 1, 8), ("dreg", "iwae", 1, 8), ("dreg", "piwae", 2, 4), ("stl", "ciwae", 1, 1),
])
def test_linear_gaussian_gradient_is_unbiased_along_random_directions(estimator, variant, m, k, linear_gaussian):
    ae, x = linear_gaussian(10)
    eng = IWAE(num_particles=k, num_groups=m, estimator=estimator, variant=variant)
    gen = torch.Generator().manual_seed(5)
    for part, module in (("model", ae.model), ("guide", ae.guide)):
        params = [p for p in module.parameters() if p.requires_grad]
        direction = {p: torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params}
        # estimator: 30 calls on the data tiled 100 times; each call averages 100 independent draws
        tiled = x.repeat(100, 1)
        proj = []
        for seed in range(30):
            ae.zero_grad()
            pyro.set_rng_seed(seed)
            eng.loss(ae, tiled, num_data=len(tiled)).backward()
            proj.append(-sum((p.grad * v).sum() for p, v in direction.items()).item())
        proj = torch.tensor(proj)
        # reference: 2,000 copies of the data, one finite difference per copy of the batch mean
        fd = finite_difference(eng, ae, x.repeat(2000, 1), direction, part, seed=6).reshape(2000, -1).mean(1)
        se = math.sqrt(proj.var() / len(proj) + fd.var() / len(fd))
        # 5 SE (the estimator side has 29 degrees of freedom: t tail ~2.4e-5), 8 comparisons: ~2e-4
        assert abs(proj.mean() - fd.mean()) < 5 * se, (part, proj.mean(), fd.mean(), se)


# -- variants on the same draws -------------------------------------------------------------------


def seeded(eng, ae, x, seed=7):
    eng.loss(ae, x, num_data=len(x))  # warm-up: fills caches
    ae.zero_grad()
    pyro.set_rng_seed(seed)
    loss = eng.loss(ae, x, num_data=len(x))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in ae.named_parameters() if p.grad is not None}


def test_miwae_and_ciwae_values_on_the_same_draws(tiny):
    ae, (x,) = tiny("vae", n=10)
    m, k, beta = 3, 4, 0.3
    miwae, _ = seeded(IWAE(num_particles=k, num_groups=m), ae, x)
    ciwae, _ = seeded(IWAE(num_particles=k, num_groups=m, variant="ciwae", ciwae_beta=beta), ae, x)
    pyro.set_rng_seed(7)
    with torch.no_grad():
        lw = log_weights(ae, x, num_particles=m * k).reshape(m, k, -1)
    bounds = [torch.logsumexp(lw[g], 0) - math.log(k) for g in range(m)]  # M separate IWAE_K bounds
    torch.testing.assert_close(miwae, -(sum(bounds) / m).mean())
    torch.testing.assert_close(ciwae, -(beta * lw.mean((0, 1)) + (1 - beta) * sum(bounds) / m).mean())


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_piwae_routes_model_and_guide_gradients(estimator, tiny):
    # PIWAE(M, K): the model follows IWAE_{MK}, the guide MIWAE(M, K), on one set of M K draws.
    ae, (x,) = tiny("vae", n=10)
    m, k = 2, 3
    loss, grads = seeded(IWAE(num_particles=k, num_groups=m, variant="piwae", estimator=estimator), ae, x)
    pooled_loss, pooled = seeded(IWAE(num_particles=m * k, estimator=estimator), ae, x)
    _, grouped = seeded(IWAE(num_particles=k, num_groups=m, estimator=estimator), ae, x)
    torch.testing.assert_close(loss, pooled_loss)  # the value recorded is -IWAE_{MK}
    for name, g in grads.items():
        expected = pooled[name] if name.startswith("model.") else grouped[name]
        torch.testing.assert_close(g, expected, msg=name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_estimators_share_the_value_and_the_model_gradient(variant, tiny):
    ae, (x,) = tiny("vae", n=10)
    out = {e: seeded(IWAE(num_particles=4, num_groups=2, variant=variant, estimator=e), ae, x) for e in ESTIMATORS}
    for e in ("stl", "dreg"):
        torch.testing.assert_close(out[e][0], out["standard"][0])
        for name, g in out[e][1].items():
            if name.startswith("model."):
                torch.testing.assert_close(g, out["standard"][1][name], msg=name)
            else:  # the guide gradients differ (not a vacuous comparison)
                assert not torch.allclose(g, out["standard"][1][name]), name


# -- the engine ------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_estimator_and_variant_fits_and_moves_every_parameter(estimator, variant, tiny, engine):
    ae, data = tiny("vae")
    before = {n: p.detach().clone() for n, p in ae.named_parameters()}
    result = engine("iwae", estimator=estimator, variant=variant, num_groups=2, num_particles=3).fit(ae, *data)
    assert result.losses.shape == (1,) and torch.isfinite(result.losses).all()
    unchanged = [n for n, p in ae.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged


@pytest.mark.parametrize("fields, match", [
    ({"estimator": "rws"}, "estimator"), ({"variant": "vae"}, "variant"), ({"num_groups": 0}, "num_groups"),
    ({"num_particles": 0}, "num_particles"), ({"ciwae_beta": 1.5}, "ciwae_beta"),
])
def test_bad_settings_are_rejected(fields, match):
    with pytest.raises(ValueError, match=match):
        IWAE(**fields)


class NormalNoRsample(dist.Normal):
    has_rsample = False


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_estimator_needs_a_reparameterised_guide(estimator, engine):
    x = torch.randn(20, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="reparameteri"):
        engine("iwae", estimator=estimator).fit(toy(0.5, 0.0, 0.7, family=NormalNoRsample), x)
