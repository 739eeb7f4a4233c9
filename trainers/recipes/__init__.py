"""Reusable pipelines ("recipes") that the examples and benchmarks run as thin command lines.

* :mod:`trainers.recipes.boost`: BOOST end to end (scripted real data, category split, self-play
  synthetic data, training of one or several table-1 methods on the same data and budget, live
  evaluation, weight analysis); scripted real episodes in :mod:`trainers.recipes.boost_scripted`.
* :mod:`trainers.recipes.weak_to_strong_study`: the weak-to-strong study (expert SFT of a weak and a
  strong model, weak explorations, trajectory trees, Tree-DPO and MCTS distillation against SFT weak,
  SFT strong, Best-of-N and ETO-style DPO, live evaluation), every stage cached and resumable; its
  setup in :mod:`trainers.recipes.weak_to_strong` and stages in :mod:`trainers.recipes.weak_to_strong_stages`.
"""
