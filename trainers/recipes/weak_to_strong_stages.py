"""Weak-to-strong recipe, part 2: the stages of one seed, each cached on disk (W2SG paper, section 3.2).

:class:`WeakToStrongRun` runs, for one seed, in this order (the folder of each stage under
``<output-dir>/seed-<seed>/``; the expert data are shared by every seed, in ``<output-dir>/expert``):

1. ``expert``: expert demonstrations of the train tasks (ScienceWorld gold paths; WebShop's oracle);
2. ``weak_sft``: SFT of the weak model on them;
3. ``explore``: the weak SFT model plays every train task M times with varied temperature / top-p;
   ``summary.json`` holds its success rate per task type (a tree without successes teaches nothing);
4. ``forest``, ``pairs``, ``mcts_paths``: one tree per task, its divergence-point pairs and the
   best paths of an offline MCTS (no training, seconds);
5. ``strong_sft``: SFT of the strong model on the expert demonstrations;
6. ``tree_dpo`` / ``mcts_distill`` / ``eto``: the strong model trained by each method, starting from
   the strong SFT model (``--strong-init sft``) or the strong base model (``base``);
7. ``eval-<method>``: greedy live episodes on the test tasks, every episode's score kept.

Every stage goes through :class:`~trainers.recipes.weak_to_strong_cache.StageCache`: a stopped
run continues from its last finished stage.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from trainers.recipes import weak_to_strong as setup
from trainers.recipes.weak_to_strong_cache import StageCache, read_json, write_json
from trainers.recipes.weak_to_strong_scores import best_of_groups, episode_scores, eto_pairs, weak_success_summary

__all__ = ["WeakToStrongRun"]


def _load_rows(folder: Path) -> list[dict]:
    import datasets

    return list(datasets.load_from_disk(str(folder / "rows")))


def _save_rows(rows, folder: Path) -> None:
    from trainers.data.schema import to_dataset

    to_dataset(rows).save_to_disk(str(folder / "rows"))


class WeakToStrongRun:
    """The stages of one seed of the recipe over options from :func:`~trainers.recipes.weak_to_strong.build_parser`."""

    def __init__(self, args, seed: int):
        self.args, self.seed = args, seed
        self.shared = StageCache(args.output_dir)
        self.cache = StageCache(Path(args.output_dir) / f"seed-{seed}")
        self.factory = setup.make_env_factory(args)
        self.train_tasks, self.test_tasks = setup.split_tasks(self.factory(), args)
        self._strong_base = None

    # ------------------------------------------------------------------------------- options
    def data_options(self) -> dict:
        a = self.args
        return {
            k: getattr(a, k)
            for k in (
                "env",
                "task_names",
                "train_variations",
                "train_tasks",
                "max_steps",
                "max_new_tokens",
                "max_prompt_tokens",
                "system_prompt",
            )
        }

    def options(self, *names: str, **extra) -> dict:
        values = {**self.data_options(), "seed": self.seed, **{n: getattr(self.args, n) for n in names}, **extra}
        return values

    # -------------------------------------------------------------------------------- models
    def load_model(self, folder: Path):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)

    def weak_tokenizer(self):
        from trainers.data.tokenization import prepare_tokenizer
        from trainers.models import load_tokenizer

        return prepare_tokenizer(load_tokenizer(str(self.weak_sft())))

    def strong_tokenizer(self):
        from trainers.data.tokenization import prepare_tokenizer
        from trainers.models import load_tokenizer

        template = setup.GEMMA_CHAT_TEMPLATE if setup.strong_name(self.args.strong) == "gemma-3-270m" else None
        return prepare_tokenizer(load_tokenizer(str(self.strong_sft())), template)

    def start_model(self):
        """Where Tree-DPO, MCTS distillation and ETO start: the strong SFT model (or base, ``--strong-init base``)."""
        if self.args.strong_init == "base":
            (model, _), _ = setup.load_strong(self.args.strong, self.args.weak)
            return model
        return self.load_model(self.cache.path("strong_sft"))

    def method_finetune(self) -> str:
        """How Tree-DPO, MCTS distillation and ETO train: ``--method-finetune``, else ``--finetune``."""
        return self.args.method_finetune or self.args.finetune

    def peft_config(self, finetune: str | None = None):
        """LoRA adapters (the paper's r, alpha = 2r) when ``finetune`` (default ``--finetune``) is "lora"."""
        if (finetune or self.args.finetune) != "lora":
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.args.lora_r,
            lora_alpha=2 * self.args.lora_r,
            target_modules="all-linear",
            lora_dropout=0.05,
            task_type="CAUSAL_LM",
        )

    def save_trained(self, trainer, tokenizer, folder: Path) -> None:
        """Save a trainer's model as a plain checkpoint (LoRA adapters merged into the weights)."""
        model = trainer.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))

    def training_args(self) -> dict:
        a = self.args
        return dict(
            per_device_train_batch_size=1,
            gradient_accumulation_steps=1,
            logging_steps=5,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=setup.use_bf16(),
            seed=self.seed,
            max_length=a.max_prompt_tokens + a.max_new_tokens,
            # small models: recomputation costs more than it saves, and it disables the KV cache
            gradient_checkpointing=False,
        )

    def sft(self, model, tokenizer, rows, folder: Path, *, epochs: float, learning_rate: float | None = None):
        """SFT on trajectory rows (loss on assistant turns only), one per sequence, at ``--sft-lr`` unless given."""
        from trl import SFTConfig, SFTTrainer

        from trainers.mcts_distill_trainer import tokenize_for_sft

        a = self.args
        dataset = tokenize_for_sft(rows, tokenizer, max_length=a.max_prompt_tokens + a.max_new_tokens)
        config = SFTConfig(
            output_dir=str(folder / "trainer"),
            num_train_epochs=epochs,
            learning_rate=a.sft_lr if learning_rate is None else learning_rate,
            lr_scheduler_type="cosine",
            **{**self.training_args(), "per_device_train_batch_size": a.sft_batch_size},
        )
        trainer = SFTTrainer(
            model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=self.peft_config()
        )
        trainer.train()
        self.save_trained(trainer, tokenizer, folder)

    def dpo_config(self, folder: Path):
        from trainers.tree_dpo_config import TreeDPOConfig

        a = self.args
        return TreeDPOConfig(
            output_dir=str(folder / "trainer"),
            num_train_epochs=a.dpo_epochs,
            learning_rate=a.dpo_lr,
            beta=a.dpo_beta,
            chosen_nll_weight=a.dpo_nll_weight,
            precompute_ref_log_probs=True,
            pair_strategy=a.pair_strategy,
            pair_continuation=a.pair_continuation,
            pair_no_effect_pattern=a.no_effect_pattern,
            **self.training_args(),
        )

    # -------------------------------------------------------------------------------- stages
    def expert(self) -> list[dict]:
        def build(folder):
            _save_rows(setup.expert_data(self.factory(), self.train_tasks, self.args), folder)

        return self.shared.run("expert", build, _load_rows, self.data_options())

    def weak_sft(self) -> Path:
        def build(folder):
            setup.seed_everything(self.seed)
            model, tokenizer = setup.load_weak(self.args.weak)
            print(f"[sft] weak model {self.args.weak} on {len(self.expert())} expert trajectories")
            self.sft(model, tokenizer, self.expert(), folder, epochs=self.args.sft_epochs)

        return self.cache.run("weak_sft", build, lambda f: f, self.options("weak", *_SFT_OPTIONS))

    def strong_sft(self) -> Path:
        def build(folder):
            setup.seed_everything(self.seed)
            (model, tokenizer), name = setup.load_strong(self.args.strong, self.args.weak)
            print(f"[sft] strong model {name} on {len(self.expert())} expert trajectories")
            self.sft(
                model,
                tokenizer,
                self.expert(),
                folder,
                epochs=self.args.sft_epochs,
                learning_rate=self.args.strong_sft_lr,
            )

        return self.cache.run("strong_sft", build, lambda f: f, self.strong_sft_options())

    def strong_sft_options(self) -> dict:
        # named only when it changes the rate, so that stages cached before the option existed still match
        own_rate = self.args.strong_sft_lr not in (None, self.args.sft_lr)
        strong_lr = ("strong_sft_lr",) if own_rate else ()
        return self.options("strong", *_SFT_OPTIONS, *strong_lr)

    def explore(self) -> list[dict]:
        from trainers.envs.exploration import explore

        def build(folder):
            weak_tok = self.weak_tokenizer()
            model = setup.for_generation(self.load_model(self.weak_sft()))
            print(f"[explore] weak SFT model, M={self.args.explore_samples} on {len(self.train_tasks)} train tasks")
            rows = explore(
                model,
                self.factory,
                self.train_tasks,
                tokenizer=weak_tok,
                num_samples=self.args.explore_samples,
                batch_size=self.args.batch_size,
                seed=self.seed,
                max_new_tokens=self.args.max_new_tokens,
                **setup.rollout_options(self.args),
            )
            _save_rows(rows, folder)
            write_json(folder, "summary.json", weak_success_summary(rows))

        self.weak_sft()
        rows = self.cache.run("explore", build, _load_rows, self.options("weak", *_SFT_OPTIONS, "explore_samples"))
        return rows

    def weak_summary(self) -> dict:
        self.explore()
        return read_json(self.cache.path("explore"), "summary.json")

    def forest(self):
        from trainers.tree import TrajectoryForest, build_forest, render_forest

        def build(folder):
            forest = build_forest(self.explore(), similarity_threshold=self.args.similarity_threshold)
            forest.save_to_disk(folder / "forest")
            render_forest(forest, folder / "pictures", max_trees=8)

        return self.cache.run(
            "forest",
            build,
            lambda f: TrajectoryForest.load_from_disk(f / "forest"),
            self._explore_options("similarity_threshold"),
        )

    def pairs(self) -> list[dict]:
        from trainers.tree import mine_pairs

        def build(folder):
            mined = mine_pairs(
                self.forest(),
                continuation=self.args.pair_continuation,
                pairing=self.args.pair_strategy,
                no_effect_pattern=self.args.no_effect_pattern,
            )
            print(mined.explain())
            write_json(folder, "pairs.json", [dict(row) for row in mined.to_dataset()] if len(mined) else [])

        return self.cache.run(
            self.variant("pairs"),  # a sweep may mine other pairs (--pair-continuation, --pair-strategy)
            build,
            lambda f: read_json(f, "pairs.json"),
            self._explore_options("similarity_threshold", *self._pair_options()),
        )

    def mcts_paths(self) -> list[dict]:
        from trainers.tree import best_path_rows, run_mcts

        def build(folder):
            a = self.args
            searches = run_mcts(
                self.forest(), iterations=a.mcts_iterations, exploration_constant=a.exploration_constant
            )
            rows = best_path_rows(searches, min_path_value=a.min_path_value, paths_per_task=a.paths_per_task)
            for search in searches:
                actions = " -> ".join(search.tree.nodes[n].action for n in search.path)
                print(f"[mcts] {search.tree.task_id}: value {search.value:.2f} via {actions}")
            write_json(folder, "paths.json", rows)

        return self.cache.run(
            self.variant("mcts_paths"),
            build,
            lambda f: read_json(f, "paths.json"),
            self._explore_options(
                "similarity_threshold", "mcts_iterations", "exploration_constant", "min_path_value", "paths_per_task"
            ),
        )

    def variant(self, stage: str) -> str:
        """A trained method's (or its evaluation's) folder; ``--variant`` keeps sweeps apart, sharing earlier stages."""
        return f"{stage}-{self.args.variant}" if self.args.variant else stage

    def _explore_options(self, *names) -> dict:
        return self.options("weak", *_SFT_OPTIONS, "explore_samples", *names)

    def _pair_options(self) -> tuple[str, ...]:
        # named only when set, so that stages cached before the option existed still match
        no_effect = ("no_effect_pattern",) if self.args.no_effect_pattern else ()
        return ("pair_strategy", "pair_continuation", *no_effect)

    def _method_options(self, *names) -> dict:
        # named only when set, so that stages cached before the option existed still match
        method_finetune = ("method_finetune",) if self.args.method_finetune else ()
        return self._explore_options(
            "strong", "strong_init", "finetune", "lora_r", "similarity_threshold", *method_finetune, *names
        )

    def _dpo_trainer(self, pairs: list[dict], folder: Path, reference: str):
        """A Tree-DPO trainer from :meth:`start_model` on ``pairs``.

        ``reference``: ``"weak"``, the weak SFT model in its own tokenization (the paper's Tree-DPO; the
        trainer precomputes its log-probs once), or ``"strong-sft"``, the strong SFT model (TRL's own
        reference path; with LoRA, the policy with its adapters off).
        """
        import datasets

        from trainers.tree_dpo_trainer import TreeDPOTrainer

        lora = self.peft_config(self.method_finetune())
        if reference == "weak":
            ref, ref_tokenizer = self.load_model(self.weak_sft()), self.weak_tokenizer()
        else:
            ref, ref_tokenizer = (None if lora is not None else self.load_model(self.strong_sft())), None
        return TreeDPOTrainer(
            self.start_model(),
            ref_model=ref,
            args=self.dpo_config(folder),
            train_dataset=datasets.Dataset.from_list(pairs),
            processing_class=self.strong_tokenizer(),
            ref_processing_class=ref_tokenizer,
            peft_config=lora,
        )

    def tree_dpo(self) -> Path | None:
        pairs = self.pairs()
        if not pairs:
            print("[tree-dpo] no divergence points: raise --explore-samples or use more tasks. Tree-DPO skipped.")
            return None

        def build(folder):
            setup.seed_everything(self.seed)
            trainer = self._dpo_trainer(pairs, folder, self.args.dpo_reference)
            trainer.train()
            write_json(folder, "log_history.json", trainer.state.log_history)
            self.save_trained(trainer, self.strong_tokenizer(), folder)

        self.strong_sft()
        # named only when not the paper's, so that stages cached before the option existed still match
        reference = ("dpo_reference",) if self.args.dpo_reference != "weak" else ()
        options = self._method_options(*_DPO_OPTIONS, *self._pair_options(), *reference)
        return self.cache.run(self.variant("tree_dpo"), build, lambda f: f, options)

    def mcts_distill(self) -> Path | None:
        from trainers.mcts_distill_config import MCTSDistillConfig
        from trainers.mcts_distill_trainer import MCTSDistillTrainer

        paths = self.mcts_paths()
        if not paths:
            print(f"[mcts] no best path above min_path_value={self.args.min_path_value}: MCTS distillation skipped")
            return None

        def build(folder):
            import datasets

            a = self.args
            setup.seed_everything(self.seed)
            strong_tok = self.strong_tokenizer()
            config = MCTSDistillConfig(
                output_dir=str(folder / "trainer"),
                num_train_epochs=a.distill_epochs,
                learning_rate=a.sft_lr,
                mcts_iterations=a.mcts_iterations,
                exploration_constant=a.exploration_constant,
                min_path_value=a.min_path_value,
                paths_per_task=a.paths_per_task,
                **{**self.training_args(), "per_device_train_batch_size": a.sft_batch_size},
            )
            trainer = MCTSDistillTrainer(
                self.start_model(),
                args=config,
                processing_class=strong_tok,
                train_dataset=datasets.Dataset.from_list(paths),
                peft_config=self.peft_config(self.method_finetune()),
            )
            trainer.train()
            self.save_trained(trainer, strong_tok, folder)

        self.strong_sft()
        return self.cache.run(
            self.variant("mcts_distill"),
            build,
            lambda f: f,
            self._method_options(
                "mcts_iterations",
                "exploration_constant",
                "min_path_value",
                "paths_per_task",
                "distill_epochs",
                "sft_lr",
            ),
        )

    def eto(self) -> Path | None:
        from trainers.envs.exploration import explore

        def build_own(folder):
            strong_tok = self.strong_tokenizer()
            model = setup.for_generation(self.load_model(self.strong_sft()))
            rows = explore(
                model,
                self.factory,
                self.train_tasks,
                tokenizer=strong_tok,
                num_samples=self.args.eto_samples,
                batch_size=self.args.batch_size,
                seed=self.seed + 11,
                max_new_tokens=self.args.max_new_tokens,
                id_prefix="eto",
                **setup.rollout_options(self.args),
            )
            _save_rows(rows, folder)

        own = self.cache.run("eto_explore", build_own, _load_rows, self.options("strong", *_SFT_OPTIONS, "eto_samples"))
        pairs = eto_pairs(self.expert(), own)
        if not pairs:
            print("[eto] the strong SFT model solved every train task: no expert-vs-own pairs, ETO skipped")
            return None

        def build(folder):
            setup.seed_everything(self.seed)
            trainer = self._dpo_trainer(pairs, folder, "strong-sft")  # ETO's reference: the model it starts from
            trainer.train()
            self.save_trained(trainer, self.strong_tokenizer(), folder)

        return self.cache.run(
            self.variant("eto"), build, lambda f: f, self._method_options(*_DPO_OPTIONS, "eto_samples")
        )

    # ---------------------------------------------------------------------------- evaluation
    def eval_stage(self, method: str) -> str:
        name = f"eval-{method}" if self.args.eval_split == "test" else f"eval-{self.args.eval_split}-{method}"
        return self.variant(name) if method in ("tree-dpo", "mcts", "eto") else name

    def finished_evaluation(self, method: str) -> dict | None:
        """The episodes of ``method`` if its evaluation finished before, else None (nothing is run)."""
        name = self.eval_stage(method)
        return read_json(self.cache.path(name), "episodes.json") if self.cache.done(name) else None

    def greedy_rollouts(self, model, tokenizer) -> list[dict]:
        """One greedy episode per test task (``--eval-split`` decides which), as every evaluation plays it."""
        from trainers.envs.rollout import rollout

        a = self.args
        return rollout(
            model,
            self.factory,
            self.test_tasks,
            tokenizer=tokenizer,
            num_episodes=len(self.test_tasks),
            batch_size=a.batch_size,
            do_sample=False,
            max_new_tokens=a.max_new_tokens,
            progress=True,
            **setup.rollout_options(a),
        )

    def evaluate(self, method: str) -> dict | None:
        """Greedy episodes of ``method`` on the test tasks (Best-of-N: the best of N samples per task)."""
        from trainers.envs.exploration import explore

        models = {
            "sft-weak": self.weak_sft,
            "sft-strong": self.strong_sft,
            "best-of-n": self.strong_sft,
            "tree-dpo": self.tree_dpo,
            "mcts": self.mcts_distill,
            "eto": self.eto,
        }
        folder = models[method]()
        if folder is None:
            return None
        a = self.args

        def build(out):
            tokenizer = self.weak_tokenizer() if method == "sft-weak" else self.strong_tokenizer()
            model = setup.for_generation(self.load_model(folder))
            start = time.perf_counter()
            if method == "best-of-n":
                rows = explore(
                    model,
                    self.factory,
                    self.test_tasks,
                    tokenizer=tokenizer,
                    num_samples=a.best_of,
                    batch_size=a.batch_size,
                    seed=self.seed + 7,
                    max_new_tokens=a.max_new_tokens,
                    id_prefix="best-of-n",
                    **setup.rollout_options(a),
                )
                episodes = best_of_groups(episode_scores(rows), a.best_of)
            else:
                rows = self.greedy_rollouts(model, tokenizer)
                episodes = episode_scores(rows)
            episodes["seconds"] = time.perf_counter() - start
            write_json(out, "episodes.json", episodes)
            _save_rows(rows, out)

        options = {
            **self._method_options(),
            "method": method,
            "test_variations": a.test_variations,
            "test_tasks": a.test_tasks,
            "test_episodes": a.test_episodes,
            # relative to the study folder, so a study that is moved or copied keeps its cache
            "trained": Path(os.path.relpath(folder, a.output_dir)).as_posix(),
        }
        if method == "best-of-n":
            options["best_of"] = a.best_of
        if a.eval_split != "test":
            options["eval_split"] = a.eval_split
        name = self.eval_stage(method)
        episodes = self.cache.run(name, build, lambda f: read_json(f, "episodes.json"), options)
        mean = 100 * sum(episodes["scores"]) / len(episodes["scores"])
        print(f"[eval] seed {self.seed} {method}: avg reward {mean:.1f} over {len(episodes['scores'])} episodes")
        return episodes


_SFT_OPTIONS = ("sft_epochs", "sft_lr", "sft_batch_size", "finetune", "lora_r")
_DPO_OPTIONS = ("dpo_epochs", "dpo_lr", "dpo_beta", "dpo_nll_weight")
