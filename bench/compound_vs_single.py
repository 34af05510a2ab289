"""Compound scaling vs single-dimension scaling at matched FLOPs, on Fashion-MNIST.

The paper's central claim (EfficientNet, Table 3 / Figure 8): at the same FLOPs, scaling depth,
width and resolution together beats scaling any one of them. This tries it on the user's data:
from one B0, the compound members phi = 1 and 2 (``alpha**phi, beta**phi, gamma**phi``, about
2x and 4x the FLOPs) are compared with depth-only, width-only and resolution-only networks whose
*real, rounded* FLOPs are the closest to the compound member's (``scaling_search.grid.match_flops``).
Every network is trained with the same protocol and seeds; the test accuracy (the official 10k
test split) is printed side by side as a Markdown table.

The default base is a small B0 variant (width 0.35, depth 1.0, 48 px: 3.5M FLOPs, 0.54M params)
chosen so that phi = 1 and 2 land near 2x and 4x after rounding and the run takes about seven
minutes on 2 idle cores; every budget is a flag::

    python bench/compound_vs_single.py                       # defaults
    python bench/compound_vs_single.py --train-size 20000 --epochs 3 --seeds 0 1 2
    python bench/compound_vs_single.py --coefficients results/scale-fashion_mnist/coefficients.yaml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.search import load_data, train_config  # noqa: E402
from nas.train import train_and_evaluate  # noqa: E402
from scaling_search.family import Coefficients, load_coefficients  # noqa: E402
from scaling_search.grid import match_flops, measure_point  # noqa: E402
from search_space import count_flops, reference_spec, scale_spec  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-width", type=float, default=0.35, help="B0 variant: width multiplier of EfficientNet-B0")
    p.add_argument("--base-depth", type=float, default=1.0, help="B0 variant: depth multiplier of EfficientNet-B0")
    p.add_argument("--resolution", type=int, default=48, help="base resolution r0 (>= 32)")
    p.add_argument("--alpha", type=float, default=1.2, help="compound depth coefficient (paper: 1.2)")
    p.add_argument("--beta", type=float, default=1.1, help="compound width coefficient (paper: 1.1)")
    p.add_argument("--gamma", type=float, default=1.15, help="compound resolution coefficient (paper: 1.15)")
    p.add_argument("--coefficients", default=None, help="a coefficients.yaml from scale-search (overrides "
                   "--alpha/--beta/--gamma)")
    p.add_argument("--phis", type=int, nargs="+", default=[1, 2], help="compound members to compare at")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--train-size", type=int, default=4000, help="training images (fixed seeded subset)")
    p.add_argument("--minival-size", type=int, default=1000, help="held out of the training split")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="default: SGD 0.1 per 256 images")
    p.add_argument("--eval-split", choices=("test", "minival"), default="test")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--root", default=None, help="Fashion-MNIST folder (default: Debian's)")
    p.add_argument("--out", default=None, help="also write the rows as CSV here")
    return p.parse_args(argv)


def networks(args: argparse.Namespace) -> tuple[list[dict], object, Coefficients]:
    """B0, then for each phi the compound member and the three FLOPs-matched single-dimension ones."""
    if args.coefficients:
        coeffs, _ = load_coefficients(args.coefficients)
    else:
        coeffs = Coefficients(args.alpha, args.beta, args.gamma)
    b0 = reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    r0 = args.resolution
    base = scale_spec(b0, width=args.base_width, depth=args.base_depth).replace(resolution=r0)
    base_flops = count_flops(base, r0)
    point, spec = measure_point(base, r0, 1.0, 1.0, 1.0, base_flops=base_flops)
    rows = [{"target": "1x", "method": "B0", "point": point, "spec": spec}]
    for phi in args.phis:
        compound, spec = measure_point(base, r0, coeffs.alpha ** phi, coeffs.beta ** phi, coeffs.gamma ** phi,
                                       base_flops=base_flops)
        label = f"phi={phi} (x{compound.flops_ratio:.2f})"
        rows.append({"target": label, "method": f"compound (phi={phi})", "point": compound, "spec": spec})
        for kind in ("depth", "width", "resolution"):
            single, spec = match_flops(base, r0, kind, compound.flops)
            rows.append({"target": label, "method": f"{kind} only", "point": single, "spec": spec})
    return rows, base, coeffs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows, base, coeffs = networks(args)
    proxy = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads,
             "train_size": args.train_size, "minival_size": args.minival_size}
    dataset = {"name": "fashion_mnist", "root": args.root}
    cache: dict[int, object] = {}
    started = time.monotonic()
    total = len(rows) * len(args.seeds)
    done = 0
    for seed in args.seeds:
        cfg = train_config(proxy, seed)
        for row in rows:
            p = row["point"]
            if p.resolution not in cache:  # one fixed data split (seed 0) for every network and seed
                cache[p.resolution] = load_data(dataset, {**proxy, "resolution": p.resolution}, 0)
            result = train_and_evaluate(row["spec"], cache[p.resolution], cfg, eval_split=args.eval_split)
            row.setdefault("acc", {})[seed] = result.accuracy
            row.setdefault("seconds", 0.0)
            row["seconds"] += result.train_seconds
            done += 1
            print(f"[{done}/{total}, {time.monotonic() - started:.0f}s] seed {seed} {row['method']:<20} "
                  f"{p.resolution} px x{p.flops_ratio:.2f}: {args.eval_split} acc {result.accuracy:.4f} "
                  f"({result.train_seconds:.1f}s)", file=sys.stderr, flush=True)

    seeds = args.seeds
    print(f"Base: EfficientNet-B0 x width {args.base_width:g}, depth {args.base_depth:g} at {args.resolution} px "
          f"({count_flops(base, args.resolution) / 1e6:.2f}M FLOPs, "
          f"{rows[0]['point'].params / 1e6:.2f}M params); compound alpha={coeffs.alpha:g} "
          f"beta={coeffs.beta:g} gamma={coeffs.gamma:g}. Fashion-MNIST, {args.train_size} training images, "
          f"{args.epochs} epoch(s), batch {args.batch_size}, SGD + cosine, seeds {', '.join(map(str, seeds))}; "
          f"{args.eval_split} accuracy ({'10k official test split' if args.eval_split == 'test' else 'minival'}). "
          f"Single-dimension networks matched to the compound member's real (rounded) FLOPs. "
          f"Total {time.monotonic() - started:.0f}s.")
    print()
    head = ["FLOPs target", "method", "depth", "width", "resolution", "params", "MFLOPs", "x B0",
            *[f"acc seed {s}" for s in seeds], "mean acc"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    lines = []
    for row in rows:
        p, accs = row["point"], [row["acc"][s] for s in seeds]
        mean = sum(accs) / len(accs)
        cells = [row["target"], row["method"], f"{p.alpha:.3g}", f"{p.beta:.3g}", f"{p.resolution}",
                 f"{p.params / 1e6:.2f}M", f"{p.flops / 1e6:.2f}", f"{p.flops_ratio:.2f}",
                 *[f"{a:.4f}" for a in accs], f"**{mean:.4f}**" if row["method"].startswith("compound") else
                 f"{mean:.4f}"]
        print("| " + " | ".join(cells) + " |")
        lines.append({"target": row["target"], "method": row["method"], "depth": p.alpha, "width": p.beta,
                      "gamma": p.gamma, "resolution": p.resolution, "params": p.params, "flops": p.flops,
                      "flops_ratio": p.flops_ratio, **{f"acc_seed{s}": row["acc"][s] for s in seeds},
                      "mean_acc": mean, "train_seconds": row["seconds"]})
    if args.out:
        import pandas as pd

        pd.DataFrame(lines).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
