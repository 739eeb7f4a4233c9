"""Everything BOOST (bilevel data reweighting of real + synthetic trajectories), in one folder.

Read in this order:

* :mod:`~trainers.boost.algorithm`: Algorithm 1 top to bottom, one function per phase (``psi_step``,
  ``copy_psi_to_theta``, ``theta_step``, ``phi_step_paper`` / ``phi_step_val_alignment``), the typed
  :class:`~trainers.boost.algorithm.PhaseSpec` and the policy whose forward runs a phase;
* :mod:`~trainers.boost.alignment`: the default φ signal (validation-gradient alignment);
* :mod:`~trainers.boost.config`: :class:`BilevelReweightConfig`;
* :mod:`~trainers.boost.trainer`: :class:`BilevelReweightTrainer`, the ``Trainer`` wiring only;
* :mod:`~trainers.boost.checkpoint`: what is saved beside the policy, and resuming;
* :mod:`~trainers.boost.data`: which rows are trained on (real first, then synthetic);
* :mod:`~trainers.boost.reweighting_head`, :mod:`~trainers.boost.trajectory_embeddings`: φ and its input;
* :mod:`~trainers.boost.synthetic`, :mod:`~trainers.boost.synthetic_prompts`: self-play synthetic data;
* :mod:`~trainers.boost.weight_analysis`: figure 2 of the paper and the weights dataset;
* :mod:`~trainers.boost.corruptions`: controlled corruptions with known labels (weight-quality checks).

Submodules are imported on use (``from trainers.boost.trainer import BilevelReweightTrainer``), so
importing one does not load the others.
"""
