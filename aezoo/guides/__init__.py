"""Reusable amortized guides, bound to a model's latent site by name."""

from aezoo.guides.delta import AmortizedDelta
from aezoo.guides.iaf import AmortizedIAF
from aezoo.guides.normal import AmortizedLinearNormal, AmortizedNormal, diagonal_normal, loc_scale
from aezoo.guides.structured import BandedGuide, KalmanGuide

__all__ = ["AmortizedNormal", "AmortizedLinearNormal", "AmortizedDelta", "AmortizedIAF", "diagonal_normal", "loc_scale",
           "KalmanGuide", "BandedGuide"]
