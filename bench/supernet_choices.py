"""Which choices of the MnasNet space a weight-sharing supernet can serve.

    python bench/supernet_choices.py [--results results/supernet-choices] [--epochs 4]
                                     [--train-size 5000] [--subnets 16] [--jobs 2]
                                     [--variants nested,expand1,conv,noskip,full]
                                     [--stage-distill W] [--progressive F] [--distill on|off]
                                     [--random-subnets N] [--smoke]

``evaluator=supernet`` serves every subnet only where its random subnets learn while it trains.
This bench starts from the **nested** space -- every choice a prefix of one weight tensor:
``ops=[mbconv]``, ``skips=[identity]``, ``expand_ratios=[3, 6]``, with kernels, SE, widths and
depths as in the default space -- and adds back one of the MnasNet space's other choices at a time:

* ``expand1``: expansion ratio 1 (the depthwise-separable conv, a branch of its own);
* ``conv``: the regular conv op (a dense kernel, a branch of its own);
* ``noskip``: the ``none`` skip (a stage without residual connections);
* ``full``: the default space (all of them).

Each variant trains its own supernet with the evaluator's training as it was when this bench was
measured (the sandwich rule, in-place distillation, no stage-wise distillation: the bench's
defaults, the evaluator's before 2026-12-02; ``--distill off --stage-distill 10`` is today's; the
proxy recipe; ``--epochs`` on ``--train-size`` Fashion-MNIST images; cached
under ``<results>/cache``, so a rerun loads it), then scores ``--subnets`` random subnets (seeded,
uniform over the variant's space), the largest and the smallest: inherited weights, BN
re-estimated, minival accuracy, as ``nas-search evaluator=supernet`` scores a trial. It also
reports the random subnets' own training loss in the last epoch (hard labels, ``ln 10`` = 2.30 is
a uniform guess). ``--stage-distill W`` trains every variant's supernet with the stage-wise feature
loss (``evaluator.stage_distill``), ``--progressive F`` phases the non-nested options in over that
fraction of the training (``evaluator.progressive``), ``--distill off`` trains without in-place distillation, ``--random-subnets N`` with N random
subnets a step (default 2, the evaluator's): each
setting has its own supernets and rows. Variants run ``--jobs`` at a time, one thread each; every finished variant is
saved to ``<results>/choices.json`` (an interrupted bench resumes; a supernet's training resumes
at its last epoch). The last line: ``nested median <acc>, full median <acc> (chance 0.100)``.
``--smoke`` runs toy sizes to check the machinery: its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effnas.threads  # noqa: E402

effnas.threads.configure()  # OMP_WAIT_POLICY=PASSIVE before torch loads (inherited by the workers)

from bench.common import Runs  # noqa: E402

NESTED = {"ops": ["mbconv"], "skips": ["identity"], "expand_ratios": [3, 6]}
VARIANTS: dict[str, dict] = {
    "nested": NESTED,
    "expand1": {**NESTED, "expand_ratios": [1, 3, 6]},
    "conv": {**NESTED, "ops": ["mbconv", "conv"]},
    "noskip": {**NESTED, "skips": ["identity", "none"]},
    "full": {},  # the default space
}

log = logging.getLogger("bench")


def run_variant(name: str, options: dict, settings: dict) -> dict:
    """Train (or load) the variant's supernet and score its subnets; one thread, in its own process."""
    os.environ["OMP_NUM_THREADS"] = "1"
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s] {name}: %(message)s", datefmt="%H:%M:%S",
                        force=True)  # a pool process runs one variant after another
    from effnas.supernet import SupernetConfig
    from effnas.supernet.evaluate import supernet_evaluator
    from effnas.supernet.model import largest_spec, smallest_spec
    from effnas.task import load_data
    from effnas.train import ProxyConfig
    from search_space import SearchSpace, default_space

    dataset = {"name": "fashion_mnist", "root": settings["root"], "download": False}
    proxy = ProxyConfig(threads=1, **settings["proxy"])
    data = load_data(dataset, proxy, 0)
    space = SearchSpace.from_config(options, num_classes=data.num_classes, in_channels=data.in_channels,
                                    resolution=proxy.resolution) if options else \
        default_space(data.num_classes, data.in_channels, proxy.resolution)
    cfg = SupernetConfig(**settings["supernet"])
    t0 = time.perf_counter()
    scorer = supernet_evaluator(cfg, dataset, proxy, space, data, 0, settings["cache"])
    setup = time.perf_counter() - t0
    health = scorer.check(settings["subnets"], seed=1)
    history = scorer.net.history
    return {"space": options or "default", **{k: health[k] for k in ("median", "min", "max", "chance")},
            "largest": scorer.accuracy(largest_spec(space)), "smallest": scorer.accuracy(smallest_spec(space)),
            "random_loss": history[-1].get("random_loss") if history else None,
            "largest_loss": history[-1]["loss"] if history else None,
            "train_seconds": sum(h["seconds"] for h in history), "setup_seconds": setup,
            "subnets": settings["subnets"], "supernet": cfg.training_settings()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/supernet-choices")
    ap.add_argument("--epochs", type=int, default=4, help="evaluator.epochs of every variant's supernet")
    ap.add_argument("--train-size", type=int, default=5000, help="evaluator.train_size")
    ap.add_argument("--subnets", type=int, default=16, help="random subnets scored per variant")
    ap.add_argument("--stage-distill", type=float, default=0.0,
                    help="evaluator.stage_distill of every variant's supernet (0: off, this bench's default)")
    ap.add_argument("--distill", choices=("on", "off"), default="on",
                    help="evaluator.distill (on: this bench's default)")
    ap.add_argument("--random-subnets", type=int, default=2, help="evaluator.random_subnets (sandwich rule)")
    ap.add_argument("--progressive", type=float, default=0.0,
                    help="evaluator.progressive of every variant's supernet (0: off, the default)")
    ap.add_argument("--jobs", type=int, default=2, help="variants at a time (one thread each)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--root", default=None, help="the Fashion-MNIST folder (dataset.root; default: Debian's)")
    ap.add_argument("--smoke", action="store_true", help="toy sizes: checks the machinery, numbers mean nothing")
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        ap.error(f"--variants {args.variants!r}: expected a comma-separated list of {', '.join(VARIANTS)}")
    if min(args.epochs, args.train_size, args.subnets, args.jobs) < 1:
        ap.error("--epochs, --train-size, --subnets and --jobs must be >= 1")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")

    out = Path(args.results)
    smoke = args.smoke
    settings = {
        "root": args.root, "cache": str(out / "cache"), "subnets": 3 if smoke else args.subnets,
        "proxy": {"train_size": 256, "minival_size": 200} if smoke else {},
        "supernet": {**({"epochs": 1, "train_size": 256, "recalibrate_batches": 1, "eval_size": 100} if smoke else
                        {"epochs": args.epochs, "train_size": args.train_size}),
                     "stage_distill": args.stage_distill, "progressive": args.progressive,
                     "random_subnets": args.random_subnets,
                     "distill": args.distill == "on"},
    }
    sn = settings["supernet"]
    from effnas.supernet import SupernetConfig

    try:  # checked here, not in the workers: a bad value is one line, before anything runs
        SupernetConfig(**sn)
    except ValueError as exc:
        ap.error(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    runs = Runs(out / "choices.json")
    setting = "" if sn["distill"] else "/no-distill"
    setting += f"/random{sn['random_subnets']}" if sn["random_subnets"] != 2 else ""
    setting += f"/stage{sn['stage_distill']:g}" if sn["stage_distill"] else ""
    setting += f"/progressive{sn['progressive']:g}" if sn["progressive"] else ""
    key = lambda name: f"{name}/{sn['epochs']}x{sn['train_size']}/{settings['subnets']}{setting}"  # noqa: E731
    todo = [n for n in names if runs.get(key(n)) is None]
    log.info("variants: %s (%d to train, %d at a time)", ", ".join(names), len(todo), args.jobs)
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_variant, n, VARIANTS[n], settings): n for n in todo}
        for done, future in enumerate(cf.as_completed(futures), 1):
            name = futures[future]
            runs.put(key(name), future.result())
            log.info("%s done (%d/%d, %.0f s)", name, done, len(todo), time.perf_counter() - t0)

    print(f"\nsupernets of {sn['epochs']} epochs on {sn['train_size']} images (distillation "
          f"{'on' if sn['distill'] else 'off'}, stage-wise feature distillation {sn['stage_distill']:g}, "
          f"progressive {sn['progressive']:g}, {sn['random_subnets']} random subnets a step); "
          f"{settings['subnets']} random subnets each (minival accuracy, BN re-estimated)")
    print(f"{'variant':9s} {'median':>7s} {'min':>6s} {'max':>6s} {'largest':>8s} {'smallest':>9s} "
          f"{'loss random':>12s} {'loss largest':>13s} {'train s':>8s}")
    for name in names:
        r = runs.get(key(name))
        loss = "-" if r["random_loss"] is None else f"{r['random_loss']:.3f}"
        print(f"{name:9s} {r['median']:7.3f} {r['min']:6.3f} {r['max']:6.3f} {r['largest']:8.3f} {r['smallest']:9.3f} "
              f"{loss:>12s} {r['largest_loss']:13.3f} {r['train_seconds']:8.0f}")
    ends = dict.fromkeys([names[0], names[-1]])  # the first and the last variant (once, when they are one)
    print(", ".join(f"{n} median {runs.get(key(n))['median']:.3f}" for n in ends)
          + f" (chance {runs.get(key(names[0]))['chance']:.3f})")


if __name__ == "__main__":
    main()
