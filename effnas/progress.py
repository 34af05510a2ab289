"""Progress of long work on one line per event: trials (i/N, state, reward, best so far, ETA)."""

from __future__ import annotations

import logging
import math
import time

import optuna
from optuna.trial import TrialState

from .results import best_trial
from .study.enqueue import budget_used

__all__ = ["ProgressReporter", "fmt_count", "fmt_seconds"]

log = logging.getLogger("effnas")


def fmt_count(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressReporter:
    """One line per finished trial: i/N, state, reward, best so far, ETA."""

    def __init__(self, budget: int | None, started: float | None = None) -> None:
        self.budget = budget
        self.started = started or time.monotonic()
        self.mine: list[float] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done, running, _ = budget_used(study)
        if trial.duration is not None:
            self.mine.append(trial.duration.total_seconds())
        best = best_trial(study)
        eta = ""
        if self.budget and self.mine:
            workers = max(1, running + 1)
            remaining = max(0, self.budget - done)
            eta = f" | ETA {fmt_seconds(remaining * (sum(self.mine) / len(self.mine)) / workers)}"
        a = trial.user_attrs
        what = (f"reward {a['reward']:.4f} acc {a['accuracy']:.4f}" if trial.state == TrialState.COMPLETE
                and a.get("reward") is not None else f"{a.get('reason', '')}")
        if a.get("duplicate_of") is not None:
            what = f"not trained: same architecture as trial {a['duplicate_of']} ({what})"
        best_txt = (f" | best #{best.number} reward {best.user_attrs['reward']:.4f} "
                    f"acc {best.user_attrs['accuracy']:.4f}" if best else "")
        total = f"/{self.budget}" if self.budget else ""
        log.info("[%d%s] trial %d %s: %s, flops %s, params %s (%.1fs)%s%s", done, total, trial.number,
                 trial.state.name, what, fmt_count(a.get("flops")), fmt_count(a.get("params")),
                 trial.duration.total_seconds() if trial.duration else 0.0, best_txt, eta)


