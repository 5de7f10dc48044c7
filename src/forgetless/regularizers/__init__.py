"""Regularizers: one method per module, all following :class:`Regularizer`'s lifecycle.

``CLASSES`` is the one explicit list of them (no folder scanning, no import-time registration):
a new method is its module, one line here, and its test. Everything else about a method (its
command-line name, default strength, strength grid, hyperparameters, variants) is read from its class.
"""
from .base import Regularizer
from .ewc import EWC
from .l2 import L2
from .mas import MAS
from .online_ewc import OnlineEWC
from .si import SI

CLASSES: tuple[type[Regularizer], ...] = (L2, EWC, OnlineEWC, SI, MAS)

# name -> class: what `forgetless.save` / `forgetless.load` and the runner look methods up by.
REGULARIZERS: dict[str, type[Regularizer]] = {cls.name: cls for cls in CLASSES}

__all__ = ["CLASSES", "EWC", "L2", "MAS", "OnlineEWC", "REGULARIZERS", "Regularizer", "SI"]
