"""Training speed with glibc's malloc vs tcmalloc (or jemalloc), side by side, on the real trainer.

Run from the repository root (Debian: ``apt-get install libtcmalloc-minimal4 libjemalloc2``)::

    python bench/allocator.py [--rounds 3] [--train-size 6400] [--arch efficientnet-b0] [--other tcmalloc]

Each round starts two fresh processes at the same moment, one per core, one thread each -- how
``bench/pipeline.py`` trains: one with the C library's malloc, one with ``LD_PRELOAD`` set to the
other allocator. Both load Fashion-MNIST through ``effnas.task.load_data`` and run
``effnas.train.train_and_evaluate`` of the network (10 classes, 1 channel, 32 px, 1 epoch on
``--train-size`` images, seed 0, the proxy recipe otherwise) and report the training images per
second, the CPU seconds and the minor page faults per training step. The two must reach the same
accuracy (the allocator does not change the arithmetic): checked. Load from elsewhere slows both
alike; the order they start in swaps every other round. The last line is the median over rounds
of (other / glibc) images per second, as ``<ratio> x``: > 1 means the other allocator trains faster.

Why it can matter: glibc returns large freed blocks to the system (``mmap``/``munmap`` above the
mmap threshold, and trimming the heap top), so every training step maps fresh pages for its
activations and the kernel zeroes them on first touch -- thousands of page faults a step.
"""

from __future__ import annotations

import argparse
import ctypes.util
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run without installing

from bench.common import child_env, parse_result, print_result  # noqa: E402

LIBRARIES = {"tcmalloc": "tcmalloc_minimal", "jemalloc": "jemalloc"}
# glibc kept, but large blocks stay in the heap and the heap is not trimmed: no mmap per step
TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"


def child(args: argparse.Namespace) -> None:
    """In a fresh process: one training; print one JSON line."""
    import effnas.threads

    effnas.threads.configure()
    from effnas.task import load_data
    from effnas.train import ProxyConfig, train_and_evaluate
    from search_space import reference_spec

    proxy = ProxyConfig(train_size=args.train_size, minival_size=1000, epochs=1, threads=1)
    data = load_data({"name": "fashion_mnist"}, proxy, seed=0)
    spec = reference_spec(args.arch, num_classes=10, in_channels=1)
    faults0, cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    result = train_and_evaluate(spec, data, proxy.train_config(0))
    steps = args.train_size // proxy.batch_size
    print_result({
        "images_per_second": result.images_per_second, "accuracy": result.accuracy,
        "cpu": time.process_time() - cpu0,
        "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps})


def start(preload: str | None, args: argparse.Namespace) -> subprocess.Popen:
    extra = {"GLIBC_TUNABLES": TUNED} if preload == TUNED else {"LD_PRELOAD": preload} if preload else {}
    env = child_env(drop=("LD_PRELOAD", "GLIBC_TUNABLES"), **extra)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--train-size", str(args.train_size),
           "--arch", args.arch]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen, what: str) -> dict:
    out, err = proc.communicate()
    return parse_result(proc.returncode, out, err, what)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=6400, help="training images (1 epoch; batch 128)")
    parser.add_argument("--arch", default="efficientnet-b0")
    parser.add_argument("--other", choices=[*sorted(LIBRARIES), "glibc-tuned"], default="tcmalloc",
                        help="glibc-tuned: glibc with GLIBC_TUNABLES raising the mmap and trim thresholds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    library = TUNED if args.other == "glibc-tuned" else ctypes.util.find_library(LIBRARIES[args.other])
    if library is None:
        raise SystemExit(f"--other {args.other}: lib{LIBRARIES[args.other]} not found; install "
                         f"{'libtcmalloc-minimal4' if args.other == 'tcmalloc' else 'libjemalloc2'} (Debian)")
    print(f"{args.arch}, 1 epoch on {args.train_size} images, 32 px, batch 128, one thread a process; "
          f"glibc malloc vs {library} side by side", flush=True)
    ratios = []
    for r in range(args.rounds):
        order = [None, library] if r % 2 == 0 else [library, None]
        procs = {lib: start(lib, args) for lib in order}
        res = {lib: result_of(p, lib or "glibc") for lib, p in procs.items()}
        base, other = res[None], res[library]
        if base["accuracy"] != other["accuracy"]:
            raise SystemExit(f"round {r + 1}: accuracies differ ({base['accuracy']} vs {other['accuracy']}): "
                             f"the allocator changed the training")
        ratio = other["images_per_second"] / base["images_per_second"]
        ratios.append(ratio)
        print(f"round {r + 1}: glibc {base['images_per_second']:.0f} img/s ({base['cpu']:.1f} s CPU, "
              f"{base['faults_per_step']:.0f} page faults a step), {args.other} {other['images_per_second']:.0f} img/s "
              f"({other['cpu']:.1f} s CPU, {other['faults_per_step']:.0f} a step): {ratio:.3f}x; "
              f"accuracy {base['accuracy']:.4f} both", flush=True)
    print(f"{args.other} / glibc images per second, median of {len(ratios)} rounds "
          f"({min(ratios):.3f}-{max(ratios):.3f}):")
    print(f"{statistics.median(ratios):.3f} x")


if __name__ == "__main__":
    main()
