"""The proxy trainer and the default stage-1 search on a CUDA device, against the same machine's CPU.

Run on a machine with a GPU (it refuses to run without one):

    python bench/cuda.py --root /path/to/fashion-mnist [--search]

1. Trainer throughput: EfficientNet-B0 at width/depth 0.5 (the bench/trainer.py network) and the
   full EfficientNet-B0, 32 px, batch 128, one epoch on 10,000 Fashion-MNIST images, on the GPU and
   on all of the machine's CPU cores, side by side (median of 3 rounds after a warm-up).
2. With ``--search``: the README's default ``nas-search`` (40 trials, re-ranking of the top 3) with
   ``proxy.device=cuda``, timed end to end, and its winner.
Prints the GPU/CPU throughput ratio of the full B0 last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def throughput(spec, data, device: str, rounds: int = 3) -> float:
    from effnas.train import TrainConfig, train_and_evaluate

    cfg = TrainConfig(epochs=1, batch_size=128, device=device, bn_recalibrate_batches=0, augment=True)
    train_and_evaluate(spec, data, cfg)  # warm-up (cuDNN autotuning, allocator)
    rates = []
    for _ in range(rounds):
        result = train_and_evaluate(spec, data, cfg)
        rates.append(result.images_per_second)
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="the Fashion-MNIST folder (the four IDX .gz files)")
    ap.add_argument("--search", action="store_true", help="also time the default nas-search on the GPU")
    ap.add_argument("--results", default="/tmp/effnas-cuda-results")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; this benchmark measures one")
    from effnas.task import load_data
    from effnas.train import ProxyConfig
    from search_space import reference_spec, scale_spec

    data = load_data({"name": "fashion_mnist", "root": args.root}, ProxyConfig(train_size=10000), seed=0)
    b0 = reference_spec("efficientnet-b0", num_classes=10, in_channels=1).replace(resolution=32)
    small = scale_spec(b0, width=0.5, depth=0.5).replace(resolution=32)
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPU cores")
    rows = []
    for name, spec in (("B0 w0.5 d0.5", small), ("EfficientNet-B0", b0)):
        gpu = throughput(spec, data, "cuda")
        torch.set_num_threads(os.cpu_count() or 1)
        cpu = throughput(spec, data, "cpu", rounds=1)
        rows.append((name, gpu, cpu))
        print(f"{name:>16}: GPU {gpu:,.0f} img/s, CPU ({os.cpu_count()} cores) {cpu:,.0f} img/s, "
              f"GPU/CPU {gpu / cpu:.2f}x", flush=True)

    if args.search:
        start = time.monotonic()
        cmd = [sys.executable, "-c", "from nas.cli import search_main; search_main()",
               f"results_dir={args.results}", f"dataset.root={args.root}", "proxy.device=cuda"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - start
        print(proc.stdout, end="")
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
        best = json.loads((Path(args.results) / "nas-fashion_mnist" / "best.json").read_text())
        print(f"default nas-search on the GPU: {wall:.0f} s end to end (exit {proc.returncode}); winner "
              f"trial {best['trial']} selected by {best['selected_by']}, {best['flops'] / 1e6:.2f}M FLOPs")
    name, gpu, cpu = rows[-1]
    print(f"{gpu / cpu:.2f} x")


if __name__ == "__main__":
    main()
