"""Trials per hour of the default proxy trial, alone and next to a CPU-bound neighbour, before and
after effnas's thread defaults (``proxy.threads: null`` = the CPUs the process may use, and
``OMP_WAIT_POLICY=PASSIVE`` set before torch loads).

Run from the repository root::

    python bench/contention.py [--rounds 3] [--trials 2] [--train-size 3000] [--minival-size 1000]

Every measurement is a fresh Python process (the OpenMP runtime reads its environment once, when
torch is imported) that loads Fashion-MNIST through ``effnas.task.load_data`` and times
``effnas.train.train_and_evaluate`` of EfficientNet-B0 with the task head (10 classes, 1 channel,
32 px, 1 epoch, the default proxy recipe otherwise), ``--trials`` times with seeds 0, 1, ...:

* ``before``: torch's default threads and OpenMP's default wait policy (GNU OpenMP spins about
  3 ms, ``GOMP_SPINCOUNT=300000``) -- what a trial got before this change;
* ``after``: ``effnas.threads.configure()`` before ``import torch`` and ``proxy.threads: null``.

Both start from this environment minus the OpenMP / MKL variables (``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``), so a value set in
your shell does not decide the comparison. The neighbour is another process spinning on pure
Python (one core's worth of work), started before the trial process and killed after it. Each
round runs the four cases side by side (order reversed every other round); the spin count each
runtime reports (``OMP_DISPLAY_ENV=VERBOSE``) is shown, so the table says whether the policy took
effect. The last line is the median over rounds of (after / before) trials per hour next to the
neighbour: > 1 means the new defaults run more trials per hour on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run without installing

from bench.common import child_env, cpu_busy, parse_result, print_result  # noqa: E402

OPENMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "OMP_DISPLAY_ENV")
NEIGHBOUR = "while True:\n    pass\n"


# ------------------------------------------------------------------------------------- one process


def child(mode: str, args: argparse.Namespace) -> None:
    """Run in a fresh process: time ``args.trials`` default proxy trials; print one JSON line."""
    if mode == "after":
        import effnas.threads

        effnas.threads.configure()  # before torch: the OpenMP runtime reads it when it loads
    import torch

    from effnas.task import load_data
    from effnas.train import ProxyConfig, train_and_evaluate
    from search_space import reference_spec

    threads = None if mode == "after" else torch.get_num_threads()  # before: torch's own default
    proxy = ProxyConfig(train_size=args.train_size, minival_size=args.minival_size, epochs=1, threads=threads)
    data = load_data({"name": "fashion_mnist"}, proxy, seed=0)
    spec = reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    seen = []
    walls, cpus, accs = [], [], []
    for seed in range(args.trials):
        w0, c0 = time.perf_counter(), time.process_time()
        result = train_and_evaluate(spec, data, proxy.train_config(seed),
                                    on_epoch=lambda e, a: seen.append(torch.get_num_threads()))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        accs.append(result.accuracy)
    print_result({"walls": walls, "cpus": cpus, "accuracy": accs, "threads": seen[-1]})


def measure(mode: str, neighbour: bool, args: argparse.Namespace) -> dict:
    # OMP_DISPLAY_ENV: the runtime prints the wait policy and spin count it uses
    env = child_env(drop=OPENMP_VARS, OMP_DISPLAY_ENV="VERBOSE")
    spinner = None
    if neighbour:
        spinner = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--trials", str(args.trials),
               "--train-size", str(args.train_size), "--minival-size", str(args.minival_size)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    out = proc.stdout + proc.stderr
    res = parse_result(proc.returncode, proc.stdout, proc.stderr, f"{mode} (neighbour={neighbour})")
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", out)
    policy = re.search(r"OMP_WAIT_POLICY = '(\w+)'", out)
    res["spin"] = spin.group(1) if spin else "?"
    res["policy"] = policy.group(1) if policy else "?"
    res["per_hour"] = len(res["walls"]) / sum(res["walls"]) * 3600
    return res


# ------------------------------------------------------------------------------------- the table


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 \
        else fmt.format(med)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repeat the four cases (order reversed every other round)")
    parser.add_argument("--trials", type=int, default=2, help="trials per process (seeds 0, 1, ...)")
    parser.add_argument("--train-size", type=int, default=3000, help="proxy training images (1 epoch)")
    parser.add_argument("--minival-size", type=int, default=1000, help="held-out images validated per trial")
    parser.add_argument("--child", choices=("before", "after"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    print(f"{cpus} CPUs for this process; EfficientNet-B0 (10 classes, 1 channel, 32 px), 1 epoch on "
          f"{args.train_size} Fashion-MNIST images + {args.minival_size} minival, {args.trials} trial(s) per "
          f"fresh process, {args.rounds} round(s)")
    busy = cpu_busy()
    if busy is not None and busy > 0.2:
        print(f"note: the CPUs are {busy:.0%} busy before the start: other processes share them already, so "
              f"'alone' means 'without the bench's neighbour'")
    cases = [("before", False), ("after", False), ("before", True), ("after", True)]
    results: dict[tuple[str, bool], list[dict]] = {c: [] for c in cases}
    started = time.perf_counter()
    for r in range(args.rounds):
        for case in (cases if r % 2 == 0 else cases[::-1]):
            res = measure(*case, args)
            results[case].append(res)
            print(f"  round {r + 1}: {case[0]:6s} {'next to a neighbour' if case[1] else 'alone':19s} "
                  f"trials {' '.join(f'{w:.1f}s' for w in res['walls'])} (CPU {' '.join(f'{c:.1f}s' for c in res['cpus'])}) "
                  f"-> {res['per_hour']:.0f} trials/h", flush=True)

    print()
    print("| case | neighbour | threads | GOMP spin count | trials/hour median (min-max) | s per trial | "
          "CPU s per trial |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        rs = results[case]
        walls = [w for res in rs for w in res["walls"]]
        cpus_ = [c for res in rs for c in res["cpus"]]
        print(f"| {case[0]} | {'1 spinning process' if case[1] else 'none'} | {rs[0]['threads']} | {rs[0]['spin']} | "
              f"{spread([res['per_hour'] for res in rs])} | {spread(walls, '{:.1f}')} | {spread(cpus_, '{:.1f}')} |")
    alone = [a["per_hour"] / b["per_hour"] for a, b in zip(results[("after", False)], results[("before", False)])]
    shared = [a["per_hour"] / b["per_hour"] for a, b in zip(results[("after", True)], results[("before", True)])]
    slow_before = [a["per_hour"] / b["per_hour"] for a, b in zip(results[("before", False)], results[("before", True)])]
    slow_after = [a["per_hour"] / b["per_hour"] for a, b in zip(results[("after", False)], results[("after", True)])]
    print()
    print(f"slowdown from the neighbour: before {spread(slow_before, '{:.2f}')} x, after {spread(slow_after, '{:.2f}')} x")
    print(f"after/before alone, per round: {', '.join(f'{x:.2f}' for x in alone)} (median {statistics.median(alone):.2f})")
    print(f"after/before next to a neighbour, per round: {', '.join(f'{x:.2f}' for x in shared)}")
    print(f"({time.perf_counter() - started:.0f} s)")
    print(f"after/before next to a neighbour: {statistics.median(shared):.2f} x")


if __name__ == "__main__":
    main()
