"""Proxy-trainer throughput vs a plain PyTorch loop on efficientnet-pytorch's equivalent model.

Both train EfficientNet-B0 scaled to width 0.5 / depth 0.5 at 32 px on 1-channel Fashion-MNIST
(10 classes), batch 128, SGD, in this one process. The two are interleaved (A B A B ...) and the
median epoch throughput of each is compared, so a busy neighbour slows both alike. Also prints
the trainer's achieved GFLOP/s (training ~ 3x the forward multiply-adds, 2 FLOPs per multiply-add)
next to the machine's fp32 matmul GFLOP/s measured here.

    python bench/trainer.py [--images 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def plain_loop_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """A straightforward loop: DataLoader over float tensors, default memory format."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch,
                                         shuffle=True, drop_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    n = 0
    t0 = time.perf_counter()
    for xb, yb in loader:
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += xb.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()

    from efficientnet_pytorch import EfficientNet

    from nas.data import Batches, load_splits
    from nas.train import TrainConfig, train_and_evaluate
    from search_space import count_flops, reference_spec, scale_spec

    data = load_splits("fashion_mnist", resolution=32, minival_size=1000, train_size=args.images, seed=0)
    spec = scale_spec(reference_spec("efficientnet-b0", num_classes=10, in_channels=1), width=0.5,
                      depth=0.5, resolution=32)
    ref = EfficientNet.from_name("efficientnet-b0", width_coefficient=0.5, depth_coefficient=0.5,
                                 image_size=32, in_channels=1, num_classes=10, dropout_rate=0.2)
    # the same images, normalised the same way, as plain float tensors for the plain loop
    xs, ys = [], []
    for xb, yb in Batches(data.train, 1000, data.mean, data.std, channels_last=False):
        xs.append(xb.contiguous())
        ys.append(yb)
    x, y = torch.cat(xs), torch.cat(ys)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, augment=False, bn_recalibrate_batches=0,
                      eval_batch_size=1000)
    ours, plain = [], []
    # one warm-up round of each (oneDNN primitive caches, allocator), not counted
    train_and_evaluate(spec, data, cfg)
    plain_loop_epoch(ref, x, y, args.batch)
    for r in range(args.rounds):
        res = train_and_evaluate(spec, data, cfg)
        ours.append(res.images_per_second)
        plain.append(plain_loop_epoch(ref, x, y, args.batch))
        print(f"round {r + 1}: effnas trainer {ours[-1]:7.0f} img/s | plain loop on efficientnet-pytorch "
              f"{plain[-1]:7.0f} img/s", flush=True)
    ours_m, plain_m = statistics.median(ours), statistics.median(plain)
    macs = count_flops(spec)
    achieved = 3 * 2 * macs * ours_m / 1e9
    peak = matmul_gflops()
    print(f"model: {spec.num_blocks} blocks, {macs / 1e6:.2f}M multiply-adds per image at 32 px, "
          f"batch {args.batch}, {args.images} images, torch threads {torch.get_num_threads()}")
    print(f"trainer achieved {achieved:.1f} GFLOP/s vs matmul {peak:.1f} GFLOP/s on this machine "
          f"({100 * achieved / peak:.1f}% of matmul)")
    print(f"trainer speedup vs plain loop: {ours_m / plain_m:.2f} x")


if __name__ == "__main__":
    main()
