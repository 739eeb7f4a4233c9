"""Weak-to-strong recipe: per-episode scores, the weak model's success summary, ETO pairs, Best-of-N picks."""

from __future__ import annotations

__all__ = ["best_of_groups", "episode_scores", "eto_pairs", "weak_success_summary"]


def episode_scores(rows) -> dict:
    """Per-episode ``score`` (G(e) in [0, 1]) and ``success`` lists of rollout rows, with their task ids."""
    from trainers.envs.exploration import final_score

    scores = [final_score(row) for row in rows]
    return {
        "task_ids": [row["task_id"] for row in rows],
        "scores": scores,
        "success": [bool(row.get("success")) or score >= 1.0 for row, score in zip(rows, scores)],
    }


def weak_success_summary(rows) -> dict:
    """The weak model's explorations per task type: mean score, success rate, tasks with a success / a divergence.

    ``tasks_with_success`` counts the tasks where at least one of the M explorations succeeded
    (their trees hold a successful branch); ``tasks_with_spread`` those whose explorations scored
    differently (only those trees give preference pairs).
    """
    from trainers.data.schema import metadata_of
    from trainers.envs.exploration import final_score

    by_task: dict[str, list[tuple[float, bool]]] = {}
    category_of: dict[str, str] = {}
    for row in rows:
        score = final_score(row)
        by_task.setdefault(row["task_id"], []).append((score, bool(row.get("success")) or score >= 1.0))
        category_of[row["task_id"]] = metadata_of(row).get("category") or row["task_id"].rsplit("-", 1)[0]
    summary: dict[str, dict] = {}
    for group in sorted(set(category_of.values())) + ["all"]:
        tasks = [t for t in by_task if group == "all" or category_of[t] == group]
        episodes = [e for t in tasks for e in by_task[t]]
        summary[group] = {
            "tasks": len(tasks),
            "episodes": len(episodes),
            "mean_score": 100 * sum(s for s, _ in episodes) / len(episodes),
            "success_rate": 100 * sum(ok for _, ok in episodes) / len(episodes),
            "tasks_with_success": sum(any(ok for _, ok in by_task[t]) for t in tasks),
            "tasks_with_spread": sum(len({s for s, _ in by_task[t]}) > 1 for t in tasks),
        }
    return summary


def eto_pairs(expert_rows, own_rows):
    """Trajectory-level pairs (ETO): the expert demonstration beats the model's own lower-scoring attempt."""
    from trainers.envs.exploration import final_score

    expert = {row["task_id"]: row for row in expert_rows}
    pairs = []
    for row in own_rows:
        demo = expert.get(row["task_id"])
        if demo is None or final_score(row) >= 1.0:
            continue
        head = 2 if demo["messages"][0]["role"] == "system" else 1
        pairs.append(
            {
                "prompt": demo["messages"][:head],
                "chosen": _trim(demo["messages"][head:]),
                "rejected": _trim(row["messages"][head:]),
            }
        )
    return pairs


def _trim(messages):
    messages = list(messages)
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    return messages


def best_of_groups(episodes: dict, n: int) -> dict:
    """Best-of-N: the best score of each task's ``n`` consecutive samples (oracle pick), one entry per task."""
    out = {"task_ids": [], "scores": [], "success": []}
    for start in range(0, len(episodes["scores"]), n):
        chunk = range(start, min(start + n, len(episodes["scores"])))
        best = max(chunk, key=lambda i: episodes["scores"][i])
        for key in out:
            out[key].append(episodes[key][best])
    return out
