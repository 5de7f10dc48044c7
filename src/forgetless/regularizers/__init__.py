"""Regularizers: one method per module, all following :class:`Regularizer`'s lifecycle."""
from .base import Regularizer
from .ewc import EWC
from .l2 import L2
from .mas import MAS
from .online_ewc import OnlineEWC
from .si import SI

# The explicit registry the CLI and configs use; CLI names on the left.
REGULARIZERS: dict[str, type[Regularizer]] = {
    "l2": L2,
    "ewc": EWC,
    "online-ewc": OnlineEWC,
    "si": SI,
    "mas": MAS,
}

__all__ = ["Regularizer", "EWC", "L2", "REGULARIZERS", "OnlineEWC", "SI", "MAS"]
