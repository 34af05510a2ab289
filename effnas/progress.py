"""Progress of long work on one line per event: trials (i/N, state, reward, best so far, ETA)."""

from __future__ import annotations

import logging
import time

import optuna
from optuna.trial import TrialState

from .results import best_candidate
from .study.enqueue import BudgetCounter
from .units import fmt_count, fmt_seconds

__all__ = ["ProgressReporter"]

log = logging.getLogger("effnas")


class ProgressReporter:
    """One line per finished trial: i/N, state, reward, best so far, ETA.

    The counts and the best trial are kept up to date from the trials finished since the previous
    line (:class:`~effnas.study.enqueue.BudgetCounter`), not by reading the whole study each time."""

    def __init__(self, budget: int | None, started: float | None = None, key: str = "reward") -> None:
        self.budget = budget
        self.started = started or time.monotonic()
        self.key = key
        self.seconds = 0.0  # this worker's trials: total duration and count, for the ETA
        self.count = 0
        self.best: optuna.trial.FrozenTrial | None = None
        self._counter = BudgetCounter()

    def _update(self, study: optuna.Study) -> tuple[int, int]:
        done, running, _ = self._counter.refresh(study)
        for t in self._counter.new:
            if best_candidate(t, self.key) and (self.best is None or (t.user_attrs[self.key], -t.number) >
                                                (self.best.user_attrs[self.key], -self.best.number)):
                self.best = t
        return done, running

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done, running = self._update(study)
        if trial.duration is not None:
            self.seconds += trial.duration.total_seconds()
            self.count += 1
        best = self.best
        eta = ""
        if self.budget and self.count:
            workers = max(1, running + 1)
            remaining = max(0, self.budget - done)
            eta = f" | ETA {fmt_seconds(remaining * (self.seconds / self.count) / workers)}"
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


