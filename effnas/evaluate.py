"""A trial's evaluation: price the candidate by formula, reject it untrained if it breaks a hard
limit, train it with the proxy protocol (reporting each epoch to the pruner), score it with the
reward, and record everything as the trial's user attributes (what the result tables show)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from search_space import ArchSpec, count_flops, count_params

from .data import DataSplits
from .objective import Reward, cost_of
from .units import fmt_count
from .study import BudgetTaken, Interrupted
from .study.attrs import set_user_attrs
from .study.enqueue import DUPLICATE, NewlyFinished, SearchExhausted, study_trials
from .train import RESUMING, CheckpointError, Diverged, ProxyConfig, TrainResult, result_settings, train_and_evaluate

__all__ = ["Evaluator", "SearchExhausted"]

log = logging.getLogger("effnas")


_COPIED = ("accuracy", "reward", "epochs", "latency_ms")


class Evaluator:
    """Prices, trains and scores one candidate spec inside an Optuna trial (both stages).

    With ``dedupe``, no architecture is trained twice in a study: a trial whose architecture equals
    that of a COMPLETE or PRUNED trial, or of an earlier RUNNING or WAITING one, is not trained. It
    records ``duplicate_of`` and -- when the twin is finished -- the twin's result (COMPLETE with the
    same value, so the sampler learns it; PRUNED likewise), otherwise it ends as FAIL. Such trials do
    not use the budget (:func:`effnas.study.enqueue.counts_toward_budget`). ``arch_of`` gives the
    architecture of an enqueued (WAITING) trial from its parameters.

    ``trainer`` replaces :func:`~effnas.train.train_and_evaluate` (same arguments and result): the
    ``supernet`` evaluator (:class:`effnas.supernet.SupernetEvaluator`) scores with inherited weights.

    A retried trial (the WAITING copy of an interrupted or dead attempt, which carries the attempt's
    user attributes) trains with the attempt's seed, so it reaches what the attempt would have. With
    ``checkpoints`` (a folder: the study's), a training of more than one epoch saves itself there
    after every epoch, named by its architecture, seed and recipe: the retry of an attempt that was
    interrupted or whose worker died resumes after the attempt's last finished epoch (where the
    folder is shared with the worker that ran it). The file is removed once the trial is COMPLETE or
    PRUNED, or FAILs by an error nothing retries (kept: an unreadable or foreign file, a
    :class:`~effnas.train.CheckpointError`)."""

    max_duplicates_in_a_row = 200

    def __init__(self, data: DataSplits, train: ProxyConfig, reward: Reward, *, max_flops: float | None,
                 max_params: float | None, seed: int, multi_objective: bool = False,
                 prune: bool = True, dedupe: bool = False,
                 arch_of: Callable[[dict[str, Any]], str | None] | None = None,
                 trainer: Callable[..., TrainResult] | None = None, checkpoints: Path | None = None) -> None:
        self.data, self.train, self.reward = data, train, reward
        self.trainer, self.checkpoints = trainer, checkpoints
        self.max_flops, self.max_params = max_flops, max_params
        self.seed = seed
        self.multi_objective, self.prune = multi_objective, prune
        self.dedupe, self.arch_of = dedupe, arch_of
        self.duplicates_in_a_row = 0
        self._newly_finished = NewlyFinished()
        self._finished_archs: dict[str, optuna.trial.FrozenTrial] = {}  # arch -> its lowest finished trial

    def _checkpoint(self, spec: ArchSpec, cfg: Any) -> Path | None:
        """Where this training saves itself after every epoch (None: no folder, the supernet's
        scoring, or one epoch -- nothing to resume). The name covers the architecture at its
        resolution, the recipe with the seed, and the image count; the study's protocol fixes the rest."""
        if self.checkpoints is None or self.trainer is not None or cfg.epochs < 2:
            return None
        what = {"arch": spec.to_string(), "train": result_settings(cfg), "images": len(self.data.train)}
        return self.checkpoints / f"trial-{hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]}.pt"

    @staticmethod
    def _drop(path: Path | None) -> None:
        if path is not None:
            path.unlink(missing_ok=True)

    def _twin(self, trial: optuna.Trial, arch: str) -> optuna.trial.FrozenTrial | None:
        """The trial this one would repeat: a finished one (any number; the lowest-numbered) or an
        earlier live one. Finished trials never change, so each is indexed by its architecture once
        (:class:`~effnas.study.enqueue.NewlyFinished`); only the live ones are looked at each time:
        the check costs O(new + live trials), not O(study)."""
        new, live = self._newly_finished(study_trials(trial.study))
        for t in new:
            other = t.user_attrs.get("arch")
            if other is None or t.state == TrialState.FAIL or t.user_attrs.get(DUPLICATE) is not None:
                continue
            known = self._finished_archs.get(other)
            if known is None or t.number < known.number:
                self._finished_archs[other] = t
        finished = self._finished_archs.get(arch)
        if finished is not None and finished.number != trial.number:
            return finished
        for t in live:  # in number order
            if t.number >= trial.number:
                break
            if t.user_attrs.get(DUPLICATE) is not None:
                continue
            other = t.user_attrs.get("arch")
            if other is None and t.state == TrialState.WAITING and self.arch_of is not None:
                other = self.arch_of(t.system_attrs.get("fixed_params") or t.params)
            if other == arch:
                return t
        return None

    def _repeat(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> Any:
        self.duplicates_in_a_row += 1
        if self.duplicates_in_a_row > self.max_duplicates_in_a_row:
            raise SearchExhausted(f"the sampler proposed {self.max_duplicates_in_a_row} architectures in a row "
                                  f"that were already trained (is the space exhausted?)")
        attrs: dict[str, Any] = {DUPLICATE: twin.number, "train_seconds": 0.0}
        if twin.state == TrialState.COMPLETE:
            attrs.update({key: twin.user_attrs[key] for key in _COPIED if key in twin.user_attrs})
            set_user_attrs(trial, {**attrs, "reason": f"same architecture as trial {twin.number}: not trained, "
                                                       f"its result copied"})
            return tuple(twin.values) if self.multi_objective else twin.value
        reason = f"same architecture as trial {twin.number} ({twin.state.name}): not trained"
        set_user_attrs(trial, {**attrs, "reason": reason})
        if twin.state == TrialState.PRUNED:
            raise optuna.TrialPruned(reason)
        raise BudgetTaken(reason)

    def run(self, trial: optuna.Trial, spec: ArchSpec, resolution: int | None = None,
            extra_attrs: dict[str, Any] | None = None, seed: int | None = None) -> Any:
        """``seed``: the training seed; default ``self.seed + trial.number`` (stage 2 passes one
        seed for every grid point, so that points differ only by their network)."""
        # The worker id and the global-budget check are run_worker's (nas.study), before this runs.
        res = resolution or spec.resolution
        if seed is None:  # a retry carries its attempt's user attributes: the attempt's seed
            seed = trial.user_attrs.get("seed", self.seed + trial.number)
        flops, params = count_flops(spec, res), count_params(spec)
        arch = spec.to_string()
        set_user_attrs(trial, {"arch": arch, "flops": flops, "params": params, "plain_layers": spec.plain_layers,
                               "seed": seed, "resolution": res,
                               **(extra_attrs or {})})
        if self.dedupe:  # the arch is recorded first: of two workers racing, the later trial yields
            twin = self._twin(trial, arch)
            if twin is not None:
                return self._repeat(trial, twin)
            self.duplicates_in_a_row = 0
        limits = [("max_flops", flops, self.max_flops), ("max_params", params, self.max_params)]
        for name, value, limit in limits:
            if limit is not None and value > limit:
                reason = f"{name}: {fmt_count(value)} > limit {fmt_count(limit)} (not trained)"
                set_user_attrs(trial, {"reason": reason, "epochs": 0})
                raise optuna.TrialPruned(reason)
        cost = float(flops) if self.reward.metric == "flops" else float(params) \
            if self.reward.metric == "params" else cost_of(spec, "latency", res)
        if self.reward.metric == "latency":
            trial.set_user_attr("latency_ms", cost)
        cfg = self.train.train_config(seed)
        last_report: list[tuple[int, float]] = []

        def on_epoch(epoch: int, accuracy: float) -> None:
            if epoch < cfg.epochs:  # the last epoch's are recorded with the result, in the same write
                set_user_attrs(trial, {"epochs": epoch, "accuracy": accuracy})
            if self.multi_objective or not self.prune:
                return
            # Report what the study maximises (the reward at this epoch's accuracy), so that a cheap
            # network is not pruned for an accuracy its cost makes up for; and never prune after
            # the last epoch: the training is done, stopping it saves nothing (its report is
            # written with the result, in the same write).
            value = self.reward(accuracy, cost)
            if epoch >= cfg.epochs:
                last_report[:] = [(epoch, value)]
                return
            trial.report(value, epoch)
            if trial.should_prune():
                reason = (f"pruned by {type(trial.study.pruner).__name__} at epoch {epoch} "
                          f"(reward {value:.4f}, acc {accuracy:.4f})")
                trial.set_user_attr("reason", reason)
                raise optuna.TrialPruned(reason)

        trained = spec.replace(resolution=res) if res != spec.resolution else spec
        ckpt = self._checkpoint(trained, cfg)
        try:
            trainer = self.trainer or train_and_evaluate  # looked up now: tests patch the module's
            result = trainer(trained, self.data, cfg, on_epoch,
                             progress=lambda m: log.log(logging.INFO if m.startswith(RESUMING) else logging.DEBUG,
                                                        "trial %d %s", trial.number, m),
                             **({"checkpoint": ckpt} if ckpt is not None else {}))
        except Diverged as exc:
            self._drop(ckpt)
            trial.set_user_attr("reason", f"diverged: {exc}")
            raise optuna.TrialPruned(f"diverged: {exc}") from None
        except optuna.TrialPruned:
            self._drop(ckpt)
            raise
        except Interrupted as exc:  # the checkpoint stays: the retry resumes it
            trial.set_user_attr("reason", f"interrupted by {exc.signame}")
            raise
        except (CheckpointError, UpdateFinishedTrialError):
            raise  # not this training's file (left for the user) / failed as stale: its retry resumes it
        except Exception:  # the trial FAILs and is never retried: nothing would resume the checkpoint
            self._drop(ckpt)
            raise
        self._drop(ckpt)
        reward = self.reward(result.accuracy, cost)
        set_user_attrs(trial, {"accuracy": result.accuracy, "reward": reward, "epochs": result.epochs_done,
                               "train_seconds": result.train_seconds},
                       report=last_report[0] if last_report else None)
        if self.multi_objective:
            return result.accuracy, float(flops)
        return reward
