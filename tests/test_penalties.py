"""Aggregate-posterior penalties (MMD, sliced Wasserstein, DIP) and the penalised SVI objectives."""

from __future__ import annotations

import json
import math

import ot
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from aezoo.cli import main
from aezoo.inference import ENGINES
from aezoo.inference.penalties import dip_covariance_penalty, kernel, mmd, sliced_wasserstein
from aezoo.inference.terms import TERMS, Term
from aezoo.models import MODELS

SMALL = {"x_dim": 12, "z_dim": 2, "hidden_dims": (8,)}

PENALTIES = sorted(k for k, term in TERMS.items()  # the q(z)-vs-p(z) penalties without parameters of their own
                   if term.site == "z" and not hasattr(term, "own_parameters")
                   and k != "koopman")  # koopman_vae's transition term, not a q(z) penalty: tests/test_koopman.py


def naive_mmd(x, y, kind, scale):
    """Double-loop U-statistic of Gretton et al. (2012), Lemma 6."""
    c = 2 * x.shape[1] * scale

    def k(a, b):
        sq = float(((a - b) ** 2).sum())
        return c / (c + sq) if kind == "imq" else math.exp(-sq / c)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), (values.std() / len(values) ** 0.5).item()


# -- MMD -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["imq", "rbf"])
def test_mmd_equals_the_double_loop_reference(kind):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    assert mmd(x, y, kind, scale=0.7).item() == pytest.approx(naive_mmd(x, y, kind, 0.7), rel=1e-12)
    batched = mmd(torch.stack([x, 2 * x]), torch.stack([y, y]), kind, 0.7)  # leading dims are independent
    assert batched[1].item() == pytest.approx(naive_mmd(2 * x, y, kind, 0.7), rel=1e-12)


@pytest.mark.parametrize("kind", ["imq", "rbf"])
def test_mmd_is_unbiased_zero_for_equal_and_positive_for_shifted_distributions(kind):
    # 2000 replications of n = m = 16 draws in D = 3. Identical laws: E[MMD^2_u] = 0 exactly, so
    # the mean lies within 4 standard errors with probability ~1 - 6e-5 (CLT over replications).
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 2000, 16, 3, generator=g, dtype=torch.float64)
    same_mean, same_se = mean_and_se(mmd(x, y, kind))
    assert abs(same_mean) < 4 * same_se
    # shifted by one prior standard deviation in each coordinate: clearly positive, >20 SE from 0
    shifted_mean, shifted_se = mean_and_se(mmd(x, y + 1.0, kind))
    assert shifted_mean > 20 * shifted_se and shifted_mean > 20 * abs(same_mean)


