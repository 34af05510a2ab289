"""Seconds per candidate of ``evaluator=supernet`` at 1 and 2 threads (issue 13: "a trial in well
under a second on 2 cores"), and where the time goes.

Run from the repository root on a quiet machine::

    python bench/supernet_speed.py [--candidates 30] [--space default|noskip]

One supernet over the space, scored exactly as a trial is scored (``SupernetEvaluator.accuracy``:
the subnet extracted, its BN statistics re-estimated on ``recalibrate_batches`` training batches,
its accuracy on ``eval_size`` minival images; the evaluator's defaults), for the same seeded random
subnets at one thread and at two. The weights' values do not change the arithmetic, so a freshly
initialised supernet is timed (no training). ``noskip`` is the space where the supernet ranks best
(``space.ops=[mbconv] space.expand_ratios=[3,6]``: MBConv with expansion 3 or 6 everywhere, heavier
than the default space's average network). Prints, per thread count, the median / mean / max
seconds a candidate and the split of one candidate's time (extract, recalibrate, fold the BN into
the convolutions, evaluate), with the same evaluation of the unfolded network beside it (the
speed-up folding brings, measured side by side on the same subnets); the last line is the median
speed-up of 2 threads over 1, as ``<ratio> x``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACES = {"default": {}, "noskip": {"ops": ["mbconv"], "skips": ["identity", "none"], "expand_ratios": [3, 6]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--space", choices=sorted(SPACES), default="default")
    args = ap.parse_args()

    import optuna
    import torch

    import nas.config  # noqa: F401 -- root schemas
    from effnas.config import SpaceConfig
    from effnas.supernet.config import SupernetConfig
    from effnas.supernet.evaluate import SupernetEvaluator, _recalibrate_bn
    from effnas.supernet.model import SuperNet
    from effnas.task import load_data
    from effnas.threads import torch_threads
    from search_space.model import fold_batchnorm
    from effnas.train import ProxyConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_data({"name": "fashion_mnist", "root": None, "download": False, "flip": True}, ProxyConfig(), 0)
    space = SpaceConfig(**SPACES[args.space]).build(num_classes=10, in_channels=1, resolution=32)
    net = SuperNet(space).eval()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    specs = []
    for _ in range(args.candidates):
        trial = study.ask()
        specs.append(space.sample(trial))
        study.tell(trial, 0.0)
    cfg = SupernetConfig()
    medians = {}
    for threads in (1, 2):
        proxy = ProxyConfig(threads=threads)
        scorer = SupernetEvaluator(net, data, cfg, proxy, 0)
        scorer.accuracy(specs[0])  # warm-up
        seconds, parts, unfolded = [], {"extract": [], "recalibrate": [], "fold": [], "evaluate": []}, []

        def evaluate(model):
            with torch.inference_mode():
                for x, _ in scorer.minival:
                    model(x)

        for spec in specs:
            t0 = time.perf_counter()
            scorer.accuracy(spec)
            seconds.append(time.perf_counter() - t0)
        with torch.no_grad(), torch_threads(threads):  # the same steps, timed one by one
            for spec in specs[:10]:
                t0 = time.perf_counter()
                model = net.subnet(spec).to(memory_format=torch.channels_last)
                t1 = time.perf_counter()
                _recalibrate_bn(model, scorer.recal, len(scorer.recal))
                model.eval()
                t2 = time.perf_counter()
                evaluate(model)  # the reference: BN as a kernel of its own
                t3 = time.perf_counter()
                fold_batchnorm(model)  # as a trial does
                t4 = time.perf_counter()
                evaluate(model)
                parts["extract"].append(t1 - t0)
                parts["recalibrate"].append(t2 - t1)
                parts["fold"].append(t4 - t3)
                parts["evaluate"].append(time.perf_counter() - t4)
                unfolded.append(t3 - t2)
        medians[threads] = statistics.median(seconds)
        split = ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in parts.items())
        split += (f"; evaluating with BN unfolded {statistics.median(unfolded):.3f} s, folding's speed-up "
                  f"{statistics.median(u / f for u, f in zip(unfolded, parts['evaluate'])):.2f}x")
        print(f"{args.space} space, {threads} thread{'s' if threads > 1 else ''}: median {medians[threads]:.3f} s, "
              f"mean {statistics.fmean(seconds):.3f} s, max {max(seconds):.3f} s a candidate "
              f"({args.candidates} subnets; {cfg.recalibrate_batches} recalibration batches of {proxy.batch_size}, "
              f"{scorer.images} minival images; {split})", flush=True)
    print(f"{medians[1] / medians[2]:.2f} x")


if __name__ == "__main__":
    main()
