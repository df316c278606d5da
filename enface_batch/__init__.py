"""enface-batch: offline, batch face recognition for photo archives with the Enface API's semantics."""

from .scoring import score

__version__ = "0.1.0"
__all__ = ["score", "__version__"]
