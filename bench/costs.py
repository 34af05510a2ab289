"""Closed-form ``count_flops`` vs fvcore's ``FlopCountAnalysis`` on EfficientNet-B0 at 224 px.

Run from the repository root::

    python bench/costs.py [--reps N] [--fvcore-reps M]

Both must report the same conv + linear multiply-adds; the last line is the speedup.
"""

from __future__ import annotations

import argparse
import sys
import timeit
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

import torch  # noqa: E402

with warnings.catch_warnings():  # fvcore.nn calls torch.jit.script at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis  # noqa: E402

from search_space import build_model, count_flops, reference_spec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5000, help="count_flops repetitions per round")
    parser.add_argument("--fvcore-reps", type=int, default=3, help="fvcore repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the fvcore trace")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = reference_spec("efficientnet-b0")
    res = 224
    model = build_model(spec).eval()
    x = torch.zeros(1, spec.in_channels, res, res)

    def fvcore_count() -> tuple[int, int]:
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        total = analysis.total()  # every operator fvcore knows (conv, linear, BN, pooling)
        ops = analysis.by_operator()  # same (cached) trace
        return int(total), int(ops.get("conv", 0) + ops.get("linear", 0))

    ours = count_flops(spec, res)
    fv_total, fv_conv_linear = fvcore_count()  # also warms up the tracer
    print(f"spec: efficientnet-b0 @ {res}px  ({spec.to_string()})")
    print(f"count_flops          conv+linear = {ours:,}")
    print(f"fvcore               conv+linear = {fv_conv_linear:,}  (all operators: {fv_total:,})")
    if ours != fv_conv_linear:
        raise SystemExit(f"MISMATCH: count_flops {ours:,} != fvcore conv+linear {fv_conv_linear:,}")
    print("match: yes")

    rounds = 5
    t_ours = min(timeit.repeat(lambda: count_flops(spec, res), number=args.reps, repeat=rounds))
    t_ours /= args.reps
    t_fv = min(timeit.repeat(fvcore_count, number=1, repeat=args.fvcore_reps))
    print(f"count_flops: {t_ours * 1e6:9.1f} us/call  (best of {rounds} x {args.reps} calls)")
    print(f"fvcore:      {t_fv * 1e6:9.1f} us/call  (best of {args.fvcore_reps}, model prebuilt, "
          f"{args.threads} torch thread(s))")
    print(f"flops speedup vs fvcore: {t_fv / t_ours:,.0f} x")


if __name__ == "__main__":
    main()
