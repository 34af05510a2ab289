"""Per-trial overhead of effnas's study loop vs a plain Optuna loop, with training patched out.

Run from the repository root::

    python bench/overhead.py [--sizes 100,1000,10000] [--window 100] [--sampler tpe|random]
                             [--back-to-back]

For each n, side by side -- two processes started together, each in a fresh folder
with a journal file -- so that whatever else the machine does slows both alike (the one that
finishes first keeps running a plain loop, unmeasured, until the other is done: neither runs its
tail alone); ``--back-to-back`` runs them one after the other in this process instead:

* **plain**: ``study.optimize`` with the anchor's sampler (``TPESampler(n_startup_trials=10,
  multivariate=True, group=True)``, seeded as ``nas-search`` seeds its first sampler stream),
  Optuna's journal file storage, and the same search space asked through ``SearchSpace.sample``;
  the objective returns the reward of a made-up accuracy at once.
* **tool**: ``nas.search.run_search`` itself -- the real worker loop, evaluator, duplicate check,
  exports, ``best.json`` and progress lines -- with ``effnas.evaluate.train_and_evaluate``
  patched to report one epoch and return the same made-up accuracy at once, on a tiny synthetic
  dataset (``load_data`` patched: nothing is read from disk), without warm starts and without the
  top-k re-evaluation after the budget (the plain loop has neither).

The made-up accuracy is a hash of the architecture and the reward is ``nas-search``'s (FLOPs
against T), so both loops return the same values and their samplers propose the same
architectures (checked: the "same points" column): the difference is the tool's own work. Times are taken at every objective call
(wall and this process's CPU time); per-trial times are reported per window of ``--window``
trials, then the mean over the whole run. The progress lines are made (INFO) and dropped. The
last line is the tool/plain ratio of the per-trial wall time at the largest n (``<ratio> x``);
the goal is <= 1.1, flat in n.

Multivariate TPE's own cost grows with the number of trials (about 0.15 s a trial at 1,000 and,
growing linearly, hours for 10,000 -- twice: plain and tool); ``--sizes`` picks what to run.
``--sampler random`` gives both loops Optuna's seeded ``RandomSampler`` instead: the sampler's
cost no longer grows and no longer hides the tool's own, so the "extra ms" column (tool minus
plain, per trial) shows whether the tool's work per trial stays flat up to 10,000 trials, in
minutes -- a stricter test of the loop than the TPE ratio, whose denominator grows.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import threading
import time
import warnings
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

import effnas.evaluate  # noqa: E402
import nas.search  # noqa: E402
from effnas.config import as_config  # noqa: E402
from effnas.data import DataSplits  # noqa: E402
from effnas.data.core import ImageDataset  # noqa: E402
from effnas.objective import auto_target  # noqa: E402
from effnas.train import TrainResult  # noqa: E402
from search_space import count_flops  # noqa: E402

torch.set_num_threads(1)


def fake_accuracy(arch: str) -> float:
    return 0.5 + (zlib.crc32(arch.encode()) % 4000) / 10000.0


class Clock:
    """(wall, cpu) at every objective call."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []
        self.points: list[dict] = []  # the parameters of every trial, in order

    def tick(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def windows(self, size: int) -> list[tuple[float, float]]:
        """Mean per-trial (wall ms, cpu ms) in consecutive windows of ``size`` trials."""
        out = []
        for i in range(0, len(self.marks) - 1, size):
            j = min(i + size, len(self.marks) - 1)
            (w0, c0), (w1, c1) = self.marks[i], self.marks[j]
            out.append(((w1 - w0) / (j - i) * 1e3, (c1 - c0) / (j - i) * 1e3))
        return out

    def mean(self) -> tuple[float, float]:
        (w0, c0), (w1, c1) = self.marks[0], self.marks[-1]
        k = len(self.marks) - 1
        return (w1 - w0) / k * 1e3, (c1 - c0) / k * 1e3


def tiny_data() -> DataSplits:
    g = torch.Generator().manual_seed(0)

    def split(n: int, name: str) -> ImageDataset:
        return ImageDataset(torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
                            torch.arange(n, dtype=torch.int64) % 10, tuple(str(i) for i in range(10)), name)

    return DataSplits(split(64, "synthetic"), split(32, "synthetic"), None, (0.5,), (0.25,), "synthetic")


SAMPLER = "tpe"  # --sampler


def overrides(folder: Path, n: int, seed: int) -> dict:
    return {"results_dir": str(folder), "search": {"study_name": "tool", "n_trials": n, "seed": seed,
                                                   "warm_start": []}, "sampler": {"name": SAMPLER},
            "proxy": {"train_size": 64, "minival_size": 32, "epochs": 1, "threads": 1, "device": "cpu"},
            "rerank": {"k": 0}}  # the search loop only: no re-evaluation of the top k after it


def run_plain(folder: Path, n: int, seed: int) -> Clock:
    """Optuna alone, with what ``run_search`` would build: space, reward, sampler seed."""
    clock = Clock()
    cfg = as_config("nas_search", overrides(folder, n, seed))
    data = tiny_data()
    res = cfg.proxy.resolution
    sp = cfg.space.build(num_classes=data.num_classes, in_channels=data.in_channels, resolution=res)
    reward = cfg.objective.reward(auto_target(cfg.objective.metric, data.num_classes, data.in_channels, res))
    sampler_seed = int(np.random.SeedSequence([seed, 0]).generate_state(1)[0])  # nas-search's stream 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(folder / "study.journal"), lock_obj=optuna.storages.journal.JournalFileSymlinkLock(
            str(folder / "study.journal"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=10, multivariate=True,
                                             group=True) if SAMPLER == "tpe" else \
            optuna.samplers.RandomSampler(seed=sampler_seed)
    study = optuna.create_study(study_name="plain", storage=storage, sampler=sampler, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        clock.tick()
        spec = sp.sample(trial)
        return reward(fake_accuracy(spec.to_string()), float(count_flops(spec, res)))

    study.optimize(objective, n_trials=n, gc_after_trial=False)
    clock.tick()
    clock.points = [t.params for t in study.get_trials(deepcopy=False)]
    return clock


def run_tool(folder: Path, n: int, seed: int) -> Clock:
    clock = Clock()

    def fake_train(spec, data, cfg, on_epoch=None, **kw):
        acc = fake_accuracy(spec.to_string())
        if on_epoch is not None:
            on_epoch(1, acc)
        return TrainResult(accuracy=acc, epochs_done=1, train_seconds=0.0, images_per_second=0.0)

    original_run = effnas.evaluate.Evaluator.run

    def timed_run(self, *args, **kwargs):
        clock.tick()
        return original_run(self, *args, **kwargs)

    patches = [(effnas.evaluate, "train_and_evaluate", fake_train), (nas.search, "load_data",
                                                                      lambda *a, **k: tiny_data()),
               (effnas.evaluate.Evaluator, "run", timed_run)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        outcome = nas.search.run_search(overrides(folder, n, seed))
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
    clock.tick()
    assert outcome.best is not None
    journal = optuna.storages.journal.JournalFileBackend(str(folder / "tool" / "study.journal"))
    study = optuna.load_study(study_name="tool", storage=optuna.storages.JournalStorage(journal))
    clock.points = [t.params for t in study.get_trials(deepcopy=False)]
    return clock


def _side(which: str, folder: str, n: int, seed: int, sampler: str, start, mine, other, out) -> None:
    """One loop in a process of its own (side by side): measure it, then keep the core busy until
    the other loop is done."""
    global SAMPLER
    SAMPLER = sampler
    quiet_logs()
    root = Path(folder)
    (root / which).mkdir()
    start.wait()
    clock = (run_plain if which == "plain" else run_tool)(root / which, n, seed)
    mine.set()
    out.put((which, clock.marks, clock.points))
    if not other.is_set():  # a plain loop, unmeasured, so that the other's tail is not run alone
        (root / "filler").mkdir()
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
            str(root / "filler" / "study.journal")))
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed))

        def stop_when_other_done(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
            if other.is_set():
                study.stop()

        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), callbacks=[stop_when_other_done],
                       gc_after_trial=False)


