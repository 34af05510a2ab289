"""Rank fidelity and speed of the weight-sharing evaluator (``evaluator=supernet``) vs the proxy.

    python bench/supernet.py [--results results/supernet] [--archs 30] [--search-trials 100]
                             [--final-seeds 2] [--threads N] [--reference 2x20000 [--jobs 2]]
                             [--tau-only] [--smoke]

On Fashion-MNIST at the default protocol (``proxy`` group defaults: 1 epoch on 10,000 images,
5,000 minival images, 32 px; ``evaluator=supernet`` defaults for the supernet):

1. **The supernet**: trained once (or loaded from ``<results>/cache``, keyed like ``nas-search``'s
   cache); its training time is the sum of its epochs' times, kept in the cached file.
2. **Rank fidelity**: ``--archs`` random architectures of the default space (each choice uniform,
   seeded, distinct networks) are scored by the supernet (inherited weights, BN re-estimated) and
   trained stand-alone with the proxy protocol (``train_and_evaluate``, default ``ProxyConfig``,
   seed = the architecture's index). Kendall tau-b between the two accuracies (and between the
   two rewards, ``ACC * (FLOPs / T)^-0.07``).
3. **Speed**: candidates per hour of each evaluator, from the measured wall time per candidate
   (the proxy's includes its validation; the supernet's its extraction, BN re-estimation and
   validation), per candidate and including the supernet's training amortised over the
   candidates a search of ``--search-trials`` proxy trials' wall time would score.
4. **Equal wall time**: a random search with the proxy evaluator over ``--search-trials``
   architectures (the first ``--archs`` are step 2's) takes wall time W. In W the supernet
   evaluator scores a random search of its own (the same seeded stream, continued) -- counted
   with its training time (``incl. training``: what a first search on a new dataset gets) and
   without it (``amortised``: a search that finds the supernet cached). Each search's best by
   reward is then re-trained stand-alone at a higher fidelity (2 epochs on 20,000 images, the
   ``rerank`` defaults; ``--final-seeds`` seeds) and the mean reward and accuracy compared.

Random search on both sides, so that the evaluators differ only in how they score. Every run is
saved to ``<results>/supernet.json`` as it finishes: an interrupted bench resumes there (a
multi-epoch re-training after its last saved epoch, from ``<results>/checkpoints/``). The
supernet's settings can be changed for ablations (``--epochs``, ``--train-size``,
``--random-subnets``, ``--lr``, ``--sampling fair``, ``--distill on|off``, ``--stage-distill``, ``--progressive``, ``--recalibrate-batches``, ``--eval-size``): each setting
gets rows of its own in the same file (keyed by its cache key and scoring settings), and the
stand-alone proxy runs are shared. ``--supernet-seed N`` trains another supernet of the same
setting (``evaluator.seed``); once the file holds several, the bench also prints each one's tau,
their mean and spread, and the tau of their mean accuracy. ``--sensitivity`` scores the largest subnet with one op, skip or expansion choice of one stage
changed at a time (which options the shared weights serve badly). ``--ceiling`` also trains the tau set with a second proxy seed:
the tau of the proxy against itself, the most any evaluator can reach against it. ``--reference
2x20000`` also trains the tau set stand-alone at that fidelity (epochs x images, ``--reference-seeds``
seeds, ``--jobs`` trainings at a time in one-thread processes; rows shared with the final
re-trainings) and prints the tau of the supernet, of the proxy and of FLOPs against the seeds' mean
accuracy, and of the reference against itself: whether the supernet predicts what a longer training
would see, where the 1-epoch proxy cannot rank. With two seeds or more (the ceiling, the
reference) it also prints how far apart the networks are (the standard deviation of their seed
means) against the seeds' own standard deviation: where the first is not well above the second,
no tau against those runs can be measured (networks that do not differ at all give the second
divided by the square root of the seed count). ``--supernet-only`` trains (or loads) the supernet and stops, so that
other settings' supernets can train beside a run that trains the proxy's tau set. ``--tau-only`` stops after rank fidelity (no
equal-wall-time search, no final re-trainings; the proxy trains the tau set only). It also logs the supernet's median accuracy over the tau set
next to chance (a supernet whose random subnets score at chance ranks nothing). The last
line is ``tau <tau>, <speedup> x candidates/hour`` (tau of accuracies; the per-candidate speedup).
Goals (issue 13): tau >= 0.6, >= 10x. ``--smoke`` runs every step at toy sizes to check the
machinery only: its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effnas.threads  # noqa: E402

effnas.threads.configure()  # OMP_WAIT_POLICY=PASSIVE before torch loads, as the CLIs do (inherited by the workers)

from bench.common import Runs, checkpoint_path, kendall_tau, partial_tau  # noqa: E402

log = logging.getLogger("bench")


def random_archs(space, seed: int):
    """An endless stream of distinct random networks of ``space`` (distinct network keys)."""
    from effnas.supernet.model import random_spec

    rng, seen = random.Random(seed), set()
    while True:
        spec = random_spec(space, rng)
        key = spec.network_key()
        if key not in seen:
            seen.add(key)
            yield spec


def space_options(items: list[str], ap: argparse.ArgumentParser) -> dict:
    """``--space KEY=V1,V2`` items as a space config (numbers where they parse)."""
    def value(text: str):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    options = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key or not values:
            ap.error(f"--space {item!r}: expected KEY=V1,V2,... (e.g. ops=mbconv)")
        options[key] = [value(v) for v in values.split(",")]
    return options


def fidelity(text: str) -> tuple[int, int]:
    """``EPOCHSxIMAGES`` (``2x20000``): a stand-alone training budget."""
    epochs, x, images = text.partition("x")
    if not (x and epochs.isdigit() and images.isdigit() and int(epochs) >= 1 and int(images) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r}: expected EPOCHSxIMAGES with both >= 1, e.g. 2x20000")
    return int(epochs), int(images)


def seed_means(per_seed: list[list[float]]) -> list[float]:
    """Each network's mean accuracy over the seeds (``per_seed[s][i]``: seed ``s``, network ``i``)."""
    return [statistics.fmean(accs) for accs in zip(*per_seed)]


