"""The proof, end to end on Fashion-MNIST: does the searched B0 (and its family) beat what a user has?

    python bench/pipeline.py [--results DIR] [--epochs 5] [--seeds 3] [--tau-extra 5] [--family-upto 0]
                             [--jobs 2] [--threads 1] [--head-multipliers 0.5,0.75,1.0]
                             [--stem-multipliers 0.75,1.0] [--stage2-rerank 3] [--allocator auto] [--smoke]
    python bench/pipeline.py --results DIR --status    # what DIR holds so far; trains nothing

1. Stage 1: the default ``nas-search`` (40 trials, re-ranking of the top 3) -> the searched B0.
2. One full protocol for every network (``--epochs`` on all training images, the search's
   resolution, ``--seeds`` seeds; test accuracy on the official test split): the searched B0;
   EfficientNet-B0 scaled (width, depth) to the searched B0's FLOPs within 5% -- the fair
   comparison; the reference EfficientNet-B0, MobileNetV2 and the exact MnasNet-A1 (all with the
   dataset's classes and channels); and (``--tau-extra N``) the next N distinct stage-1 networks
   by proxy reward, seed 0 only, so that tau covers >= 10 networks.
3. With ``--family-upto K`` (K >= 1): stage 2, the default ``scale-search`` from the searched B0
   (its top ``--stage2-rerank`` networks re-trained before the choice; 0: by proxy accuracy alone,
   as run 5 was made -- resume it with ``--stage2-rerank 0``), its family b1..bK, against
   EfficientNet b1..bK grown with the paper's coefficients from the reference B0 and -- the fair
   pair, as for B0 -- EfficientNet-B0 scaled (width, depth) to each searched b_phi's FLOPs within 5%
   at its resolution and dropout, all trained the same way.
4. Kendall tau between the 1-epoch proxy accuracy and the full-protocol accuracy (seed 0) over
   every architecture trained (how much the proxy can be trusted). A stage-1 network's proxy
   accuracy is its stage-1 trial's (the same protocol: not trained again); the others' 1-epoch
   proxies are trained here (seed 0).

The full protocol validates only after the last epoch, on the test split. Trainings run ``--jobs``
at a time, longest first (FLOPs x images; the proxies share the queue), each in its own process
with ``--threads`` torch threads (two one-thread trainings side by side use 2 cores better than
one two-thread training: two steps per 131 ms vs one per 95 ms, measured), and the two
searches run with ``--jobs`` workers sharing their study, as ``-m worker=range(N)`` would (progress
lines of the other workers are prefixed ``[worker i]``); with tcmalloc installed
(``libtcmalloc-minimal4``) every process trains with it (``--allocator``; about 8% faster,
measured by ``bench/allocator.py``). ``--head-multipliers`` /
``--stem-multipliers`` make the head and stem widths choices of stage 1's space.

Sizes and time on 2 CPU cores (measured 2026-11-30 and 2026-12-01, one thread per training):
stage 1 takes 10-12 minutes with two workers; one 5-epoch training on all 55,000 training images
takes 250-450 s (the searched and matched B0s, 3-4M FLOPs at 32 px) to 861-871 s
(EfficientNet-B0, 8.3M FLOPs), with glibc's malloc. The default run (steps 1, 2 and 4) is about
11,500 core-seconds with glibc's malloc: 96 minutes on two fully used cores, over the issue's 90;
with tcmalloc it took 87 min 5 s (run 4, 2026-12-01: stage 1 8 min 25 s, EfficientNet-B0 783-807 s
a training). The families are the long run: a b1 network is 16-23M FLOPs (20-40 minutes a
training; three networks x 3 seeds per phi, and their 1-epoch proxies), so ``--family-upto 1``
adds about two hours with two jobs, and every further phi more; how much depends on the
coefficients stage 2 chooses (run 5: alpha 1.5, beta 1.0, gamma 1.05 -- b1..b3 at 14-31M FLOPs,
about 9 hours of both cores for the three phis).

Writes ``pipeline.json`` (every run; an interrupted bench resumes from it), ``pipeline.md`` (the
table) and ``pipeline.png`` (accuracy vs FLOPs) into ``--results``, and prints the headline
comparison last. Every training of more than one epoch saves itself after each epoch in
``--results``/checkpoints (removed once its result is in pipeline.json): Ctrl-C, SIGTERM or a kill
loses at most the epoch each running training was in, and the same command resumes there with the
result an uninterrupted training gets -- so the hours-long families can run across several
sittings (``--status`` shows where a run stands). ``--smoke`` runs every step at toy sizes
(minutes) to check the machinery only: its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effnas.threads  # noqa: E402

effnas.threads.configure()  # OMP_WAIT_POLICY=PASSIVE before torch loads, as the CLIs do (inherited by the workers)

from bench.common import Runs, checkpoint_path, kendall_tau  # noqa: E402


def matched_efficientnet(b0, target_flops: int, resolution: int):
    """EfficientNet-B0 scaled in width and depth to ``target_flops`` at ``resolution`` within 5%
    (closest; then closest to width == depth): ``(spec, width, depth)``, or None if no width in
    0.2..1.6 and depth in 0.2..2.0 comes within 5%."""
    from search_space import count_flops, scale_spec

    best = None
    for w100 in range(20, 161, 1):
        for d10 in range(2, 21):
            w, d = w100 / 100, d10 / 10
            spec = scale_spec(b0, width=w, depth=d).replace(resolution=resolution)
            err = abs(count_flops(spec, resolution) / target_flops - 1)
            key = (round(err, 3) if err > 0.05 else 0.0, abs(w - d), err)
            if best is None or key < best[0]:
                best = (key, spec, w, d)
    return None if best[0][2] > 0.05 else (best[1], best[2], best[3])


DATASET = {"name": "fashion_mnist", "root": None}  # Debian's Fashion-MNIST


@dataclass(frozen=True)
class Job:
    """One training of the bench: ``kind`` "full" (the full protocol; test accuracy) or "proxy"
    (the search's 1-epoch proxy; minival accuracy), keyed in pipeline.json by ``key``."""

    key: str
    arch: str
    seed: int
    kind: str
    name: str
    cost: float = 0.0  # relative (FLOPs x images trained): the longest jobs start first
    priority: int = 0  # lower first, whatever the cost (the families: phi by phi)


class Trainer:
    """Runs the jobs not yet in pipeline.json, ``jobs`` at a time in separate processes of
    the configs' ``threads`` threads each (two one-thread trainings side by side use two cores better than one
    two-thread training), saving each result as it finishes, with progress and an ETA. Ctrl-C or
    SIGTERM stops the workers; what finished is kept (run the bench again to resume). ``dataset``
    is the ``dataset`` config every training reads (default: Debian's Fashion-MNIST). With
    ``checkpoints`` (a folder) every training of more than one epoch saves itself there after each
    epoch, so a stopped or killed bench loses at most an epoch a running training (a b3 network
    trains for hours); a checkpoint is removed once its result is in pipeline.json."""

    def __init__(self, runs: Runs, full, proxy, *, jobs: int, started: float, dataset: dict | None = None,
                 checkpoints: Path | None = None) -> None:
        self.runs, self.configs = runs, {"full": full, "proxy": proxy, "dataset": dataset or DATASET,
                                         "checkpoints": None if checkpoints is None else str(checkpoints)}
        self.jobs, self.started = jobs, started

    def _saved_fraction(self, job: Job) -> float:
        """The part of ``job`` its checkpoint holds (0: none, or unreadable)."""
        ckpt = _checkpoint(job, self.configs)
        state = None if ckpt is None else _saved_state(ckpt)
        return 0.0 if state is None else state["epoch"] / state["identity"]["train"]["epochs"]

    def run(self, jobs: list[Job]) -> None:
        # one network is trained once per seed and kind, whatever rows name it (the searched B0 can
        # be EfficientNet-B0 itself, and then so is the network matched to it): a row whose network
        # another row has measured gets that run
        measured = {}  # (proxy?, arch, seed) -> run; keys: "proxy|<arch>" and "<name>|<arch>|<seed>"
        for key, value in self.runs.data["runs"].items():
            network = ((True, key.removeprefix("proxy|"), "0") if key.startswith("proxy|")
                       else (False, *key.rsplit("|", 2)[1:]))
            measured.setdefault(network, value)
        todo: list[Job] = []
        twins: dict[tuple, list[Job]] = {}  # network -> the other rows that get its run
        for j in jobs:
            network = (j.kind == "proxy", j.arch, str(j.seed))
            if self.runs.get(j.key) is not None:
                continue
            if network in measured:
                self.runs.put(j.key, measured[network])
            elif network in twins:
                twins[network].append(j)
            else:
                twins[network] = []
                todo.append(j)
        if not todo:
            return
        # by priority, then longest first (LPT): the last jobs are short, so no core idles long at
        # the end; a lower priority's last jobs run beside the next one's first
        # a resumed training has only its unsaved epochs to train: the ETA counts those
        left_cost = {j.key: j.cost * (1 - self._saved_fraction(j)) for j in todo}
        todo.sort(key=lambda j: (j.priority, -left_cost[j.key]))
        t0, done, done_cost, total_cost = time.monotonic(), 0, 0.0, sum(left_cost.values())
        width = min(self.jobs, len(todo))
        shared = sum(map(len, twins.values()))
        print(f"[{time.monotonic() - self.started:.0f}s] {len(todo)} trainings to run, {width} at a time"
              + (f" ({shared} more rows are the same networks: trained once)" if shared else ""), flush=True)

        def finished(job: Job, run: dict) -> None:
            nonlocal done, done_cost
            self.runs.put(job.key, run)
            ckpt = _checkpoint(job, self.configs)
            if ckpt is not None:
                ckpt.unlink(missing_ok=True)
            for twin in twins[(job.kind == "proxy", job.arch, str(job.seed))]:
                self.runs.put(twin.key, run)
            done += 1
            done_cost += left_cost[job.key]
            left = len(todo) - done
            # by cost when known (the longest run first, so a count would overestimate), else by count
            eta = (time.monotonic() - t0) * ((total_cost - done_cost) / done_cost if done_cost > 0 else left / done)
            acc = run.get("test_accuracy", run.get("accuracy"))
            print(f"[{time.monotonic() - self.started:.0f}s] {job.name} seed {job.seed}: "
                  f"{'test' if job.kind == 'full' else 'minival'} accuracy {acc:.4f} ({run['seconds']:.0f}s); "
                  f"{done}/{len(todo)} done" + (f", about {eta / 60:.0f} min left" if left else ""), flush=True)

        if width == 1:
            for job in todo:
                finished(job, _train_job(job, self.configs))
            return
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(width, _worker_init, (self.configs["full"].threads or 1,))
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            for job, run in pool.imap_unordered(functools.partial(_job_result, configs=self.configs), todo):
                finished(job, run)
            pool.close()
        except KeyboardInterrupt:  # the pool is stopped in the finally clause
            print(f"interrupted: {done} of {len(todo)} trainings saved; run the same command again to resume", flush=True)
            raise SystemExit(130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            pool.terminate()
            pool.join()


def _saved_state(ckpt: Path) -> dict | None:
    """A training checkpoint's state (epoch, identity), or None where there is none or it cannot
    be read (being written, or not a checkpoint)."""
    import torch

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        readable = isinstance(state["epoch"], int) and "arch" in state["identity"] \
            and state["identity"]["train"]["epochs"] >= state["epoch"]
    except Exception:  # noqa: BLE001 -- missing, torn, or another file: no saved epochs
        return None
    return state if readable else None


def status(out: Path) -> str:
    """What a bench's results folder holds so far, without training: every network with a
    full-protocol result (test accuracy mean ± sd over its seeds, params, FLOPs, px) and every
    training in progress (its last saved epoch) -- for the families, which take many sittings."""
    from search_space import ArchSpec, count_flops, count_params

    runs = Runs(out / "pipeline.json").data["runs"]
    accs: dict[tuple[str, str], dict[int, float]] = {}
    for key, value in runs.items():
        if not key.startswith("proxy|"):
            name, arch, seed = key.rsplit("|", 2)
            accs.setdefault((name, arch), {})[int(seed)] = value["test_accuracy"]
    lines = [f"{out}: {len(accs)} networks measured", "| network | params | MFLOPs | px | test acc mean ± sd | seeds |",
             "|---|---|---|---|---|---|"]
    for (name, arch), by_seed in accs.items():
        spec, values = ArchSpec.from_string(arch), [by_seed[s] for s in sorted(by_seed)]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {name} | {count_params(spec) / 1e6:.2f}M | {count_flops(spec, spec.resolution) / 1e6:.2f} | "
                     f"{spec.resolution} | {statistics.fmean(values):.4f} ± {sd:.4f} | {len(values)} |")
    names = {arch: name for name, arch in accs}
    for ckpt in sorted((out / "checkpoints").glob("*.pt")):
        state = _saved_state(ckpt)
        if state is None:
            lines.append(f"in progress: {ckpt.name} (unreadable)")
            continue
        arch, train = state["identity"]["arch"], state["identity"]["train"]
        lines.append(f"in progress: {names.get(arch, arch[:70] + '...')} seed {train['seed']}: epoch "
                     f"{state['epoch']}/{train['epochs']} saved ({ckpt.name})")
    return "\n".join(lines)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _worker_init(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool on Ctrl-C
    import torch

    torch.set_num_threads(threads)


_DATA: dict = {}


def _checkpoint(job: Job, configs: dict) -> Path | None:
    """Where ``job`` saves itself after every epoch (None: no checkpoints, or a one-epoch job)."""
    if configs.get("checkpoints") is None or configs[job.kind].epochs < 2:
        return None
    return checkpoint_path(configs["checkpoints"], job.key)


def _train_job(job: Job, configs: dict) -> dict:
    from effnas.task import load_data
    from effnas.train import train_and_evaluate
    from search_space import ArchSpec

    spec, cfg = ArchSpec.from_string(job.arch), configs[job.kind]
    full = job.kind == "full"
    key = (job.kind, spec.resolution)
    if key not in _DATA:
        _DATA[key] = load_data(configs["dataset"], cfg, 0, resolution=spec.resolution, test=full)
    data = _DATA[key]
    ckpt = _checkpoint(job, configs)
    if not full:
        res = train_and_evaluate(spec, data, cfg.train_config(job.seed), checkpoint=ckpt)
        return {"accuracy": res.accuracy, "seconds": res.train_seconds}
    # the full protocol reports only the final test accuracy: no validation between epochs
    res = train_and_evaluate(spec, data, cfg.train_config(job.seed), eval_split="test", validate_every_epoch=False,
                             checkpoint=ckpt, progress=lambda m: print(f"  {job.name} seed {job.seed}: {m}", flush=True))
    return {"test_accuracy": res.accuracy, "seconds": res.train_seconds}


def _job_result(job: Job, configs: dict) -> tuple[Job, dict]:
    return job, _train_job(job, configs)


def _search_worker(stage: str, cfg: dict, tag: str) -> None:
    """One more worker of a search study, in a process of its own (the product's own scale-out:
    workers share the study's journal file)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _show_progress(f"[{tag}] ")
    _SEARCHES[stage](cfg)


def _run_stage1(cfg: dict):
    from nas.search import run_search

    return run_search(cfg)


def _run_stage2(cfg: dict):
    from scaling_search.search import run_scale_search

    return run_scale_search(cfg)


_SEARCHES = {"stage 1": _run_stage1, "stage 2": _run_stage2}


def _show_progress(prefix: str = "") -> None:
    """The searches' progress lines (trials, epochs, ETA) on stdout."""
    import logging

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    log = logging.getLogger("effnas")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def search_with_workers(stage: str, cfg: dict, workers: int, threads: int | None):
    """Run a search stage with ``workers`` workers sharing its study: this process and
    ``workers - 1`` spawned ones, ``threads`` torch threads each. When helpers ran, the stage is
    resumed once more here after they finish (its budget and re-evaluations all done: it only
    reads the study) so that the outcome covers every worker's trials. Ctrl-C reaches every worker
    (each stops by itself, saving what finished); SIGTERM to this process is passed on to them."""
    import multiprocessing

    run = _SEARCHES[stage]
    if workers <= 1:
        return run(cfg)
    cfg = {**cfg, "proxy": {**cfg.get("proxy", {}), "threads": threads or 1}}
    ctx = multiprocessing.get_context("spawn")
    helpers = [ctx.Process(target=_search_worker, args=(stage, cfg, f"worker {i}"), name=f"worker {i}")
               for i in range(1, workers)]
    for h in helpers:
        h.start()
    try:
        outcome = run(cfg)
        if outcome.interrupted is None:
            for h in helpers:
                h.join()
    finally:
        for h in helpers:
            if h.is_alive():
                os.kill(h.pid, signal.SIGTERM)  # each stops gracefully, keeping what finished
        for h in helpers:
            h.join()
    if outcome.interrupted is not None:
        return outcome
    failed = [f"{h.name} (exit code {h.exitcode})" for h in helpers if h.exitcode != 0]
    if failed:
        raise SystemExit(f"{stage}: {', '.join(failed)} failed; its error is above; run the same command again "
                         f"to resume")
    return run(cfg)


def _multipliers(text: str) -> list[float]:
    try:
        values = [float(m) for m in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive numbers "
                                         f"(e.g. 0.5,0.75,1.0)")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/pipeline")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--family-upto", type=int, default=0,
                    help="K >= 1: also stage 2 and the families b1..bK (hours on 2 cores); 0: neither")
    ap.add_argument("--tau-extra", type=int, default=5,
                    help="also train the next N distinct stage-1 networks by proxy reward (seed 0 only), so "
                         "that Kendall tau covers more architectures")
    ap.add_argument("--jobs", type=int, default=2,
                    help="trainings side by side, each in its own process (default 2: one per core here)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of each search worker and of each training (default with --jobs 1: "
                         "all cores; with more jobs: 1)")
    ap.add_argument("--head-multipliers", default=None, metavar="M,M,...", type=_multipliers,
                    help="stage 1's space.head_multipliers (e.g. 0.5,0.75,1.0: the head width a choice); "
                         "default: the space's default (the base's head)")
    ap.add_argument("--stem-multipliers", default=None, metavar="M,M,...", type=_multipliers,
                    help="stage 1's space.stem_multipliers")
    ap.add_argument("--allocator", choices=("auto", "tcmalloc", "glibc"), default="auto",
                    help="auto (default): tcmalloc when libtcmalloc_minimal is installed (about 8%% faster "
                         "trainings: bench/allocator.py), else the C library's malloc")
    ap.add_argument("--stage2-rerank", type=int, default=3, metavar="K",
                    help="stage 2 re-trains its top K networks (2 seeds, 2 epochs on 20,000 images) before choosing "
                         "the coefficients; 0: by proxy accuracy alone, as runs 1-5 were made (default 3)")
    ap.add_argument("--smoke", action="store_true", help="toy sizes: checks the machinery, numbers mean nothing")
    ap.add_argument("--status", action="store_true",
                    help="print what --results holds so far (networks measured, trainings in progress) and exit")
    args = ap.parse_args()
    if args.status:
        if not Path(args.results).is_dir():
            ap.error(f"--results {args.results}: no such folder (the results folder of a bench run)")
        print(status(Path(args.results).resolve()))
        return
    _preload_allocator(args.allocator)  # may run this script again with it preloaded: before torch loads
    print(f"allocator: {os.environ.get('LD_PRELOAD') or 'the C library malloc'}", flush=True)

    import torch

    import nas.config  # noqa: F401
    import scaling_search.config  # noqa: F401
    from effnas.train import ProxyConfig
    from scaling_search.family import family_table, run_family
    from search_space import ArchSpec, count_flops, count_params, reference_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _show_progress()
    out = Path(args.results).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = Runs(out / "pipeline.json")
    started = time.monotonic()
    smoke = args.smoke
    tiny = {"train_size": 512, "minival_size": 500, "bn_recalibrate_batches": 2} if smoke else {}

    # 1. stage 1 -------------------------------------------------------------------------------
    space = {f"{name}_multipliers": value
             for name, value in (("head", args.head_multipliers), ("stem", args.stem_multipliers)) if value}
    search_cfg = {"results_dir": str(out), "search": {"study_name": "stage1", **({"n_trials": 4} if smoke else {})},
                  **({"space": space} if space else {}),
                  "proxy": {**tiny}, **({"rerank": {"k": 2, "seeds": 2, "epochs": 1, "train_size": 512}} if smoke else {})}
    outcome = search_with_workers("stage 1", search_cfg, args.jobs, args.threads)
    _stop_if_interrupted(outcome.interrupted, "stage 1")
    best = outcome.best
    searched = ArchSpec.from_string(best["arch"])
    r = best["resolution"]
    print(f"[{time.monotonic() - started:.0f}s] stage 1: {searched.to_string()[:80]}... "
          f"({count_flops(searched, r) / 1e6:.2f}M FLOPs, selected by {best['selected_by']})", flush=True)

    # 2. the networks and one full protocol -----------------------------------------------------
    classes, channels = searched.num_classes, searched.in_channels
    ref = reference_spec("efficientnet-b0", num_classes=classes, in_channels=channels).replace(resolution=r)
    found = matched_efficientnet(ref, count_flops(searched, r), r)
    if found is None:
        raise SystemExit(f"no EfficientNet-B0 width/depth within 5% of the searched B0's "
                         f"{count_flops(searched, r)} FLOPs at {r} px")
    matched, w, d = found
    nets = {"searched B0": searched, f"EfficientNet-B0 w{w:g} d{d:g} (matched)": matched, "EfficientNet-B0": ref,
            "MobileNetV2": reference_spec("mobilenetv2", num_classes=classes, in_channels=channels).replace(resolution=r),
            "MnasNet-A1": reference_spec("mnasnet-a1", num_classes=classes, in_channels=channels).replace(resolution=r)}
    # Each training's own thread count (train_and_evaluate sets it; proxy.threads null would mean
    # every core, in each of --jobs processes: 2 x 2 threads on 2 cores oversubscribe them)
    threads = args.threads or (1 if args.jobs > 1 else None)
    full = ProxyConfig(epochs=1 if smoke else args.epochs, train_size=2000 if smoke else None,
                       bn_recalibrate_batches=10, threads=threads, **({"minival_size": 500} if smoke else {}))
    proxy_cfg = ProxyConfig(**tiny, threads=threads)
    trainer = Trainer(runs, full, proxy_cfg, jobs=args.jobs, started=started, checkpoints=out / "checkpoints")

    def result_row(name: str, spec, seeds: int) -> dict:
        accs = []
        s = 0  # seeds beyond --seeds measured by an earlier run of the bench count too
        while s < seeds or runs.get(f"{name}|{spec.to_string()}|{s}") is not None:
            accs.append(runs.get(f"{name}|{spec.to_string()}|{s}")["test_accuracy"])
            s += 1
        return {"name": name, "arch": spec.to_string(), "params": count_params(spec),
                "flops": count_flops(spec, spec.resolution), "resolution": spec.resolution, "accs": accs,
                "mean": statistics.fmean(accs), "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0}

    # the stage-1 networks' 1-epoch proxy accuracy is their stage-1 trial's (the same protocol): not re-run
    import pandas as pd

    trials = pd.read_parquet(out / "stage1" / "trials.parquet")
    done = trials[(trials["state"] == "COMPLETE") & trials["rerank_of"].isna() & trials["duplicate_of"].isna()]
    stage1_proxy = {t.arch: (float(t.accuracy), int(t.number)) for t in done.itertuples()}

    def cost(spec, cfg) -> float:
        return count_flops(spec, spec.resolution) * cfg.epochs * (cfg.train_size or 60_000)

    def train(wanted: list[tuple[str, object, int]], priority: dict[str, int] | None = None) -> list[dict]:
        """Train every (name, spec, seeds) not in pipeline.json yet, and the 1-epoch proxy of each
        network that is not a stage-1 trial, all in one queue (``--jobs`` at a time, by
        ``priority[name]`` (default 0), then longest first); then its rows."""
        rank = (priority or {}).get
        jobs = [Job(f"{name}|{spec.to_string()}|{s}", spec.to_string(), s, "full", name, cost(spec, full),
                    rank(name, 0)) for name, spec, n in wanted for s in range(n)]
        jobs += [Job(f"proxy|{spec.to_string()}", spec.to_string(), 0, "proxy", f"{name} (1-epoch proxy)",
                     cost(spec, proxy_cfg), rank(name, 0))
                 for name, spec, _ in wanted if spec.to_string() not in stage1_proxy]
        trainer.run(jobs)
        rows = [result_row(name, spec, n) for name, spec, n in wanted]
        for r in rows:
            if r["arch"] in stage1_proxy:
                r["proxy_accuracy"], number = stage1_proxy[r["arch"]]
                r["proxy_source"] = f"stage-1 trial {number}"
            else:
                r["proxy_accuracy"], r["proxy_source"] = runs.get(f"proxy|{r['arch']}")["accuracy"], "bench, seed 0"
        return rows

    seeds = 1 if smoke else args.seeds
    wanted = [(n, spec, seeds) for n, spec in nets.items()]

    # extra architectures for tau: the next distinct stage-1 networks by proxy reward, one seed
    if args.tau_extra:
        known = {spec.to_string() for _, spec, _ in wanted}
        extra = [a for a in done.sort_values("reward", ascending=False)["arch"] if a not in known]
        for i, arch in enumerate(list(dict.fromkeys(extra))[:args.tau_extra]):
            wanted.append((f"stage-1 network {i + 1} by proxy reward", ArchSpec.from_string(arch), 1))
    table = train(wanted)

    # 3. stage 2 and the families --------------------------------------------------------------
    smoke_grid = {"grid": {"alpha": [1.0, 1.2], "beta": [1.0, 1.1], "gamma": [1.0, 1.2], "step": 0.1,
                           "tol": 0.25, "mode": "product"}, "min_base_resolution": 32} if smoke else {}
    upto = 1 if smoke else args.family_upto
    if upto > 0:
        scale = search_with_workers("stage 2", {"results_dir": str(out), "base": str(out / "stage1" / "best.json"),
                                                "search": {"study_name": "stage2"}, "proxy": {**tiny}, **smoke_grid,
                                                "rerank": {"k": args.stage2_rerank, **({"epochs": 1, "train_size": 512}
                                                                                      if smoke else {})}},
                                    args.jobs, args.threads)
        _stop_if_interrupted(scale.interrupted, "stage 2")
        coeff = scale.folder / "coefficients.yaml"
        ours = run_family({"results_dir": str(out), "study_name": "family-searched", "coefficients": str(coeff),
                           "max_phi": upto})
        theirs, specs = family_table(ref, "paper", upto, resolution=r)
        family, phi_of = [], {}
        for phi in range(1, upto + 1):
            mine = ours.specs[f"b{phi}"]
            family += [(f"searched b{phi}", mine, seeds),
                       (f"EfficientNet b{phi} (paper coefficients)", specs[f"b{phi}"], seeds)]
            # the fair pair: EfficientNet-B0 at the searched b{phi}'s resolution and FLOPs (and dropout)
            found = matched_efficientnet(ref, count_flops(mine, mine.resolution), mine.resolution)
            if found is None:
                print(f"searched b{phi}: no EfficientNet-B0 width/depth within 5% of its FLOPs at "
                      f"{mine.resolution} px; no matched network for it", flush=True)
            else:
                spec, fw, fd = found
                family.append((f"EfficientNet-B0 w{fw:g} d{fd:g} at {mine.resolution} px (matched to searched b{phi})",
                               spec.replace(dropout=mine.dropout), seeds))
            phi_of.update((name, phi) for name, _, _ in family if name not in phi_of)
        # phi by phi (b1's networks first, then b2's ...): a run stopped after hours has whole phis
        family_rows = train(family, phi_of)
        table += family_rows

    # 4. proxy vs full: Kendall tau ------------------------------------------------------------
    proxy = [row["proxy_accuracy"] for row in table]
    final = [row["accs"][0] for row in table]  # seed 0: every network has it (the tau-extra ones only it)
    tau = kendall_tau(proxy, final)
    plain = [-float(ArchSpec.from_string(row["arch"]).plain_layers) for row in table]  # fewer is better
    tau_plain = kendall_tau(plain, final)  # the zero-cost count of layers without a shortcut, for comparison

    # output -----------------------------------------------------------------------------------
    lines = ["| network | params | MFLOPs | px | proxy acc (1 epoch) | proxy run | test acc mean ± sd | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['name']} | {row['params'] / 1e6:.2f}M | {row['flops'] / 1e6:.2f} | {row['resolution']} | "
                     f"{row['proxy_accuracy']:.4f} | {row['proxy_source']} | {row['mean']:.4f} ± {row['sd']:.4f} | "
                     f"{len(row['accs'])} |")
    text = "\n".join(lines) + (f"\n\nKendall tau (1-epoch proxy accuracy vs full-protocol test accuracy of seed 0, "
                               f"{len(table)} networks): {tau:.3f}; of the count of layers without a shortcut "
                               f"(fewer is better; zero cost): {tau_plain:.3f}\n")
    (out / "pipeline.md").write_text(text)
    _plot(table, out / "pipeline.png")
    print(text)
    by_name = {row["name"]: row for row in table}
    for phi in range(1, upto + 1):  # each searched b{phi} against EfficientNet's b{phi} and its FLOPs-matched B0
        a = by_name[f"searched b{phi}"]
        for b in (by_name.get(f"EfficientNet b{phi} (paper coefficients)"),
                  next((r for n, r in by_name.items() if n.endswith(f"(matched to searched b{phi})")), None)):
            if b is not None:
                print(f"searched b{phi} {a['mean']:.4f} ± {a['sd']:.4f} at {a['flops'] / 1e6:.2f}M FLOPs "
                      f"{'beats' if a['mean'] > b['mean'] else 'does not beat'} {b['name']} "
                      f"{b['mean']:.4f} ± {b['sd']:.4f} ({b['flops'] / 1e6:.2f}M, {b['resolution']} px)", flush=True)
    s0, m0 = table[0], table[1]
    verdict = "beats" if s0["mean"] > m0["mean"] else "does not beat"
    print(f"searched B0 {s0['mean']:.4f} ± {s0['sd']:.4f} at {s0['flops'] / 1e6:.2f}M FLOPs {verdict} EfficientNet-B0 "
          f"matched to its FLOPs {m0['mean']:.4f} ± {m0['sd']:.4f} ({m0['flops'] / 1e6:.2f}M); tau {tau:.2f}; "
          f"{time.monotonic() - started:.0f}s{' (smoke: sizes are toys)' if smoke else ''}")


def _preload_allocator(choice: str) -> None:
    """Run this script again with tcmalloc in ``LD_PRELOAD`` (inherited by every worker and training
    process it starts), as the command-line tools do (:mod:`effnas.allocator`, where the measurement
    is): not with "glibc", nor with "auto" where ``LD_PRELOAD`` already holds a library."""
    from effnas import allocator

    try:
        preload = allocator.preload_for("system" if choice == "glibc" else choice)
    except ValueError as exc:
        raise SystemExit(f"--allocator {choice}: {exc}") from None
    if preload is not None:
        allocator.restart_with(preload, [sys.executable, *sys.argv])


def _stop_if_interrupted(signame: str | None, what: str) -> None:
    """The searches return on Ctrl-C / SIGTERM with what finished saved; the bench stops there too
    (not go on to the next step with a half-done search). Run it again to resume."""
    if signame is not None:
        print(f"{what} interrupted by {signame}: stopped; run the same command again to resume", flush=True)
        raise SystemExit(130 if signame == "SIGINT" else 143)


# The plot's lines: (kind, legend label, marker and line style, colour).
_LINES = (("searched", "searched B0 and its family b1..", "o-", "C3"),
          ("paper", "EfficientNet-B0 and b1.. (paper coefficients)", "s-", "C0"),
          ("matched", "EfficientNet-B0 matched to each searched member's FLOPs", "^--", "C2"),
          ("stage-1", "stage-1 networks by proxy reward (seed 0)", ".", "0.55"))


def _kind(name: str) -> str | None:
    """Which of :data:`_LINES` a table row belongs to (None: drawn alone, e.g. MnasNet-A1)."""
    if name == "searched B0" or name.startswith("searched b"):
        return "searched"
    if "(matched" in name:
        return "matched"
    if name == "EfficientNet-B0" or name.startswith("EfficientNet b"):
        return "paper"
    if name.startswith("stage-1 network"):
        return "stage-1"
    return None


def _plot(table: list[dict], path: Path) -> None:
    """Accuracy against FLOPs: the families as lines (in FLOPs order), the other networks alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for kind, label, fmt, color in _LINES:
        rows = sorted((r for r in table if _kind(r["name"]) == kind), key=lambda r: r["flops"])
        if rows:
            ax.errorbar([r["flops"] / 1e6 for r in rows], [r["mean"] for r in rows], yerr=[r["sd"] for r in rows],
                        fmt=fmt, color=color, capsize=3, label=label)
    for i, row in enumerate(r for r in table if _kind(r["name"]) is None):
        ax.errorbar(row["flops"] / 1e6, row["mean"], yerr=row["sd"], fmt="DvP*"[i % 4], color=f"C{4 + i % 5}",
                    capsize=3, label=row["name"])
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 2, 3, 4, 6 -- not 2x10^0
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("MFLOPs (multiply-adds)")
    ax.set_ylabel("test accuracy (mean ± sd over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
