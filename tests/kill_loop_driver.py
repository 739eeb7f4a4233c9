"""Kill a training run with SIGKILL at random instants, resume it each time, and report what happened.

Run as a script (``python tests/kill_loop_driver.py offline|bilevel WORKDIR --kills N``); it prints one
JSON line. Everything heavy (imports, the tiny model, the data) is built once in this process;
every training life is a ``fork()`` of it, so a kill costs milliseconds instead of an interpreter
start. Half of the kills wait for a checkpoint save or rotation to begin (a staging or trash folder
appears) and strike a few milliseconds later; the other half strike at a uniformly random time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from trainers.checkpointing import (  # noqa: E402
    STAGING_PREFIX,
    TRASH_PREFIX,
    checkpoint_step,
    latest_complete_checkpoint,
    list_checkpoints,
)
from trainers.data.schema import to_dataset  # noqa: E402
from trainers.testing import build_tiny_model, build_tiny_tokenizer, yes_no_trajectories  # noqa: E402

MAX_STEPS = 8


_rows = yes_no_trajectories


_TOKENIZED = {}


def _build_trainer(kind: str, model_dir: Path, tokenizer, output_dir: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    common = dict(
        output_dir=str(output_dir),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        bf16=False,
        use_cpu=True,
        seed=3,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
        learning_rate=1e-3,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if kind == "offline":
        from trainers.data.tokenization import tokenize_dataset
        from trainers.offline_rl_config import OfflineRLConfig
        from trainers.offline_rl_trainer import OfflineRLTrainer

        args = OfflineRLConfig(loss_type="ilql", **common)
        if "offline" not in _TOKENIZED:  # tokenized once, before the lives are forked
            _TOKENIZED["offline"] = tokenize_dataset(to_dataset(_rows(8)), tokenizer)
        return OfflineRLTrainer(model, args, train_dataset=_TOKENIZED["offline"], processing_class=tokenizer)
    from trainers.bilevel_config import BilevelReweightConfig
    from trainers.bilevel_trainer import BilevelReweightTrainer

    args = BilevelReweightConfig(
        method="boost",
        k_psi=2,
        k_theta=2,
        k_phi=1,
        embedding_cache_dir=str(output_dir.parent / "embedding-cache"),
        alpha=1.0,
        reweight_learning_rate=1e-2,
        bc_weight=1.0,
        cql_weight=1.0,
        **{**common, "save_total_limit": 1},
    )
    return BilevelReweightTrainer(
        model,
        args,
        train_dataset=to_dataset(_rows(8)),
        val_dataset=to_dataset(_rows(4, offset=1)),
        synthetic_dataset=to_dataset(_rows(8, "synthetic", offset=3)),
        processing_class=tokenizer,
    )


def _life(kind: str, model_dir: Path, tokenizer, output_dir: Path, resume: bool, report: Path) -> None:
    """One training life (in a forked child): resume from the newest complete checkpoint, train to the end."""
    import threading

    from tqdm import tqdm

    # tqdm's default lock is a process-shared semaphore created before the fork: a sibling killed while
    # drawing a progress bar would hold it forever. Each life gets a lock of its own.
    tqdm.set_lock(threading.RLock())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        trainer = _build_trainer(kind, model_dir, tokenizer, output_dir)
        resume_from = latest_complete_checkpoint(output_dir) if resume else None
        with open(report, "a") as handle:
            step = checkpoint_step(resume_from) if resume_from else None
            handle.write(json.dumps({"pid": os.getpid(), "resumed_from": step}) + "\n")
        trainer.train(resume_from_checkpoint=True if resume_from is not None else None)
        trainer.save_model()
        losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
        with open(report, "a") as handle:
            finished = {"pid": os.getpid(), "finished": trainer.state.global_step, "losses": losses}
            handle.write(json.dumps(finished) + "\n")
    except BaseException as error:  # noqa: BLE001 - the parent reads the report
        with open(report, "a") as handle:
            handle.write(json.dumps({"pid": os.getpid(), "error": f"{type(error).__name__}: {error}"}) + "\n")
        os._exit(1)
    os._exit(0)


def _fork(target, *args) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        target(*args)
        os._exit(0)
    return pid


def _saving(output_dir: Path) -> bool:
    return output_dir.is_dir() and any(p.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) for p in output_dir.iterdir())


def _newest_complete_step(output_dir: Path) -> int:
    complete, _ = list_checkpoints(output_dir)
    return checkpoint_step(complete[-1]) if complete else -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["offline", "bilevel"])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    rng = random.Random(options.seed)
    work = options.workdir
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(work / "tokenizer")
    build_tiny_model(work / "model", tokenizer, "llama")
    # prime the library imports the trainers pull lazily, so that forked lives start fast
    _build_trainer(options.kind, work / "model", tokenizer, work / "warmup")

    report = work / "report.jsonl"
    started = time.time()
    reference = _fork(_life, options.kind, work / "model", tokenizer, work / "reference", False, report)
    _, status = os.waitpid(reference, 0)
    one_run = time.time() - started
    output_dir = work / "killed"
    kills, during_save, lives, newest_seen, regressions, restarts, stalled, unexpected_exits = 0, 0, 0, -1, 0, 0, 0, []
    while kills < options.kills:
        pid = _fork(_life, options.kind, work / "model", tokenizer, output_dir, lives > 0, report)
        lives += 1
        deadline = time.time() + rng.uniform(0.05, one_run * 0.6)
        wait_for_save = kills % 2 == 0
        saves_to_pass, was_saving = rng.randint(0, 2), False
        exited = None
        while exited is None:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                exited = code
                break
            saving = _saving(output_dir)
            if wait_for_save and saving and not was_saving:
                if saves_to_pass == 0:
                    time.sleep(rng.uniform(0.0, 0.03))
                    break
                saves_to_pass -= 1
            was_saving = saving
            if not wait_for_save and time.time() >= deadline:
                break
            if time.time() > deadline + 30:  # a life that stopped making progress is a failure, not a kill
                stalled += 1
                break
            time.sleep(0.001)
        if exited is None:
            during_save += _saving(output_dir)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            kills += 1
        elif os.waitstatus_to_exitcode(exited) != 0:
            unexpected_exits.append(os.waitstatus_to_exitcode(exited))
            break
        else:  # the run finished before the kill: start over so that every kill lands in a live run
            import shutil

            shutil.rmtree(output_dir)
            lives, newest_seen, restarts = 0, -1, restarts + 1
        newest = _newest_complete_step(output_dir)
        regressions += newest < newest_seen
        newest_seen = max(newest_seen, newest)
    final = _fork(_life, options.kind, work / "model", tokenizer, output_dir, True, report)
    started = time.time()
    while True:
        done, status = os.waitpid(final, os.WNOHANG)
        if done:
            break
        if time.time() - started > 120:
            os.kill(final, signal.SIGKILL)
            _, status = os.waitpid(final, 0)
            stalled += 1
            break
        time.sleep(0.01)
    entries = [json.loads(line) for line in report.read_text().splitlines()]
    finished = [e for e in entries if "finished" in e]
    print(
        json.dumps(
            {
                "kills": kills,
                "kills_during_save_or_rotation": during_save,
                "restarts_after_a_finished_run": restarts,
                "stalled_lives": stalled,
                "newest_checkpoint_regressions": regressions,
                "unexpected_exits": unexpected_exits,
                "final_exit": os.waitstatus_to_exitcode(status),
                "errors": [e["error"] for e in entries if "error" in e],
                "resumed_from": [e["resumed_from"] for e in entries if "resumed_from" in e],
                "reference": finished[0] if finished else None,
                "final": finished[-1] if len(finished) > 1 else None,
                "leftovers": sorted(p.name for p in output_dir.iterdir() if p.name.startswith(".")),
                "checkpoints": sorted(p.name for p in output_dir.iterdir() if checkpoint_step(p) is not None),
                "seconds_per_run": round(one_run, 2),
                "max_steps": MAX_STEPS,
            }
        )
    )


if __name__ == "__main__":
    main()
