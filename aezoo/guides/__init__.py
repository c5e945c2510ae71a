"""Reusable amortized guides, bound to a model's latent site by name."""

from aezoo.guides.normal import AmortizedLinearNormal, AmortizedNormal

__all__ = ["AmortizedNormal", "AmortizedLinearNormal"]
