"""Multi-turn rollout throughput: KV cache kept across turns vs re-prefilling the history, side by side.

Episodes of a fixed number of turns in a scripted environment whose texts have ScienceWorld-like
lengths (a ~110-token task description, observations of ~60-200 tokens: room descriptions and
inventories, an action of up to ``--max-new-tokens`` tokens), so both modes do the same
environment work and the history grows as in a real ScienceWorld episode (~3.5k tokens after 20
turns). For each episode length (default 3, 10 and 20 turns) the same episodes run twice in one
batch: ``reuse_kv_cache=True`` (each turn prefills only the new tokens) and ``False`` (each turn
re-prefills the whole history). Prints episodes/s of both, the ratio (target >= 2x at 10 turns),
how many prompt tokens the cache reused and whether both modes chose the same actions (greedy; in
bf16 the two orders of summation can round differently and flip a near-tie).

    .venv/bin/python benchmarks/rollout_throughput.py                      # SmolLM2-135M (embedded)
    .venv/bin/python benchmarks/rollout_throughput.py --turns 3 10 --episodes 4
    .venv/bin/python benchmarks/rollout_throughput.py --model tiny         # random tiny Llama, seconds
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# idle OpenMP threads sleep instead of spinning, so a busy machine slows both sides alike
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from trainers.envs.base import StepResult, Task  # noqa: E402
from trainers.envs.rollout import rollout  # noqa: E402
from trainers.envs.rollout_cache import RolloutKVCache  # noqa: E402

ROOMS = ("kitchen", "workshop", "greenhouse", "bathroom", "hallway", "art studio", "bedroom", "foundry")
THINGS = (
    "a counter. On the counter is: a bowl (containing a red apple, a banana, an orange, a potato)",
    "a fridge. The fridge door is closed",
    "a freezer. The freezer door is closed",
    "a glass cup (containing nothing)",
    "a lighter",
    "a stove, which is turned off. On the stove is: nothing",
    "a sink, which is turned off. In the sink is: nothing",
    "a table. On the table is: a glass jar",
    "a thermometer, currently reading a temperature of 10 degrees celsius",
    "a substance called air",
    "a painting",
    "a chair. On the chair is: nothing",
    "a cupboard. The cupboard door is closed",
    "an oven, which is turned off. The oven door is closed",
    "a metal pot (containing water)",
)


class ScienceWorldLikeEnv:
    """Fixed-length episodes whose observations read (and tokenize) like ScienceWorld's."""

    name = "scienceworld_like"
    system_prompt = (
        "You are a helpful assistant to do some scientific experiment in an environment. Answer with "
        "'Thought: ...' and 'Action: ...' on one line each."
    )
    max_steps = 100

    def __init__(self, turns: int):
        self.turns = turns

    def tasks(self, split=None):
        return []

    def _room(self) -> str:
        width = 3 + (self.turn * 7 + self.seed) % 9  # 3-11 objects: ~60-200 tokens
        room = ROOMS[(self.turn + self.seed) % len(ROOMS)]
        things = [THINGS[(self.turn * 5 + self.seed + i) % len(THINGS)] for i in range(width)]
        return (
            f"This room is called the {room}. In it, you see:\n\t"
            + "\n\t".join(things)
            + "\nYou also see:\n\tA door to the hallway (that is open)"
        )

    def reset(self, task, seed=None):
        self.turn, self.seed = 0, task.spec["seed"]
        return (
            "Your task is to boil water. For compounds without a boiling point, combusting the substance is also "
            "acceptable. First, focus on the substance. Then, take actions that will cause it to change its state "
            "of matter. You can use the stove, the lighter, the metal pot and the thermometer in this house. "
            "Available actions: look around, open OBJ, close OBJ, move OBJ to OBJ, focus on OBJ, activate OBJ, "
            f"deactivate OBJ, pick up OBJ, use OBJ on OBJ, go to LOC, wait, inventory.\n{self._room()}"
        )

    def step(self, action):
        self.turn += 1
        return StepResult(self._room(), 0.0, self.turn >= self.turns, {})


def load(model_name: str):
    from trainers.data.tokenization import prepare_tokenizer
    from trainers.hardware import generation_model

    if model_name == "tiny":
        from trainers.testing import build_tiny_model, build_tiny_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = build_tiny_tokenizer(os.path.join(tmp, "tok"))
            model = build_tiny_model(os.path.join(tmp, "model"), tokenizer, "llama")
        return model.eval(), tokenizer, "tiny Llama (random weights)"
    from trainers.models import load_causal_lm, load_tokenizer

    model = generation_model(load_causal_lm(model_name, dtype=torch.float32)).eval()
    precision = str(model.dtype).replace("torch.", "")
    return model, prepare_tokenizer(load_tokenizer(model_name)), f"{model_name} ({precision})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=4, help="episodes per run, all in one batch")
    parser.add_argument("--turns", type=int, nargs="+", default=[3, 10, 20])
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="default: trainers.hardware.configure_threads")
    parser.add_argument(
        "--model",
        default="smollm2-135m-embedded",
        help="'tiny' (random tiny Llama) or a name/path for trainers.models.load_causal_lm",
    )
    args = parser.parse_args()

    from trainers.hardware import configure_threads, describe

    configure_threads(args.threads)
    model, tokenizer, model_name = load(args.model)
    tasks = [Task(f"t{i}", "boil", {"seed": i}) for i in range(args.episodes)]
    common = dict(tokenizer=tokenizer, max_new_tokens=args.max_new_tokens, progress=False, batch_size=args.episodes)
    rollout(model, lambda: ScienceWorldLikeEnv(1), tasks[:1], **common)  # warm-up

    info = describe("cpu" if next(model.parameters()).device.type == "cpu" else None)
    print(
        f"\nMulti-turn rollout throughput: {model_name}, {args.episodes} episodes in one batch, "
        f"<= {args.max_new_tokens} new tokens per turn, {torch.get_num_threads()} thread(s)"
    )
    print(f"hardware: {info}\n")
    print(
        "| turns | history tokens at the end | re-prefill s | cached s | re-prefill ep/s | cached ep/s | "
        "ratio | prompt tokens reused | same actions |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = {}
    for turns in args.turns:
        timings, actions = {}, {}
        cache = RolloutKVCache()
        for label, reuse in (("re-prefill", False), ("cached", cache)):
            start = time.perf_counter()
            rows = rollout(model, lambda turns=turns: ScienceWorldLikeEnv(turns), tasks, reuse_kv_cache=reuse, **common)
            timings[label] = time.perf_counter() - start
            actions[label] = [[m["content"] for m in r["messages"] if m["role"] == "assistant"] for r in rows]
        history = max(
            len(tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False))["input_ids"]) for r in rows
        )
        same = sum(a == b for a, b in zip(actions["cached"], actions["re-prefill"]))
        ratio = timings["re-prefill"] / timings["cached"]
        ratios[turns] = ratio
        print(
            f"| {turns} | ~{history} | {timings['re-prefill']:.1f} | {timings['cached']:.1f} | "
            f"{args.episodes / timings['re-prefill']:.3f} | {args.episodes / timings['cached']:.3f} | "
            f"{ratio:.2f}x | {100 * cache.stats.reuse_fraction:.0f}% | {same}/{args.episodes} episodes |"
        )
    if 10 in ratios:
        verdict = "OK" if ratios[10] >= 2 else "BELOW TARGET"
        print(f"\ncached / re-prefill episodes/s at 10 turns: {ratios[10]:.2f}x (target >= 2x): {verdict}")


if __name__ == "__main__":
    main()
