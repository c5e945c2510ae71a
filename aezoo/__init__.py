"""aezoo: a probabilistic-programming model zoo of autoencoders built on Pyro."""

from aezoo.core import Autoencoder, Covariate, Engine, FitResult, save
from aezoo.data import DATASETS
from aezoo.diagnostics import importance_estimate
from aezoo.inference import ENGINES
from aezoo.models import MODELS, load

__all__ = ["Autoencoder", "Covariate", "Engine", "FitResult", "save", "load", "MODELS", "ENGINES", "DATASETS",
           "importance_estimate"]
