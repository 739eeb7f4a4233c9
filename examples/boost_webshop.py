"""BOOST on WebShop, end to end, offline on a laptop-class CPU: Vanilla+Syn and BOOST side by side.

    accelerate launch --config_file examples/accelerate_configs/single_process.yaml examples/boost_webshop.py
    accelerate launch examples/boost_webshop.py --methods boost                 # one method
    accelerate launch examples/boost_webshop.py --methods vanilla bilevel boost --num_eval_episodes 64
    accelerate launch examples/boost_webshop.py --dataset my/webshop-trajectories \\
        --k_psi 32 --k_theta 32 --max_steps 650 --per_device_train_batch_size 4 --gradient_accumulation_steps 4

Scripted expert (oracle) and noisy (heuristic) shoppers play the built-in WebShop; the episodes are
split by product category; the embedded SmolLM2-135M plays both roles to make one synthetic episode
per train episode; each method fully fine-tunes a fresh copy of it (``--lora_r 8`` for LoRA) on the
same data and the same number of θ updates; the value-guided policies are evaluated live on held-out
categories; the learned weights are analysed per source and per scripted quality. The pipeline is
:mod:`trainers.recipes.boost`; every flag of its ``BoostRecipeArguments`` and of
``BilevelReweightConfig`` is a command-line flag.
"""

import os

# Idle OpenMP threads sleep instead of spinning: a SmolLM2 training step took 1.7 s against 2.0 s on
# a quiet 2-core machine, and spinning threads starve a second job
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from trainers.recipes import boost  # noqa: E402

if __name__ == "__main__":
    boost.main("webshop", methods=("vanilla_synthetic", "boost"))
