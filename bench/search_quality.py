"""TPE vs random search at the same trial budget, over several seeds, on Fashion-MNIST.

Every candidate gets the same proxy protocol (``nas-search``'s defaults unless overridden here)
and the reward ACC * (FLOPs / T)^-0.07 with T = EfficientNet-B0's FLOPs at the proxy shape.
EfficientNet-B0 itself, trained by the same proxy with each seed, is the reference.

    python bench/search_quality.py [--trials 16] [--seeds 3] [--train-size 5000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import optuna

from nas.search import run_search

optuna.logging.set_verbosity(optuna.logging.WARNING)


def config(tmp: str, sampler: dict, seed: int, trials: int, args, warm: list[str]) -> dict:
    return {
        "results_dir": tmp,
        "dataset": {"name": "fashion_mnist", "root": None, "download": False, "flip": True},
        "space": {}, "sampler": sampler, "pruner": {"name": "none"}, "storage": {"kind": "journal"},
        "objective": {"metric": "flops", "target": "auto", "w": -0.07},
        "search": {"study_name": f"{sampler['name']}-{seed}-{len(warm)}", "n_trials": trials, "seed": seed,
                   "warm_start": warm},
        "proxy": {"epochs": args.epochs, "train_size": args.train_size, "minival_size": args.minival_size,
                  "resolution": 32},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-size", type=int, default=5000)
    ap.add_argument("--minival-size", type=int, default=2000)
    ap.add_argument("--startup", type=int, default=5, help="TPE's random start-up trials")
    ap.add_argument("--independent", action="store_true",
                    help="independent TPE instead of nas-search's default multivariate, grouped TPE")
    args = ap.parse_args()
    best: dict[str, list[float]] = {"tpe": [], "random": [], "efficientnet-b0": []}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            ref = run_search(config(tmp, {"name": "random"}, seed, 1, args, ["efficientnet-b0"]))
            best["efficientnet-b0"].append(ref.best["reward"])
            tpe = {"name": "tpe", "n_startup_trials": args.startup}
            if not args.independent:  # nas-search's default (conf/sampler/tpe.yaml)
                tpe.update(multivariate=True, group=True)
            for name, sampler in (("tpe", tpe),
                                  ("random", {"name": "random"})):
                out = run_search(config(tmp, sampler, seed, args.trials, args, []))
                best[name].append(out.best["reward"] if out.best else float("nan"))
            print(f"seed {seed}: best reward  TPE {best['tpe'][-1]:.4f}  random {best['random'][-1]:.4f}  "
                  f"EfficientNet-B0 {best['efficientnet-b0'][-1]:.4f}  ({time.time() - t0:.0f}s)", flush=True)
    mean = {k: statistics.mean(v) for k, v in best.items()}
    print(f"{args.trials} trials per search, {args.seeds} seeds, {args.train_size} training images, "
          f"{args.epochs} epoch(s) at 32 px")
    print(f"mean best reward: TPE {mean['tpe']:.4f} | random {mean['random']:.4f} | "
          f"EfficientNet-B0 {mean['efficientnet-b0']:.4f}")
    print(f"TPE / random: {mean['tpe'] / mean['random']:.3f} x, random / B0: "
          f"{mean['random'] / mean['efficientnet-b0']:.3f} x")


if __name__ == "__main__":
    main()
