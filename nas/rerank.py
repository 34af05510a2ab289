"""Top-k re-evaluation: after the budget, the best ``k`` architectures by proxy reward are trained
again at a higher fidelity (more epochs and images, several seeds), so that ``best.json`` names the
best network on the mean of those runs -- not the luckiest draw of a one-epoch proxy.

The re-evaluations are trials of the study itself: enqueued once (under the study folder's lock,
keyed by the original trial and the seed), run by whichever workers are there, resumable after an
interruption like any trial. A re-evaluation trial records ``rerank_of`` (the original trial),
``rerank_seed`` and its own ``accuracy`` / ``reward`` (the columns of its row); its Optuna value is
the original's proxy value, so that a sampler that resumes the study later sees one fidelity only.
Re-evaluations never use the search budget.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from effnas.io import locked
from effnas.rerank import RERANK_OF, rerank_seed
from effnas.study.enqueue import counts_toward_budget

__all__ = ["RERANK_OF", "candidates", "enqueue_reranks", "rerank_summary", "rerank_seed"]

log = logging.getLogger("effnas")


def candidates(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The top ``k`` trained trials by proxy reward (ties: lower number first)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if counts_toward_budget(t) and t.user_attrs.get(RERANK_OF) is None and t.user_attrs.get("reward") is not None]
    return sorted(done, key=lambda t: (-t.user_attrs["reward"], t.number))[:k]


def enqueue_reranks(study: optuna.Study, folder: Path, k: int, seeds: int) -> int:
    """Enqueue the re-evaluations not yet in the study (another worker's count as there, unless
    they failed for good). Returns how many were enqueued."""
    if k <= 0:
        return 0
    top = candidates(study, k)
    added = 0
    with locked(folder / ".enqueue.lock"):
        have = {(t.user_attrs.get(RERANK_OF), t.user_attrs.get("rerank_seed"))
                for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get(RERANK_OF) is not None and t.state != TrialState.FAIL}
        for t in top:
            for s in range(seeds):
                if (t.number, s) in have:
                    continue
                study.enqueue_trial(dict(t.params), user_attrs={RERANK_OF: t.number, "rerank_seed": s})
                added += 1
    return added


def rerank_summary(study: optuna.Study, k: int, seeds: int) -> dict[str, Any] | None:
    """Per candidate: proxy reward and the mean / sd of its re-evaluated rewards; the winner is the
    best mean among candidates with every seed done. None when re-ranking is off or unfinished."""
    if k <= 0:
        return None
    top = candidates(study, k)
    runs: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get(RERANK_OF) is not None:
            runs.setdefault(t.user_attrs[RERANK_OF], []).append(t)
    table = []
    for t in top:
        mine = sorted(runs.get(t.number, []), key=lambda r: r.user_attrs.get("rerank_seed", 0))
        rewards = [r.user_attrs["reward"] for r in mine]
        accs = [r.user_attrs["accuracy"] for r in mine]
        table.append({
            "trial": t.number, "arch": t.user_attrs.get("arch"),
            "proxy_reward": t.user_attrs["reward"], "proxy_accuracy": t.user_attrs.get("accuracy"),
            "seeds_done": len(mine), "rerank_trials": [r.number for r in mine],
            "rerank_rewards": rewards, "rerank_accuracies": accs,
            "reward_mean": statistics.fmean(rewards) if rewards else None,
            "reward_sd": statistics.stdev(rewards) if len(rewards) > 1 else None,
            "accuracy_mean": statistics.fmean(accs) if accs else None,
        })
    complete = [row for row in table if row["seeds_done"] >= seeds]
    if not complete or len(complete) < len(table):
        return {"complete": False, "candidates": table, "winner": None}
    winner = max(complete, key=lambda row: (row["reward_mean"], -row["trial"]))
    return {"complete": True, "candidates": table, "winner": winner["trial"],
            "proxy_winner": top[0].number, "changed": winner["trial"] != top[0].number}


def fmt_summary(summary: dict[str, Any]) -> str:
    parts = []
    for row in summary["candidates"]:
        mean = row["reward_mean"]
        sd = row["reward_sd"]
        parts.append(f"#{row['trial']} proxy {row['proxy_reward']:.4f} -> "
                     f"{'-' if mean is None else f'{mean:.4f}'}"
                     f"{'' if sd is None or math.isnan(sd) else f' ± {sd:.4f}'} ({row['seeds_done']} seeds)")
    return "; ".join(parts)
