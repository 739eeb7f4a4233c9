"""Weak-to-strong Tree-DPO on the real ScienceWorld, offline on CPU (W2SG paper, section 3.2).

A small version of the weak-to-strong study (``python -m trainers.recipes.weak_to_strong_study``):
the recipe in :mod:`trainers.recipes.weak_to_strong_stages`, here with the methods SFT weak, SFT
strong and Tree-DPO. Stages, each cached under ``--output-dir`` (default
``runs/w2sg-scienceworld``; rerun the same command to continue a stopped run):

1. expert SFT data: ScienceWorld's gold action sequences replayed on the train variations;
2. SFT of the weak model (the embedded SmolLM2-135M-Instruct) and of the strong model (the
   embedded Gemma-3-270M from the ``models`` extra: twice the parameters, another tokenizer;
   SmolLM2-135M again without that extra);
3. the weak SFT model explores every train task M=6 times with varied temperature / top-p, and
   its success rate per task type is printed (a tree without successes teaches nothing);
4. one trajectory tree per task; divergence-point pairs (one best-vs-worst pair per point);
5. Tree-DPO on the strong SFT model (``--strong-init base``: on the base model), the weak SFT model
   as the reference in its own tokenization, beta 0.1, plus an NLL term on the chosen
   continuation with weight ``--dpo-nll-weight`` 1 (TRL's ``loss_type=["sigmoid", "sft"]``; 0 gives
   plain DPO); ``--finetune lora`` for LoRA adapters instead of full fine-tuning everywhere,
   ``--method-finetune lora`` for Tree-DPO alone (over the cached, fully fine-tuned SFT models);
6. greedy live rollouts on the test variations; mean ± s.e. of avg reward and success (x100).

Defaults, sized for 2 CPU cores: the study's task types ``lifespan-longest-lived`` and
``lifespan-shortest-lived`` (the weak SFT model succeeds on about a quarter of its explorations),
4 train and 4 test variations each (8 test episodes per method), one seed, 8 steps per episode,
SFT 4 epochs at 2e-4, Tree-DPO 1 epoch at 1e-5. Timed on 2026-11-26 from an empty
``--output-dir``: 11.4 min on a 2-core CPU shared with another job (weak SFT 1.2, exploration 1.3,
strong SFT 2.9, Tree-DPO 4.6, evaluations 1.3); it scored SFT weak 37.5, SFT strong 25.0, Tree-DPO
18.8 (avg reward x100 over 8 episodes, standard errors 4-9: too few to rank methods, which is what
the study's 64 episodes and 2 seeds are for).
``--methods all --seeds 0,1 --test-episodes 64`` and more variations give the full study;
``--smoke`` checks every stage in minutes.

    python examples/tree_dpo_scienceworld.py
    python examples/tree_dpo_scienceworld.py --methods all
    python examples/tree_dpo_scienceworld.py --smoke
"""

from trainers.recipes.weak_to_strong_study import main

if __name__ == "__main__":
    main(__doc__, env="scienceworld", defaults={"methods": "sft-weak,sft-strong,tree-dpo"})
