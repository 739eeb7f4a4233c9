"""Weak-to-strong MCTS distillation on the real ScienceWorld, offline on CPU (W2SG paper, section 3.2).

Same stages 1-4 as ``tree_dpo_scienceworld.py`` (expert gold paths, weak and strong SFT, weak
exploration, trajectory trees; see that file), then offline MCTS over every tree (UCB with
c=1.41, 1000 iterations, leaf value = empirical mean outcome, no environment calls), the best
path of each task extracted greedily by mean value, and :class:`trainers.MCTSDistillTrainer`
SFT of the strong SFT model on those paths (assistant turns only). Evaluated with greedy live
rollouts next to the baselines chosen with ``--baselines`` (add ``--tree-dpo`` to train and
evaluate Tree-DPO in the same run). Prints average reward and success rate (x100).

The data, model and SFT defaults are those of ``tree_dpo_scienceworld.py``; the distillation is
``--distill-epochs`` 2 at ``--sft-lr`` 2e-4, one path per optimizer step, on the best path of
every tree whose value is above 0. Measured with the defaults on a quiet 2-core CPU (weak
SmolLM2-135M, strong Gemma-3-270M): 8.8 min in all, 6 best paths from 8 trees.

    .venv/bin/python examples/mcts_distill_scienceworld.py
    .venv/bin/python examples/mcts_distill_scienceworld.py --baselines all
    .venv/bin/python examples/mcts_distill_scienceworld.py --smoke
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tree_dpo_scienceworld as shared  # noqa: E402  (sets the OpenMP wait policy before torch loads)
import torch  # noqa: E402


def main(description: str = __doc__, env: str = "scienceworld"):
    parser = shared.common_parser(description, env)
    parser.add_argument("--mcts-iterations", type=int, default=1000, help="MCTS iterations per tree (default 1000, as the paper)")
    parser.add_argument("--exploration-constant", type=float, default=1.41, help="UCB constant c (default 1.41, as the paper)")
    parser.add_argument("--distill-epochs", type=float, default=2.0,
                        help="SFT epochs of the strong SFT model on the best paths (default 2; lr and batch as --sft-lr / --sft-batch-size)")
    parser.add_argument("--tree-dpo", action="store_true", help="also train and evaluate Tree-DPO")
    args = shared.finish_args(parser.parse_args())
    start = time.perf_counter()

    from transformers import AutoModelForCausalLM

    from trainers.mcts_distill_config import MCTSDistillConfig
    from trainers.mcts_distill_trainer import MCTSDistillTrainer
    from trainers.tree import render_forest, run_mcts

    ctx = shared.prepare(args)
    results: dict[str, dict] = {}
    shared.run_baselines(ctx, args, results)

    searches = run_mcts(ctx["forest"], iterations=args.mcts_iterations, exploration_constant=args.exploration_constant)
    render_forest(ctx["forest"], args.output_dir / "mcts_paths", max_trees=8, highlights={r.tree.task_id: r.path for r in searches})
    for search in searches:
        actions = " -> ".join(search.tree.nodes[n].action for n in search.path)
        print(f"[mcts] {search.tree.task_id}: value {search.value:.2f} via {actions}")
    config = MCTSDistillConfig(
        output_dir=str(args.output_dir / "mcts_distill"), num_train_epochs=args.distill_epochs, learning_rate=args.sft_lr,
        per_device_train_batch_size=args.sft_batch_size, gradient_accumulation_steps=1, logging_steps=5, save_strategy="no",
        report_to="none", use_cpu=True, bf16=shared.use_bf16(), seed=args.seed,
        max_length=args.max_prompt_tokens + args.max_new_tokens, gradient_checkpointing=False,
        mcts_iterations=args.mcts_iterations, exploration_constant=args.exploration_constant,
    )
    strong = AutoModelForCausalLM.from_pretrained(args.output_dir / "strong_sft", dtype=torch.float32)
    try:
        trainer = MCTSDistillTrainer(strong, args=config, mcts_results=searches, processing_class=ctx["strong_tok"])
    except ValueError as error:  # every exploration failed: nothing to imitate
        print(f"[mcts] {error}")
    else:
        trainer.train()
        trainer.save_model(str(args.output_dir / "mcts_distill"))
        trainer.save_best_paths(args.output_dir / "mcts_best_paths")
        shared.evaluate("W2SG MCTS", trainer.model, ctx["strong_tok"], ctx["factory"], ctx["test_tasks"], args, results)

    if args.tree_dpo:
        from trainers.tree import mine_pairs
        from trainers.tree_dpo_trainer import TreeDPOTrainer

        if len(mine_pairs(ctx["forest"], continuation=args.pair_continuation, pairing=args.pair_strategy, log=False)):
            # the trainer compares the tokenizers: shared -> TRL's reference path; different ->
            # reference log-probs precomputed in the weak model's own tokenization
            policy = AutoModelForCausalLM.from_pretrained(args.output_dir / "strong_sft", dtype=torch.float32)
            dpo = TreeDPOTrainer(policy, ref_model=ctx["weak"], args=shared.dpo_config(args.output_dir / "tree_dpo", args),
                                 forest=ctx["forest"], processing_class=ctx["strong_tok"],
                                 ref_processing_class=ctx["weak_tok"])
            dpo.train()
            dpo.save_model(str(args.output_dir / "tree_dpo"))
            shared.evaluate("W2SG Tree-DPO", dpo.model, ctx["strong_tok"], ctx["factory"], ctx["test_tasks"], args, results)

    shared.report(results, args, f"{shared.ENV_TITLES[args.env]} weak-to-strong ({args.weak} -> {ctx['strong_name']}), MCTS")
    print(f"total time {(time.perf_counter() - start) / 60:.1f} min; artifacts in {args.output_dir}")


if __name__ == "__main__":
    main()
