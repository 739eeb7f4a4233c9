"""Old import path of :mod:`trainers.boost.synthetic` (kept so existing imports keep working)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("trainers.boost.synthetic")