def test_mmd_rejects_single_draws_and_unknown_kernels():
    with pytest.raises(ValueError, match="two draws"):
        mmd(torch.zeros(1, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="kernel"):
        kernel(torch.zeros(2, 2), torch.zeros(2, 2), "cosine")


# -- sliced Wasserstein --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_in_one_dimension_is_the_exact_empirical_wasserstein(p):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(50, 1, generator=g, dtype=torch.float64), 3 * torch.rand(50, 1, generator=g).double()
    exact = (x.flatten().sort().values - y.flatten().sort().values).abs().pow(p).mean()
    torch.testing.assert_close(sliced_wasserstein(x, y, num_projections=7, p=p), exact)


def test_sliced_wasserstein_of_a_shift_is_the_mean_squared_projected_shift():
    # For y' = y + v the sorted projections move by theta . v, so with the same x, y and directions
    # SW(x, y + v) - SW(x, y) is unbiased for E_theta[(theta . v)^2] = |v|^2 / D. 50 replications:
    # the mean lies within 4 SE with probability ~1 - 6e-5.
    d, v = 4, torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    same, diffs = [], []
    for seed in range(50):
        g = torch.Generator().manual_seed(100 + seed)
        x, y = torch.randn(2, 500, d, generator=g, dtype=torch.float64)
        torch.manual_seed(seed)
        base = sliced_wasserstein(x, y, num_projections=100)
        torch.manual_seed(seed)
        diffs.append(sliced_wasserstein(x, y + v, num_projections=100) - base)
        same.append(base)
    mean, se = mean_and_se(torch.stack(diffs))
    target = v.pow(2).sum().item() / d
    assert abs(mean - target) < 4 * se
    # identical laws: only the finite-sample level, ~(D log n) / n here, far below the shift's
    assert torch.stack(same).mean().item() < 0.05 * target


def test_sliced_wasserstein_needs_equal_sizes():
    with pytest.raises(ValueError, match="equal"):
        sliced_wasserstein(torch.zeros(3, 2), torch.zeros(4, 2))


# -- DIP-VAE -------------------------------------------------------------------------------------


def whitened(n: int, d: int, seed: int) -> torch.Tensor:
    """``(n, d)`` points whose batch covariance (divided by n) is exactly the identity."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(z.T @ z / n)
    return torch.linalg.solve_triangular(chol, z.T, upper=False).T + 3.0  # the mean does not matter


def test_dip_penalties_vanish_at_identity_covariance_and_match_the_formula_otherwise():
    n, d = 64, 3
    mu = whitened(n, d, 0)
    assert dip_covariance_penalty(mu, "i").item() == pytest.approx(0.0, abs=1e-20)
    half = torch.full((n, d, d), 0.0, dtype=torch.float64) + 0.5 * torch.eye(d, dtype=torch.float64)
    assert dip_covariance_penalty(0.5**0.5 * mu, "ii", cov=half).item() == pytest.approx(0.0, abs=1e-20)
    # ii with identity means and 0.5 I guide covariances: C = 1.5 I, penalty = lambda_d * d * 0.25
    assert dip_covariance_penalty(mu, "ii", 2.0, 3.0, cov=half).item() == pytest.approx(3.0 * d * 0.25)

    other = torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.5, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.3]], dtype=torch.float64)
    c = torch.tensor(other.numpy().T @ (other.numpy() - other.numpy().mean(0)) / n)  # numpy reference
    expected = 2.0 * (c.pow(2).sum() - c.diagonal().pow(2).sum()) + 5.0 * (c.diagonal() - 1).pow(2).sum()
    got = dip_covariance_penalty(other, "i", 2.0, 5.0)
    assert got.item() > 0
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="cov"):
        dip_covariance_penalty(mu, "ii")


# -- the penalised SVI engine --------------------------------------------------------------------


def small_ae(name: str, seed: int = 0):
    module = MODELS[name]
    cfg = module.Config(**SMALL)
    torch.manual_seed(seed)
    return module.build(cfg), module.example_data(cfg, 24, seed=seed)[0]


def engine_for(name: str, **fields):
    _, defaults = getattr(MODELS[name], "DEFAULT_ENGINE", ("svi", {}))
    return ENGINES["svi"](**{**defaults, "epochs": 2, "batch_size": 8, "lr": 1e-2, "progress": False, **fields})


@pytest.mark.parametrize("model_name, penalty", [("vae", p) for p in PENALTIES] + [("wae", "mmd"), ("swae", "swd"),
                                                                                    ("info_vae", "mmd"),
                                                                                    ("wae_gan", "critic")])
def test_penalised_engine_trains_every_parameter(model_name, penalty):
    ae, x = small_ae(model_name)
    before = {n: p.detach().clone() for n, p in ae.named_parameters()}
    result = engine_for(model_name, penalty=penalty).fit(ae, x)
    assert torch.isfinite(result.losses).all() and result.losses.shape == (2,)
    unchanged = [n for n, p in ae.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged


def expected_objective(ae, x, eng, seed: int) -> float:
    """The documented objective, computed by hand on the engine's draws (same seed, same RNG order)."""
    pyro.set_rng_seed(seed)
    if hasattr(ae.guide, "min_scale"):  # Gaussian guide: z = loc + scale * eps, then the prior draws
        loc, scale = ae.guide.encode(x)
        z = dist.Normal(loc, scale).rsample()
        kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)
        cov = torch.diag_embed(scale**2)
    else:  # point mass: no draw, no latent term when beta = 0
        loc = z = ae.guide.encode(x)
        kl, cov = torch.zeros(len(x)), torch.zeros(len(x), z.shape[1], z.shape[1])
    nll = -ae.model.x_dist(z).log_prob(x)
    value = (nll + eng.beta * kl).mean()
    if eng.penalty.startswith("dip"):
        variant = eng.penalty[4:]
        d = dip_covariance_penalty(loc, variant, 1.0, 10.0 if variant == "i" else 1.0, cov)
    else:
        prior = torch.distributions.Normal(torch.zeros_like(z), 1.0).rsample()
        if eng.penalty == "sinkhorn":  # the transport cost of POT's entropic plan between codes and prior draws
            cost, uniform = ot.dist(z, prior), torch.full((len(z),), 1 / len(z))
            plan = ot.sinkhorn(uniform, uniform, cost, eng.penalty_term().epsilon, method="sinkhorn_log",
                               numItermax=eng.penalty_term().iterations, warn=False)
            d = (plan * cost).sum()
        else:
            d = sliced_wasserstein(z, prior, eng.penalty_term().projections) if eng.penalty == "swd" else mmd(z, prior)
    return (value + eng.penalty_weight * d).item()