def spread(per_seed: list[list[float]]) -> dict:
    """How far apart the networks are against how far one network's seeds are: the standard
    deviation of the per-network seed means across networks, and the pooled standard deviation of
    one network's seeds. Where the first is not well above the second, no ranking is measurable."""
    means = seed_means(per_seed)
    seed_var = statistics.fmean(statistics.variance(accs) for accs in zip(*per_seed)) if len(per_seed) > 1 else None
    return {"sd_between": statistics.stdev(means), "sd_seed": None if seed_var is None else seed_var ** 0.5}


def _spread_text(s: dict) -> str:
    return (f"sd between networks {100 * s['sd_between']:.2f} points"
            + ("" if s["sd_seed"] is None else f", between seeds {100 * s['sd_seed']:.2f}"))


def seed_group(runs: Runs, config: dict, n_archs: int) -> list[tuple[str, list[float]]]:
    """The tau set's accuracies of every supernet in ``runs`` trained with ``config`` but for its
    seed (``--supernet-seed``), each as (its label, accuracies): how much a ranking owes to one
    supernet's luck, and what their mean ranks. One entry a cached supernet (a cache version
    bump makes another supernet of the same seed)."""
    def setting(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if k != "seed"}

    group: dict[str, tuple[str, list[float]]] = {}  # by tag: a supernet's summary and summary-tau rows are one
    for key, summary in sorted(runs.data["runs"].items()):
        if not key.startswith("summary") or setting(summary.get("supernet", {})) != setting(config):
            continue
        tag = key.split("/", 1)[1]
        rows = [runs.get(f"supernet/{tag}/{i}") for i in range(n_archs)]
        if all(rows) and tag not in group:
            seed = summary["supernet"].get("seed")
            group[tag] = (f"seed {'default' if seed is None else seed} ({tag[:6]})", [r["accuracy"] for r in rows])
    return list(group.values())


def baselines(specs: list, resolution: int) -> dict[str, list[float]]:
    """Zero-cost predictors of a network's accuracy, each oriented so that higher should mean more
    accurate: an evaluator is worth its cost where it ranks better than these."""
    from search_space import count_flops, count_params

    return {"FLOPs": [float(count_flops(s, resolution)) for s in specs],
            "params": [float(count_params(s)) for s in specs],
            "fewer plain layers": [-float(s.plain_layers) for s in specs]}


