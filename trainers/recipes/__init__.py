"""Reusable pipelines ("recipes") that the examples and benchmarks run as thin command lines.

* :mod:`trainers.recipes.boost`: BOOST end to end (scripted real data, category split, self-play
  synthetic data, training of one or several table-1 methods on the same data and budget, live
  evaluation, weight analysis); scripted real episodes in :mod:`trainers.recipes.boost_scripted`.
"""
