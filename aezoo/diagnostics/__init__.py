"""Evaluation and posterior diagnostics of fitted autoencoders.

Log-likelihoods are in nats per datum throughout.
"""

from aezoo.diagnostics.az import (
    GuideQuality,
    guide_quality,
    load_netcdf,
    mcmc_summary,
    pareto_khat,
    rank_plot,
    save_netcdf,
    to_inference_data,
    trace_plot,
)
from aezoo.diagnostics.latent import (
    CollapseReport,
    ELBODecomposition,
    MutualInformation,
    UnitActivity,
    active_units,
    collapse_report,
    elbo_decomposition,
    kl_per_dimension,
    mutual_information,
)
from aezoo.diagnostics.likelihood import (
    ImportanceEstimate,
    IWAEBounds,
    generate,
    importance_estimate,
    iwae_bounds,
    reconstruct,
)
from aezoo.diagnostics.links import link_prediction
from aezoo.diagnostics.ppc import PredictiveChecks, posterior_predictive, predictive_checks, prior_predictive
from aezoo.diagnostics.representations import RepresentationGap, representation_gap

__all__ = [
    "ImportanceEstimate", "importance_estimate", "IWAEBounds", "iwae_bounds", "reconstruct", "generate",
    "ELBODecomposition", "elbo_decomposition", "kl_per_dimension", "UnitActivity", "active_units",
    "MutualInformation", "mutual_information", "CollapseReport", "collapse_report",
    "RepresentationGap", "representation_gap", "PredictiveChecks", "posterior_predictive", "prior_predictive",
    "predictive_checks",
    "GuideQuality", "guide_quality", "pareto_khat", "mcmc_summary", "to_inference_data", "save_netcdf",
    "load_netcdf", "trace_plot", "rank_plot", "link_prediction",
]
