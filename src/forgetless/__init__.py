"""forgetless: continual learning without catastrophic forgetting, for any PyTorch training loop.

    ewc = forgetless.EWC(strength=1e3)
    loss = task_loss + ewc.penalty(model)       # exactly 0 before the first consolidate
    ...
    ewc.consolidate(model, task_batches)         # end of a task: Fisher + anchor

Importing this package pulls in torch and nothing heavier (no matplotlib).
"""
from .fisher import ESTIMATORS, KFAC_ESTIMATORS, KroneckerFisher, fisher_diagonal, fisher_kfac
from .kronecker import KroneckerTerm, damp_kronecker, kronecker_penalty, merge_kronecker
from .quadratic import merge_quadratic, quadratic_penalty
from .regularizers import EWC, L2, REGULARIZERS, Regularizer
from .regularizers import MAS, SI, OnlineEWC
from . import metrics
from .state import StateFileError, load, save

__version__ = "0.1.0"

__all__ = [
    "ESTIMATORS",
    "KFAC_ESTIMATORS",
    "EWC",
    "KroneckerFisher",
    "KroneckerTerm",
    "L2",
    "MAS",
    "OnlineEWC",
    "REGULARIZERS",
    "Regularizer",
    "SI",
    "StateFileError",
    "damp_kronecker",
    "fisher_diagonal",
    "fisher_kfac",
    "kronecker_penalty",
    "load",
    "merge_kronecker",
    "merge_quadratic",
    "metrics",
    "quadratic_penalty",
    "save",
    "__version__",
]
