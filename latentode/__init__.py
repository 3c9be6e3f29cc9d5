"""latentode: Latent ODEs for irregularly sampled multivariate time series.

>>> from latentode import LatentODERegressor
"""

from ._validation import InputError
from .decoder import SolverError
from .estimator import LatentODERegressor

__version__ = "0.1.0"
__all__ = ["InputError", "LatentODERegressor", "SolverError", "__version__"]
