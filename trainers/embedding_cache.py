"""Old import path of :mod:`trainers.boost.trajectory_embeddings` (kept so existing imports keep working)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("trainers.boost.trajectory_embeddings")