def side_by_side(root: Path, n: int, seed: int) -> tuple[Clock, Clock, float, float]:
    """Both loops at once in two spawned processes (not pinned: the scheduler shares the cores
    between them and whatever else runs)."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(3)
    done = {"plain": ctx.Event(), "tool": ctx.Event()}
    out = ctx.Queue()
    procs = [ctx.Process(target=_side, args=(which, str(root), n, seed, SAMPLER, start, done[which],
                                             done["tool" if which == "plain" else "plain"], out))
             for which in ("plain", "tool")]
    for p in procs:
        p.start()
    clocks, seconds = {}, {}
    try:
        start.wait(timeout=600)  # broken if a loop failed while starting
        t0 = time.perf_counter()
        while len(clocks) < len(procs):
            try:
                which, marks, points = out.get(timeout=5)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    break
                continue
            seconds[which] = time.perf_counter() - t0
            clocks[which] = Clock()
            clocks[which].marks, clocks[which].points = marks, points
        for p in procs:
            p.join(timeout=None if len(clocks) == len(procs) else 5)
    except threading.BrokenBarrierError:
        pass
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    for which, p in zip(("plain", "tool"), procs):
        if which not in clocks or p.exitcode != 0:
            raise SystemExit(f"overhead: the {which} loop failed (exit code {p.exitcode}); its error is above")
    return clocks["plain"], clocks["tool"], seconds["plain"], seconds["tool"]


def quiet_logs() -> None:
    effnas_log = logging.getLogger("effnas")  # progress lines are made, then dropped
    effnas_log.setLevel(logging.INFO)
    effnas_log.handlers[:] = [logging.NullHandler()]
    effnas_log.propagate = False
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated trial counts")
    parser.add_argument("--window", type=int, default=100, help="trials per reported window")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                        help="both loops' sampler; random takes the sampler's own growing cost out, "
                             "so that the tool's extra cost per trial shows alone (n = 10,000 in minutes)")
    parser.add_argument("--quiet-windows", action="store_true", help="print only the summary per n")
    parser.add_argument("--back-to-back", action="store_true",
                        help="run the two loops one after the other in this process, not side by side")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    global SAMPLER
    SAMPLER = args.sampler
    quiet_logs()

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="effnas-overhead-") as tmp:
            root = Path(tmp)
            if args.back_to_back:
                (root / "plain").mkdir()
                t0 = time.perf_counter()
                plain = run_plain(root / "plain", n, args.seed)
                t1 = time.perf_counter()
                tool = run_tool(root / "tool", n, args.seed)
                plain_s, tool_s = t1 - t0, time.perf_counter() - t1
            else:
                plain, tool, plain_s, tool_s = side_by_side(root, n, args.seed)
        pw, pc = plain.mean()
        tw, tc = tool.mean()
        same = sum(a == b for a, b in zip(plain.points, tool.points))
        rows.append((n, pw, tw, pc, tc, same))
        print(f"n={n}: plain {plain_s:.1f}s, tool {tool_s:.1f}s (including set-up); same points {same}/{n}",
              flush=True)
        if not args.quiet_windows:
            print(f"  {'trials':>13} {'plain ms':>9} {'tool ms':>9} {'ratio':>6} {'extra ms':>8} {'plain cpu':>9} "
                  f"{'tool cpu':>9} {'ratio':>6}")
            for k, ((a, ac), (b, bc)) in enumerate(zip(plain.windows(args.window), tool.windows(args.window))):
                lo = k * args.window
                print(f"  {lo:>6}-{min(lo + args.window, n):<6} {a:9.2f} {b:9.2f} {b / a:6.2f} {b - a:8.2f} "
                      f"{ac:9.2f} {bc:9.2f} {bc / ac:6.2f}", flush=True)
    print()
    print(f"sampler: {SAMPLER}; {'back to back' if args.back_to_back else 'side by side'}")
    print(f"{'n':>6} | {'plain ms/trial':>14} | {'tool ms/trial':>13} | {'wall ratio':>10} | {'extra ms':>8} | "
          f"{'plain cpu ms':>12} | {'tool cpu ms':>11} | {'cpu ratio':>9} | same points")
    for n, pw, tw, pc, tc, same in rows:
        print(f"{n:>6} | {pw:14.2f} | {tw:13.2f} | {tw / pw:10.3f} | {tw - pw:8.2f} | {pc:12.2f} | {tc:11.2f} | "
              f"{tc / pc:9.3f} | {same}/{n}")
    n, pw, tw, _, _, _ = rows[-1]
    print(f"{tw / pw:.3f} x")


if __name__ == "__main__":
    main()
