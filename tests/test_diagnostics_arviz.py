"""ArviZ diagnostics: Pareto k-hat of guides, R-hat/ESS of MCMC draws, InferenceData export, plots.

Every statistical test is seeded; the tolerances below are set from the Monte Carlo spread of
each statistic so that an unseeded run would fail with the stated probability.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from aezoo.core import FitResult
from aezoo.diagnostics.az import (
    guide_quality,
    import_arviz,
    load_netcdf,
    mcmc_summary,
    pareto_khat,
    rank_plot,
    save_netcdf,
    to_inference_data,
    trace_plot,
)
from aezoo.models.linear_gaussian import set_exact_guide

GROUPS = ["posterior", "log_likelihood", "sample_stats", "observed_data"]


def set_scaled_guide(ae, scale: float, shift: float = 0.0) -> None:
    """Guide N(exact mean + shift, scale^2 x exact covariance) for a linear-Gaussian autoencoder."""
    with torch.no_grad():
        weight, cov = ae.model.posterior_map()
        ae.guide.set_(weight, -weight @ ae.model.mu + shift, scale * torch.linalg.cholesky(cov))


# ---------------------------------------------------------------- Pareto k-hat


def test_pareto_khat_of_constant_weights_is_minus_inf():
    # az.psislw returns +inf on constant weights (no weight strictly above the tail cutoff); the
    # wrapper reports -inf (no tail at all), also for weights equal up to rounding.
    lw = torch.full((200, 3), -7.0)
    lw[:, 1] += 1e-9 * torch.randn(200)
    assert torch.equal(pareto_khat(lw), torch.full((3,), -math.inf, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 25 particles"):
        pareto_khat(lw[:10])


def test_khat_small_for_exact_and_wider_guides(linear_gaussian):
    ae, x = linear_gaussian(50)
    set_exact_guide(ae)
    exact = guide_quality(ae, x, num_particles=1000)
    # Exact posterior: log-weights equal log p(x) up to float64 rounding (~1e-14 nats): flat.
    assert torch.all(exact.khat == -math.inf) and exact.share_above == 0.0
    summary = json.loads(json.dumps(exact.to_dict()))
    assert summary["num_flat"] == 50 and summary["khat_max"] is None and summary["khat"] == [None] * 50
    # A guide 1.2x wider than the posterior has bounded weights (true k < 0). k-hat from a tail of
    # M = 95 weights has sd ~ (1 + k)/sqrt(M) ~ 0.1; seen: -1.1 to -0.6 over 150 data; 0.5 is
    # > 10 sd above every value.
    set_scaled_guide(ae, 1.2)
    wide = guide_quality(ae, x, num_particles=1000)
    assert torch.all(wide.khat.isfinite()) and wide.khat.max() < 0.5 and wide.share_above == 0.0


def test_khat_matches_the_pareto_tail_of_a_narrow_guide(linear_gaussian):
    # q = N(m, s^2 S) for p(z | x) = N(m, S) in D_z = 2: log w = c + (1 - s^2) E with E ~ Exp(1),
    # so w is exactly Pareto with k = 1 - s^2 = 0.36 for s = 0.8. ArviZ's prior pulls k-hat to
    # (95 k + 5) / 105 = 0.373; the mean of 50 k-hats has sd ~ 0.14 / sqrt(50) = 0.02: 0.1 is 5 sd.
    ae, x = linear_gaussian(50, z_dim=2)
    set_scaled_guide(ae, 0.8)
    quality = guide_quality(ae, x, num_particles=1000, batch_size=16)
    assert abs(quality.khat.mean().item() - 0.373) < 0.1


def test_khat_flags_a_bad_guide(linear_gaussian):
    # Negative control: a guide 10x too narrow and off-centre has k = 1 - 0.01 = 0.99 (above);
    # k-hat per datum has sd ~ 0.2, so P(k-hat <= 0.7) ~ 0.05 per datum (seen 2 in 150) and
    # P(more than 10 of 50 below) < 1e-3.
    ae, x = linear_gaussian(50)
    set_scaled_guide(ae, 0.1, shift=1.0)
    quality = guide_quality(ae, x, num_particles=1000)
    assert quality.share_above >= 0.8
    assert quality.khat.median() > 0.85
    assert quality.to_dict()["share_above"] == quality.share_above


# ---------------------------------------------------------------- MCMC diagnostics


def test_rhat_and_ess_of_independent_chains():
    # 4 chains x 1000 iid N(0, 1) draws, 2 coordinates. Split R-hat - 1 ~ (F - 1) / (2n) with
    # F = B/W ~ F(7, large) and n = 500 draws per half chain: sd ~ 5e-4 (seen max 1.0026 over
    # 100 seeds), so 1.01 is ~18 sd away. ESS: Geyer's estimator of tau = 1 + 2 sum rho_t sums a
    # few lags of sd 1/sqrt(4000) each: relative sd ~ 5 % (seen 4.6 % bulk, 4.4 % tail, with
    # means -2 % and -4 %), so 20 % is ~4 sd. MCSE of the mean = 1/sqrt(4000) = 0.0158, estimate
    # relative sd ~ 2.5 %: 15 % is ~6 sd.
    g = torch.Generator().manual_seed(1)
    draws = torch.randn(4, 1000, 2, generator=g, dtype=torch.float64)
    diverging = torch.zeros(4, 1000, dtype=torch.bool)
    diverging[1, 10] = diverging[2, 500] = True
    summary = json.loads(json.dumps(mcmc_summary({"z": draws}, {"diverging": diverging})))
    assert summary["num_chains"] == 4 and summary["num_draws"] == 1000
    assert summary["r_hat_max"] <= 1.01 and summary["r_hat_ok"]
    site = summary["sites"]["z"]
    for key in ("ess_bulk", "ess_tail"):
        assert np.allclose(site[key], 4000, rtol=0.2)
    assert np.allclose(site["mcse_mean"], 1 / math.sqrt(4000), rtol=0.15)
    assert summary["ess_ok"] and summary["divergences"] == 2 and not summary["divergences_ok"]
    assert mcmc_summary({"z": draws}, per_coordinate=False)["sites"]["z"].keys() == {
        "r_hat_max", "ess_bulk_min", "ess_tail_min", "mcse_mean_max"}


def test_rhat_flags_stuck_chains():
    # Negative control: chain c ~ N(3c, 0.1^2) never overlaps the others. Rank-normalised R-hat
    # then measures between-quartile spread of normal scores: ~2.84 (sd 0.001 over 100 seeds).
    g = torch.Generator().manual_seed(2)
    stuck = 3 * torch.arange(4.0)[:, None] + 0.1 * torch.randn(4, 1000, generator=g)
    summary = mcmc_summary({"m": stuck})
    assert summary["r_hat_max"] > 2.0 and not summary["r_hat_ok"]
    assert "divergences" not in summary


def test_ess_of_an_autocorrelated_chain():
    # AR(1) with rho = 0.95: ESS = n (1 - rho) / (1 + rho) = 410 for n = 4 x 4000 draws. The
    # estimate's relative sd is ~ sqrt(2 (2M + 1) / n) ~ 14 % for M ~ 80 summed lags (seen 13 %
    # over 200 seeds, range 0.56-1.34 of 410): the band 0.5-1.5 is ~3.7 sd wide each side.
    rho, n = 0.95, 4000
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((4, n)) * math.sqrt(1 - rho**2)
    noise[:, 0] = rng.standard_normal(4)  # start in the stationary distribution
    chain = lfilter([1.0], [1.0, -rho], noise, axis=1)
    summary = mcmc_summary({"a": torch.from_numpy(chain)})
    expected = 4 * n * (1 - rho) / (1 + rho)
    assert 0.5 < summary["ess_bulk_min"] / expected < 1.5
    assert summary["ess_bulk_min"] < 0.1 * 4 * n  # far below the number of draws


# ---------------------------------------------------------------- export


def check_dims(idata, latent: tuple[int, ...], draws: tuple[int, int], n: int, x_dim: int) -> None:
    assert all(g in idata.groups() for g in GROUPS)
    assert idata.posterior["z"].dims == ("chain", "draw", "datum", "z_dim")
    assert idata.posterior["z"].shape == (*draws, *latent)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "datum")
    assert idata.log_likelihood["x"].shape == (*draws, n)
    assert idata.observed_data["x"].dims == ("datum", "x_dim")
    assert idata.observed_data["x"].shape == (n, x_dim)


def check_roundtrip(idata, path) -> object:
    back = load_netcdf(save_netcdf(idata, path))
    for group in GROUPS:
        for name, value in idata[group].data_vars.items():
            assert back[group][name].dims == value.dims
            np.testing.assert_array_equal(back[group][name].values, value.values)
    assert back.attrs["aezoo_model"] == idata.attrs["aezoo_model"]
    return back


def test_export_of_guide_draws_is_consistent(linear_gaussian, tmp_path):
    # With the exact guide every log-weight is log p(x) (float64 rounding only), and the
    # log-likelihood of each exported draw is log N(x; W z + mu, sigma^2 I) at that same draw.
    ae, x = linear_gaussian(30)
    set_exact_guide(ae)
    idata = to_inference_data(ae, x, num_draws=40, batch_size=7)
    check_dims(idata, (30, 2), (1, 40), 30, 5)
    assert idata.attrs["posterior_source"] == "guide"
    lw = torch.from_numpy(idata.sample_stats["log_weight"].values)
    torch.testing.assert_close(lw, ae.model.exact_log_marginal(x).detach().expand(1, 40, 30), rtol=0, atol=1e-10)
    z = torch.from_numpy(idata.posterior["z"].values[0])
    ll = ae.model.x_dist(z).log_prob(x).detach()
    torch.testing.assert_close(torch.from_numpy(idata.log_likelihood["x"].values[0]), ll)
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.numpy())
    check_roundtrip(idata, tmp_path / "guide.nc")


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto distribution:UserWarning")
def test_export_of_a_vae_runs_summary_and_loo(tiny, tmp_path):
    # az.loo may warn about large Pareto k (50 guide draws of a untrained VAE; PSIS-LOO also
    # assumes posterior draws): that warning is expected here, nothing else is.
    ae, data = tiny("vae", n=20)
    idata = to_inference_data(ae, *data, num_draws=50)
    check_dims(idata, (20, ae.config.z_dim), (1, 50), 20, ae.config.x_dim)
    back = check_roundtrip(idata, tmp_path / "vae.nc")
    az = import_arviz()
    # one row per posterior coordinate; one chain gives R-hat NaN (and an arviz log line about it)
    assert len(az.summary(back)) == 20 * ae.config.z_dim
    loo = az.loo(back, pointwise=True)
    assert loo.n_data_points == 20 and math.isfinite(loo.elpd_loo)


def test_export_of_mcmc_samples(tiny, tmp_path):
    ae, data = tiny("vae", n=20)
    g = torch.Generator().manual_seed(4)
    samples = {"z": torch.randn(4, 100, 20, ae.config.z_dim, generator=g)}
    stats = {"diverging": torch.rand(4, 100, generator=g) < 0.02, "step_size": torch.rand(4, 100, generator=g),
             "train_seconds": torch.tensor(3.0)}
    result = FitResult(torch.zeros(0), samples, stats)
    idata = to_inference_data(ae, *data, result=result, batch_size=8)
    check_dims(idata, (20, ae.config.z_dim), (4, 100), 20, ae.config.x_dim)
    assert set(idata.sample_stats.data_vars) == {"diverging", "step_size"}  # (C, S)-shaped stats only
    assert idata.attrs["posterior_source"] == "mcmc"
    np.testing.assert_array_equal(idata.posterior["z"].values, samples["z"].numpy())
    # log p(x_n | z) at one draw, computed directly from the model's likelihood
    z = samples["z"][2, 7]
    expected = ae.model.x_dist(z).log_prob(data[0]).detach()
    torch.testing.assert_close(torch.from_numpy(idata.log_likelihood["x"].values[2, 7]), expected)
    back = check_roundtrip(idata, tmp_path / "mcmc.nc")
    az = import_arviz()
    assert az.summary(back, var_names=["z"]).shape[0] == 20 * ae.config.z_dim
    assert az.loo(back).n_samples == 400
    with pytest.raises(ValueError, match="not shaped"):
        to_inference_data(ae, *data, result=FitResult(torch.zeros(0), {"z": torch.randn(2, 5, 3)}))
    with pytest.raises(ValueError, match="not the model's latents"):
        to_inference_data(ae, *data, result=FitResult(torch.zeros(0), {"w": torch.randn(2, 5, 20, 2)}))


# ---------------------------------------------------------------- plots


def test_trace_and_rank_plots_write_pngs(tmp_path):
    g = torch.Generator().manual_seed(5)
    samples = {"z": torch.randn(3, 50, 4, 2, generator=g), "mu": torch.randn(3, 50, generator=g)}
    stats = {"diverging": torch.rand(3, 50, generator=g) < 0.1}
    for path in (trace_plot(samples, tmp_path / "trace.png", stats), rank_plot(samples, tmp_path / "rank.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
