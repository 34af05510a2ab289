"""Trials per hour: 2 ``nas-search`` workers x 1 torch thread vs 1 worker x 2 threads.

Run from the repository root::

    python bench/workers.py [--trials N] [--train-size N] [--rounds R]

Both configurations run the same tiny search (random sampler, no pruning, no warm start, the
same proxy budget) against the same kind of storage (the journal file, the default), each in a
fresh study. Throughput is counted from the trials' own timestamps in the storage -- from the
first trial's start to the last trial's end -- so process start-up (imports, data loading, the
same in both) does not blur it; the wall time including start-up is printed too. The last line
is the ratio (> 1: two single-threaded workers beat one two-threaded worker).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.common import cpu_busy  # noqa: E402


def run(root: Path, name: str, workers: int, threads: int, args: argparse.Namespace) -> dict:
    common = [f"results_dir={root}", f"search.study_name={name}", f"search.n_trials={args.trials}",
              "sampler=random", "pruner=none", "search.warm_start=[]", f"proxy.train_size={args.train_size}",
              "proxy.minival_size=500", "proxy.epochs=1", f"proxy.threads={threads}",
              f"search.seed={args.seed}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "nas.cli", *common, f"worker={i}"], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(workers)]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
    if any(p.returncode for p in procs):
        raise SystemExit(f"{name}: a worker failed:\n" + "\n".join(o[-3000:] for o in outputs))
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / name / "study.journal")))
    trials = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials()
              if t.state == TrialState.COMPLETE]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    return {"trials": len(trials), "span": span, "wall": wall, "per_hour": len(trials) / span * 3600,
            "mean_trial": busy / len(trials), "workers": len({t.user_attrs.get("worker") for t in trials})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trial budget of each configuration")
    parser.add_argument("--train-size", type=int, default=1024, help="proxy training images per trial")
    parser.add_argument("--rounds", type=int, default=1, help="repeat both configurations, alternating")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.trials} trials of {args.train_size} images x 1 epoch, journal storage, "
          f"random sampler, no pruning")
    busy = cpu_busy()
    if busy is not None and busy > 0.2:  # OpenMP threads spin-wait: a busy core stalls a 2-thread worker
        print(f"warning: the CPUs are {busy:.0%} busy before the start: other processes share them, and a "
              f"multi-threaded worker suffers most; the ratio is not the one of an idle machine")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="effnas-bench-workers-") as tmp:
        root = Path(tmp)
        for r in range(args.rounds):
            one = run(root, f"one-{r}", workers=1, threads=2, args=args)
            two = run(root, f"two-{r}", workers=2, threads=1, args=args)
            for label, res in (("1 worker  x 2 threads", one), ("2 workers x 1 thread ", two)):
                print(f"round {r + 1}: {label}: {res['trials']} trials in {res['span']:.1f}s "
                      f"({res['per_hour']:.0f} trials/hour; mean trial {res['mean_trial']:.1f}s; "
                      f"{res['workers']} worker process(es); wall {res['wall']:.1f}s with start-up)")
            ratios.append(two["per_hour"] / one["per_hour"])
    print(f"workers speedup: {sum(ratios) / len(ratios):.2f} x")


if __name__ == "__main__":
    main()
