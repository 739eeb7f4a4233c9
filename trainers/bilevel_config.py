"""Old import path of :mod:`trainers.boost.config` (kept so existing imports keep working)."""

import sys

from .boost import config as _module

sys.modules[__name__] = _module