def retrain_key(cfg, arch: str, s: int) -> str:
    """The row of one stand-alone training of ``arch`` at ``cfg``'s fidelity with seed index ``s``
    (shared by the reference and the final re-trainings: one network is trained once a fidelity)."""
    return f"final/{cfg.epochs}x{cfg.train_size}/{arch}/{s}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/supernet")
    ap.add_argument("--archs", type=int, default=30, help="architectures for Kendall tau (>= 30)")
    ap.add_argument("--search-trials", type=int, default=100, help="the proxy search that sets the equal wall time")
    ap.add_argument("--max-supernet-trials", type=int, default=20000)
    ap.add_argument("--final-seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (proxy.device)")
    ap.add_argument("--root", default=None, help="the Fashion-MNIST folder (dataset.root; default: Debian's)")
    # the supernet's settings (evaluator.*), for ablations: every setting has its own cache key and
    # rows in the same results file, and the stand-alone proxy runs are shared between them
    ap.add_argument("--epochs", type=int, default=None, help="evaluator.epochs")
    ap.add_argument("--train-size", type=int, default=None, help="evaluator.train_size")
    ap.add_argument("--random-subnets", type=int, default=None, help="evaluator.random_subnets")
    ap.add_argument("--lr", type=float, default=None,
                    help="evaluator.lr (default: the proxy's rate; scale it down with more --random-subnets: "
                         "a step sums their gradients)")
    distill = ap.add_mutually_exclusive_group()
    distill.add_argument("--distill", choices=("on", "off"), default=None,
                         help="evaluator.distill (in-place distillation; off by default)")
    distill.add_argument("--no-distill", action="store_true", help="the same as --distill off")
    ap.add_argument("--sampling", choices=("uniform", "fair"), default=None, help="evaluator.sampling")
    ap.add_argument("--stage-distill", type=float, default=None, help="evaluator.stage_distill")
    ap.add_argument("--progressive", type=float, default=None, help="evaluator.progressive")
    ap.add_argument("--supernet-seed", type=int, default=None,
                    help="evaluator.seed: another supernet of the same setting (its weights, data order, subnets)")
    ap.add_argument("--recalibrate-batches", type=int, default=None, help="evaluator.recalibrate_batches")
    ap.add_argument("--eval-size", type=int, default=None, help="evaluator.eval_size (0: all of minival)")
    ap.add_argument("--sensitivity", action="store_true",
                    help="also score the largest subnet with one op / skip / expansion choice changed at a time")
    ap.add_argument("--ceiling", action="store_true",
                    help="also train the tau set with a second proxy seed: tau of the proxy against itself")
    ap.add_argument("--space", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="a space option (as nas-search's space.KEY), repeatable, e.g. --space ops=mbconv "
                         "--space skips=identity: the supernet and the tau set over that space; give each space "
                         "its own --results")
    ap.add_argument("--reference", type=fidelity, default=None, metavar="EPOCHSxIMAGES",
                    help="also train the tau set stand-alone at this fidelity (e.g. 2x20000), --reference-seeds "
                         "seeds each: tau of the supernet and of the proxy against it")
    ap.add_argument("--reference-seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1,
                    help="stand-alone reference trainings at a time, in separate one-thread processes")
    ap.add_argument("--tau-only", action="store_true",
                    help="stop after rank fidelity: no equal-wall-time search, no final re-trainings")
    ap.add_argument("--supernet-only", action="store_true",
                    help="train (or load) the supernet into <results>/cache and stop: several settings' supernets "
                         "can train beside a run that trains the proxy's tau set, then score from the cache")
    ap.add_argument("--smoke", action="store_true", help="toy sizes: checks the machinery, numbers mean nothing")
    args = ap.parse_args()
    if args.reference_seeds < 1 or args.jobs < 1:
        ap.error("--reference-seeds and --jobs must be >= 1")
    if args.search_trials < args.archs:
        ap.error("--search-trials must be >= --archs (the tau architectures are the search's first)")

    from effnas.objective import Reward, auto_target
    from effnas.supernet import SupernetConfig
    from effnas.supernet.evaluate import supernet_evaluator
    from effnas.task import load_data
    from effnas.train import ProxyConfig, train_and_evaluate
    from search_space import SearchSpace, count_flops, default_space

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    smoke = args.smoke
    out = Path(args.results)
    dataset = {"name": "fashion_mnist", "root": args.root, "download": False}
    threads = {"threads": args.threads} if args.threads else {}
    proxy = ProxyConfig(**threads, device=args.device,
                        **({"train_size": 256, "minival_size": 200, "bn_recalibrate_batches": 2} if smoke else {}))
    sn_cfg = SupernetConfig(**({"epochs": 1, "train_size": 256, "random_subnets": 1, "recalibrate_batches": 1,
                                "eval_size": 100} if smoke else {}))
    changes = {k: v for k, v in {"epochs": args.epochs, "train_size": args.train_size,
                                 "random_subnets": args.random_subnets, "stage_distill": args.stage_distill,
                                 "progressive": args.progressive, "seed": args.supernet_seed, "lr": args.lr,
                                 "recalibrate_batches": args.recalibrate_batches}.items() if v is not None}
    if args.distill is not None or args.no_distill:
        changes["distill"] = args.distill == "on" and not args.no_distill
    if args.sampling is not None:
        changes["sampling"] = args.sampling
    if args.eval_size is not None:
        changes["eval_size"] = args.eval_size or None  # 0: all of minival
    try:
        sn_cfg = dataclasses.replace(sn_cfg, **changes)
    except ValueError as exc:  # ConfigError: a value out of its range, named as nas-search names it
        ap.error(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    runs = Runs(out / "supernet.json")
    final = dataclasses.replace(proxy, epochs=1 if smoke else 2, train_size=256 if smoke else 20000)
    n_archs, n_search = (4, 6) if smoke else (args.archs, args.search_trials)
    if args.tau_only:
        n_search = n_archs  # the proxy trains the tau set only
    max_sn = 20 if smoke else args.max_supernet_trials
    seeds = 1 if smoke else args.final_seeds
    seed = 0

    data = load_data(dataset, proxy, seed)
    options = space_options(args.space, ap)
    try:
        space = SearchSpace.from_config(options, num_classes=data.num_classes, in_channels=data.in_channels,
                                        resolution=proxy.resolution) if options else \
            default_space(data.num_classes, data.in_channels, proxy.resolution)
    except ValueError as exc:
        raise SystemExit(f"--space: {exc}") from None
    stored = runs.get("space")
    if stored is None and any(k.startswith("proxy/") for k in runs.data["runs"]):
        stored = {}  # written before --space existed: the default space
    if stored is not None and stored != options:  # the rows below are keyed by index: one space a file
        raise SystemExit(f"{out / 'supernet.json'} holds runs of the space {stored or 'default'}, not "
                         f"{options or 'default'}: give this space its own --results")
    runs.put("space", options)
    reward = Reward(target=auto_target("flops", data.num_classes, data.in_channels, proxy.resolution))

    # 1. the supernet (trained here or loaded from the cache)
    t0 = time.perf_counter()
    scorer = supernet_evaluator(sn_cfg, dataset, proxy, space, data, seed, out / "cache")
    train_seconds = sum(h["seconds"] for h in scorer.net.history)
    # rows of this supernet setting: the cache key, and the scoring settings the key does not hold
    tag = f"{scorer.path.parent.name}-r{sn_cfg.recalibrate_batches}-e{sn_cfg.eval_size or 'all'}"
    runs.put(f"supernet/{tag}", {"train_seconds": train_seconds, "setup_seconds": time.perf_counter() - t0,
                                 "config": dataclasses.asdict(sn_cfg)})
    log.info("supernet ready: trained in %.0f s (sum of its epochs)", train_seconds)
    if args.supernet_only:
        print(f"supernet: trained in {train_seconds:.0f} s, cached in {scorer.path}")
        return

    def rew(spec, acc: float) -> float:
        return reward(acc, float(count_flops(spec, proxy.resolution)))

    # 2. + 4. the proxy search: the first n_archs are the tau set
    stream = random_archs(space, seed)
    archs = [next(stream) for _ in range(n_search)]
    proxy_rows = []
    for i, spec in enumerate(archs):
        key = f"proxy/{i}"
        row = runs.get(key)
        if row is None or row["arch"] != spec.to_string():
            t = time.perf_counter()
            res = train_and_evaluate(spec, data, proxy.train_config(seed + i))
            row = {"arch": spec.to_string(), "accuracy": res.accuracy, "seconds": time.perf_counter() - t}
            runs.put(key, row)
            log.info("proxy %d/%d: acc %.4f in %.1f s", i + 1, n_search, row["accuracy"], row["seconds"])
        proxy_rows.append({**row, "reward": rew(spec, row["accuracy"])})

    proxy_acc = [r["accuracy"] for r in proxy_rows[:n_archs]]  # the tau set's stand-alone accuracies

    # 2b. the ceiling: the proxy against itself (the tau set re-trained with other seeds)
    ceiling, two_seeds, proxy_spread = None, None, None
    if args.ceiling:
        again = []
        for i, spec in enumerate(archs[:n_archs]):
            key = f"proxy-seed2/{i}"
            row = runs.get(key)
            if row is None or row["arch"] != spec.to_string():
                res = train_and_evaluate(spec, data, proxy.train_config(seed + 500_009 + i))
                row = {"arch": spec.to_string(), "accuracy": res.accuracy}
                runs.put(key, row)
                log.info("proxy, second seed %d/%d: acc %.4f", i + 1, n_archs, row["accuracy"])
            again.append(row["accuracy"])
        ceiling = kendall_tau(again, proxy_acc)  # the proxy's second seed against its first
        two_seeds = seed_means([proxy_acc, again])
        proxy_spread = spread([proxy_acc, again])

    sn_rows = []
    sn_stream = iter(archs)

    def sn_row(i: int, spec) -> dict:
        key = f"supernet/{tag}/{i}"
        row = runs.get(key)
        if row is None or row["arch"] != spec.to_string():
            t = time.perf_counter()
            acc = scorer.accuracy(spec)
            row = {"arch": spec.to_string(), "accuracy": acc, "seconds": time.perf_counter() - t}
            runs.put(key, row)
        return {**row, "reward": rew(spec, row["accuracy"])}

    for i in range(n_archs):
        sn_rows.append(sn_row(i, next(sn_stream)))

    sn_acc = [r["accuracy"] for r in sn_rows]  # the same networks, scored by the supernet
    sn_median = statistics.median(sn_acc)
    log.info("supernet accuracy over the tau set: median %.3f (chance %.3f), proxy median %.3f", sn_median,
             1 / data.num_classes, statistics.median(proxy_acc))
    tau_acc = kendall_tau(sn_acc, proxy_acc)
    tau_rew = kendall_tau([r["reward"] for r in sn_rows], [r["reward"] for r in proxy_rows[:n_archs]])
    zero_cost = baselines(archs[:n_archs], proxy.resolution)
    zero_tau = {name: kendall_tau(v, proxy_acc) for name, v in zero_cost.items()}
    tau_beyond_plain = partial_tau(sn_acc, proxy_acc, zero_cost["fewer plain layers"])

    # 2c. a higher-fidelity stand-alone reference: what a re-ranking (or a longer search) would see
    reference = None
    if args.reference:
        from bench.pipeline import Job, Trainer

        epochs, images = (1, 300) if smoke else args.reference
        ref_cfg = dataclasses.replace(proxy, epochs=epochs, train_size=images,
                                      **({"threads": 1} if args.jobs > 1 else {}))
        tau_set = [spec.to_string() for spec in archs[:n_archs]]
        jobs = [Job(retrain_key(ref_cfg, arch, s), arch, seed + 1_000_003 + s, "proxy", f"tau set {i + 1}",
                    cost=float(count_flops(archs[i], proxy.resolution)))
                for i, arch in enumerate(tau_set) for s in range(args.reference_seeds)]
        log.info("reference: the tau set stand-alone at %d epochs on %d images, %d seeds (%d trainings)",
                 epochs, images, args.reference_seeds, len(jobs))
        Trainer(runs, ref_cfg, ref_cfg, jobs=args.jobs, started=time.monotonic(), dataset=dataset,
                checkpoints=out / "checkpoints").run(jobs)
        per_seed = [[runs.get(retrain_key(ref_cfg, arch, s))["accuracy"] for arch in tau_set]
                    for s in range(args.reference_seeds)]
        mean = seed_means(per_seed)
        reference = {"fidelity": f"{epochs}x{images}", "seeds": args.reference_seeds, "accuracy": per_seed,
                     "median_accuracy": statistics.median(mean),
                     "tau_supernet": kendall_tau(sn_acc, mean), "tau_proxy": kendall_tau(proxy_acc, mean),
                     "tau_flops": kendall_tau(zero_cost["FLOPs"], mean),
                     "tau_plain_layers": kendall_tau(zero_cost["fewer plain layers"], mean),
                     "tau_self": kendall_tau(per_seed[0], per_seed[1]) if len(per_seed) > 1 else None,
                     **spread(per_seed)}

    # 3. speed (measured on the tau set, where both evaluators scored the same networks)
    proxy_s = statistics.fmean(r["seconds"] for r in proxy_rows)
    sn_s = statistics.fmean(r["seconds"] for r in sn_rows)
    wall = sum(r["seconds"] for r in proxy_rows)  # W: the proxy search's wall time
    m_amortised = min(max_sn, int(wall // sn_s))
    m_incl = min(m_amortised, max(0, int((wall - train_seconds) // sn_s)))

    # 4. equal wall time: the supernet's own search, and each search's best re-trained (not with --tau-only)
    finals = {}
    if not args.tau_only:
        log.info("equal wall time W = %.0f s: the proxy scores %d, the supernet %d (amortised) or %d (incl. "
                 "training)", wall, n_search, m_amortised, m_incl)
        i = len(sn_rows)
        while len(sn_rows) < m_amortised:
            spec = next(sn_stream, None)
            if spec is None:
                sn_stream = stream  # the proxy's archs are used up: continue the same seeded stream
                continue
            sn_rows.append(sn_row(i, spec))
            i += 1
            if i % 100 == 0:
                log.info("supernet search: %d/%d", i, m_amortised)

        def best(rows: list[dict]) -> dict | None:
            return max(rows, key=lambda r: r["reward"]) if rows else None

        winners = {"proxy": best(proxy_rows), "supernet_amortised": best(sn_rows[:m_amortised]),
                   "supernet_incl_training": best(sn_rows[:m_incl])}
        from search_space import ArchSpec

        for label, row in winners.items():
            if row is None:
                finals[label] = None
                continue
            spec = ArchSpec.from_string(row["arch"])
            accs = []
            for s in range(seeds):
                key = retrain_key(final, row["arch"], s)
                done = runs.get(key)
                if done is None:  # saved after every epoch: a killed bench resumes it
                    final_data = data if final.train_size == proxy.train_size else _final_data(dataset, final, seed)
                    ckpt = checkpoint_path(out / "checkpoints", key) if final.epochs > 1 else None
                    res = train_and_evaluate(spec, final_data, final.train_config(seed + 1_000_003 + s),
                                             checkpoint=ckpt)
                    done = {"accuracy": res.accuracy}
                    runs.put(key, done)
                    if ckpt is not None:
                        ckpt.unlink(missing_ok=True)
                accs.append(done["accuracy"])
            acc = statistics.fmean(accs)
            finals[label] = {"arch": row["arch"], "search_accuracy": row["accuracy"], "accuracy": acc,
                             "reward": rew(spec, acc), "flops": count_flops(spec, proxy.resolution)}

    summary = {"tau_accuracy": tau_acc, "tau_reward": tau_rew, "archs": n_archs,
               "supernet_median_accuracy": sn_median, "chance": 1 / data.num_classes,
               "tau_zero_cost": zero_tau, "tau_given_plain_layers": tau_beyond_plain,
               "tau_proxy_vs_proxy": ceiling, "proxy_spread": proxy_spread, "reference": reference,
               "proxy_seconds_per_candidate": proxy_s, "supernet_seconds_per_candidate": sn_s,
               "supernet_train_seconds": train_seconds, "equal_wall_seconds": wall,
               "proxy_candidates_per_hour": 3600 / proxy_s, "supernet_candidates_per_hour": 3600 / sn_s,
               "supernet_candidates_in_wall": {"amortised": m_amortised, "incl_training": m_incl},
               "winners": finals, "smoke": smoke, "supernet": dataclasses.asdict(sn_cfg),
               "device": str(scorer.device)}
    runs.put(f"summary{'-tau' if args.tau_only else ''}/{tag}", summary)  # --tau-only: no winners
    speedup = proxy_s / sn_s
    incl = m_incl / n_search  # candidates in the same wall time, the supernet's training counted
    print(f"supernet: trained in {train_seconds:.0f} s; {sn_s:.3f} s per candidate vs {proxy_s:.1f} s (proxy)")
    print(f"tau (reward) {tau_rew:.3f} over {n_archs} random architectures; supernet median accuracy "
          f"{sn_median:.3f} (chance {1 / data.num_classes:.3f})")
    print("zero-cost baselines, tau against the proxy: "
          + ", ".join(f"{name} {t:.3f}" for name, t in zero_tau.items())
          + f"; the supernet beyond the plain-layer count (partial tau) {tau_beyond_plain:.3f}")
    if ceiling is not None:
        tau_mean = kendall_tau(sn_acc, two_seeds)
        print(f"ceiling: tau of the proxy against itself (second seed) {ceiling:.3f} (beyond the plain-layer count, "
              f"partial tau {partial_tau(again, proxy_acc, zero_cost['fewer plain layers']):.3f}); the supernet "
              f"against the mean of the two proxy seeds {tau_mean:.3f}; the proxy's {_spread_text(proxy_spread)}")
    if reference is not None:
        print(f"reference ({reference['fidelity']}, {reference['seeds']} seeds, median accuracy "
              f"{reference['median_accuracy']:.3f}): tau of the supernet {reference['tau_supernet']:.3f}, of the "
              f"proxy {reference['tau_proxy']:.3f}, of FLOPs {reference['tau_flops']:.3f}, of the plain-layer "
              f"count {reference['tau_plain_layers']:.3f}"
              + ("" if reference["tau_self"] is None else
                 f"; of the reference against itself (seed 1 vs 2) {reference['tau_self']:.3f}")
              + f"; {_spread_text(reference)}")
    if not args.tau_only:
        print(f"in W = {wall:.0f} s: proxy {n_search} candidates, supernet {m_amortised} (amortised), "
              f"{m_incl} incl. its training ({incl:.1f} x the proxy's rate)")
    for label, f in finals.items():
        if f is None:
            print(f"  best by {label}: none (the supernet's training alone exceeds W)")
        else:
            print(f"  best by {label}: re-trained acc {f['accuracy']:.4f}, reward {f['reward']:.4f}, "
                  f"{f['flops'] / 1e6:.2f}M FLOPs ({f['arch']})")
    if args.sensitivity:
        rows = sensitivity(space, scorer)
        runs.put(f"sensitivity/{tag}", [list(r) for r in rows])
        print("largest subnet with one choice changed (supernet accuracy):")
        by_option: dict[tuple[str, str], list[float]] = {}
        for name, option, acc in rows[1:]:
            by_option.setdefault((name.split("_", 1)[-1], option), []).append(acc)
        print(f"  largest: {rows[0][2]:.3f}")
        for (what, option), accs in sorted(by_option.items()):
            print(f"  {what}={option}: mean {statistics.fmean(accs):.3f} over {len(accs)} stages "
                  f"(min {min(accs):.3f}, max {max(accs):.3f})")
    group = seed_group(runs, dataclasses.asdict(sn_cfg), n_archs)
    if len(group) > 1:
        taus = [kendall_tau(accs, proxy_acc) for _, accs in group]
        each = ", ".join(f"{label} {t:.3f}" for (label, _), t in zip(group, taus))
        mean_acc = seed_means([accs for _, accs in group])
        print(f"{len(group)} supernets of this setting: tau {each}; mean {statistics.fmean(taus):.3f} +- "
              f"{statistics.stdev(taus):.3f}; their mean accuracy ranks at tau {kendall_tau(mean_acc, proxy_acc):.3f}"
              + ("" if two_seeds is None else f" ({kendall_tau(mean_acc, two_seeds):.3f} against the two proxy seeds' mean)"))
    print(f"tau {tau_acc:.3f}, {speedup:.1f} x candidates/hour")
    if math.isnan(tau_acc):
        sys.exit(1)


def sensitivity(space, scorer) -> list[tuple[str, str, float]]:
    """The largest subnet's accuracy with one choice of one stage changed (every option of every
    op, skip and expansion choice): which options the shared weights serve badly. Rows: (choice,
    option, accuracy), the largest subnet itself first."""
    from effnas.supernet.model import _Pick, largest_spec

    largest = space.params_of(largest_spec(space))
    asked: list[tuple[str, list]] = []  # every choice the largest subnet is made of, with its options
    space.sample(_Pick(lambda name, choices: asked.append((name, list(choices))) or largest[name]))
    rows = [("largest", "-", scorer.accuracy(largest_spec(space)))]
    for name, choices in asked:
        if name.endswith(("_op", "_skip", "_expand")) or name == "activation":
            rows += [(name, str(option), scorer.accuracy(largest_spec(space, {name: option}))) for option in choices]
    return rows


_FINAL_DATA: dict = {}


def _final_data(dataset, final, seed):
    """The re-training data (more images than the proxy's), loaded once."""
    if "data" not in _FINAL_DATA:
        from effnas.task import load_data

        _FINAL_DATA["data"] = load_data(dataset, final, seed)
    return _FINAL_DATA["data"]


if __name__ == "__main__":
    main()
