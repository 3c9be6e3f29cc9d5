"""latentode: Latent ODEs for irregularly sampled multivariate time series.

>>> from latentode import LatentODERegressor
"""

from .decoder import SolverError
from .estimator import LatentODERegressor

__version__ = "0.1.0"
__all__ = ["LatentODERegressor", "SolverError", "__version__"]
