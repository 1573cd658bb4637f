"""crossent: cross-entropy, from information theory to fast, exact losses."""

from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all
from .measures import *  # noqa: F401,F403
from .measures import __all__ as _measures_all

__version__ = "0.1.0"
__all__ = [*_measures_all, *_losses_all]