@pytest.mark.parametrize("model_name, penalty", [("vae", p) for p in PENALTIES] + [("wae", "mmd"), ("swae", "swd")])
def test_loss_is_the_documented_objective_per_datum(model_name, penalty):
    ae, x = small_ae(model_name)
    eng = engine_for(model_name, penalty=penalty, penalty_weight=3.0)
    x = x[:10]
    eng.loss(ae, x, num_data=len(x))  # warm-up (caches)
    for num_data in (len(x), 1000):  # per datum: the plate scale N / B cancels
        pyro.set_rng_seed(4)
        got = eng.loss(ae, x, num_data=num_data).item()
        assert got == pytest.approx(expected_objective(ae, x, eng, 4), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("model_name", ["info_vae", "swae"])
def test_recorded_epoch_loss_is_the_size_weighted_mean_of_minibatch_objectives(model_name):
    ae, x = small_ae(model_name)
    # lr must be positive: Adam's steps of about lr = 1e-30 are below float32 resolution at the parameters' scale,
    # so the parameters stay as they are and every minibatch objective can be replayed
    eng = engine_for(model_name, epochs=1, lr=1e-30)
    recorded = eng.fit(ae, x).losses[0].item()
    pyro.set_rng_seed(eng.seed)  # replay the loop's draws: warm-up call, then the seeded minibatch order
    eng.loss(ae, x[: eng.batch_size], num_data=len(x))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(eng.seed)).split(eng.batch_size)
    total = sum(eng.loss(ae, x[idx], num_data=len(x)).item() * len(idx) for idx in order)
    assert recorded == pytest.approx(total / len(x), rel=1e-6)


def test_engine_rejects_bad_settings_and_models_without_a_z_site():
    with pytest.raises(ValueError, match="penalty"):
        ENGINES["svi"](penalty="kl2")
    with pytest.raises(ValueError, match="beta"):
        ENGINES["svi"](beta=-1.0)
    with pytest.raises(ValueError, match="kernel"):  # a term's own option, checked by the term
        ENGINES["svi"](penalty="mmd", penalty_options=("kernel=cosine",))
    with pytest.raises(ValueError, match="valid"):  # an option the term lacks: the message lists the valid ones
        ENGINES["svi"](penalty="mmd", penalty_options=("projections=3",))
    with pytest.raises(ValueError, match="penalty_options"):
        ENGINES["svi"](penalty_options=("kernel=rbf",))
    ae, x = small_ae("wae")
    with pytest.raises(ValueError, match="does not apply"):
        ENGINES["iwae"]().check(ae, x[:4])


# -- zoo entries from the command line -----------------------------------------------------------


@pytest.mark.parametrize("model_name, penalty, beta", [("swae", "swd", 0.0), ("wae", "mmd", 0.0),
                                                       ("info_vae", "mmd", 1.0)])
def test_fit_uses_the_models_default_objective(model_name, penalty, beta, tmp_path, capsys):
    out = tmp_path / model_name
    argv = ["fit", model_name, "--data", "digits", "--epochs", "1", "--train-size", "200", "--test-size", "20",
            "--num-particles", "10", "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())["engine"]
    assert config["name"] == "svi"
    assert config["config"]["penalty"] == penalty and config["config"]["beta"] == beta
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["final_train_loss"])
    if model_name == "info_vae":  # a Gaussian guide: the importance-sampled log p(x) exists
        assert metrics["test_log_likelihood"] is not None
    else:  # a point mass: no log p(x), the reconstruction log-likelihood and a note instead
        assert metrics["test_log_likelihood"] is None and "Delta" in metrics["note"]
        assert metrics["test_reconstruction"] < 0


def test_penalty_options_reach_the_term():
    eng = ENGINES["svi"](penalty="mmd", penalty_options=("kernel=rbf", "scale=2.5"))
    term = eng.penalty_term()
    assert (term.kernel, term.scale) == ("rbf", 2.5)
    assert ENGINES["svi"](penalty="dip_i").penalty_term().diag_weight == 10.0  # the paper's ratio per variant
    assert ENGINES["svi"](penalty="dip_ii").penalty_term().diag_weight == 1.0


def test_a_new_term_is_one_class_and_one_registry_line(monkeypatch):
    # What the README's "adding an objective term" section promises: subclass Term, register it, and
    # svi composes it with the ELBO on the same draws, selectable by name with its own options.
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class CodeNorm(Term):
        power: float = 2.0

        def __call__(self, ae, batch, num_data, prior, posterior):
            return posterior["value"].abs().pow(self.power).sum(-1).mean()

    monkeypatch.setitem(TERMS, "code_norm", CodeNorm)
    ae, x = small_ae("vae")
    x = x[:10]
    plain = engine_for("vae")
    eng = engine_for("vae", penalty="code_norm", penalty_weight=0.5, penalty_options=("power=1",))
    pyro.set_rng_seed(3)
    value = plain.loss(ae, x, num_data=len(x)).item()
    pyro.set_rng_seed(3)
    z = ae.guide.encode(x)
    z = dist.Normal(*z).rsample()  # the same draw the guide makes under the same seed
    pyro.set_rng_seed(3)
    got = eng.loss(ae, x, num_data=len(x)).item()
    assert got == pytest.approx(value + 0.5 * z.abs().sum(-1).mean().item(), rel=1e-5)
