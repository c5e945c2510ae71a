"""Evaluation and posterior diagnostics of fitted autoencoders.

Log-likelihoods are in nats per datum throughout.
"""

from aezoo.diagnostics.likelihood import ImportanceEstimate, generate, importance_estimate, reconstruct

__all__ = ["ImportanceEstimate", "importance_estimate", "reconstruct", "generate"]
