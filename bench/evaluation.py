"""Evaluation with BN folded into the convolutions vs the plain eval-mode network, side by side.

``effnas.train.evaluate`` (every proxy trial's minival accuracy, every epoch of ``nas-train``, the
re-rankings) and ``evaluator=supernet`` evaluate a copy of the network with each BatchNorm folded
into the convolution before it (``search_space.model.fold_batchnorm``). This bench measures what
that buys on the proxy's minival (5,000 Fashion-MNIST images at 32 px): for the reference networks
and seeded random networks of the default space, the plain eval-mode network (the reference) and
the folded one are timed in turns (A B A B ..., so a busy neighbour slows both alike) and their
logits compared (folding changes them by float rounding only). The networks are untrained, with
random BN statistics and affine weights (so every fold does real work): the arithmetic, and so
the time, is that of a trained network.

    python bench/evaluation.py [--random 6] [--rounds 3] [--threads 1]

Prints a line per network and last the median speed-up over all of them, as ``<ratio> x``.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--random", type=int, default=6, help="random networks of the default space (seeded)")
    ap.add_argument("--rounds", type=int, default=3, help="timed evaluations of each kind per network")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    import nas.config  # noqa: F401 -- root schemas
    from effnas.config import SpaceConfig
    from effnas.data import Batches
    from effnas.supernet.model import random_spec
    from effnas.task import load_data
    from effnas.threads import torch_threads
    from effnas.train import ProxyConfig
    from search_space import build_model, count_flops, reference_spec
    from search_space.model import fold_batchnorm

    proxy = ProxyConfig(threads=args.threads)
    data = load_data({"name": "fashion_mnist", "root": None, "download": False, "flip": True}, proxy, 0)
    batches = list(Batches(data.minival, proxy.eval_batch_size, data.mean, data.std, shuffle=False,
                           augment=False, channels_last=True))
    space = SpaceConfig().build(num_classes=10, in_channels=1, resolution=proxy.resolution)
    rng = random.Random(0)
    nets = {name: reference_spec(name, num_classes=10, in_channels=1).replace(resolution=proxy.resolution)
            for name in ("efficientnet-b0", "mnasnet-a1", "mobilenetv2")}
    nets.update({f"random {i}": random_spec(space, rng) for i in range(args.random)})

    def evaluate(model) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = torch.cat([model(x) for x, _ in batches])
        return logits, time.perf_counter() - t0

    ratios, worst = [], 0.0
    with torch_threads(args.threads):
        for name, spec in nets.items():
            torch.manual_seed(0)
            plain = build_model(spec).eval().to(memory_format=torch.channels_last)
            with torch.no_grad():  # statistics of a trained network, not the identity of a fresh one
                for m in plain.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean.normal_(0, 0.5)
                        m.running_var.uniform_(0.5, 2.0)
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.normal_(0, 0.5)
                folded = fold_batchnorm(copy.deepcopy(plain))
            evaluate(plain), evaluate(folded)  # warm-up
            times: dict[str, list[float]] = {"plain": [], "folded": []}
            logits = {}
            for _ in range(args.rounds):
                for kind, model in (("plain", plain), ("folded", folded)):
                    logits[kind], seconds = evaluate(model)
                    times[kind].append(seconds)
            scale = logits["plain"].abs().max().item()
            diff = (logits["plain"] - logits["folded"]).abs().max().item() / max(scale, 1e-12)
            agree = (logits["plain"].argmax(1) == logits["folded"].argmax(1)).float().mean().item()
            worst = max(worst, diff)
            ratio = statistics.median(times["plain"]) / statistics.median(times["folded"])
            ratios.append(ratio)
            print(f"{name} ({count_flops(spec, spec.resolution) / 1e6:.2f}M FLOPs): {len(data.minival)} images in "
                  f"{statistics.median(times['plain']):.3f} s plain, {statistics.median(times['folded']):.3f} s "
                  f"folded ({ratio:.2f}x); largest logit difference {diff:.1e} of the largest logit, same top-1 "
                  f"on {agree:.2%} of the images", flush=True)
    print(f"{len(ratios)} networks, {args.threads} thread{'s' if args.threads > 1 else ''}: the largest relative "
          f"logit difference {worst:.1e}; median speed-up of the folded evaluation (min {min(ratios):.2f}, "
          f"max {max(ratios):.2f}):")
    print(f"{statistics.median(ratios):.2f} x")


if __name__ == "__main__":
    main()
