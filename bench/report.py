"""``nas-report`` on a realistic 10,000-trial study vs a plain ``pd.read_parquet`` of the same file.

Run from the repository root::

    python bench/report.py [--trials 10000] [--rounds 3] [--seed 0] [--optuna] [--keep DIR]

Builds a study folder the way ``nas-search`` leaves it -- ``trials.parquet``/``.csv`` with
:data:`effnas.results.TRIALS`' columns and one column per stage choice ``s1_op .. s7_layers``
(the default MnasNet space over EfficientNet-B0, 49 choices), ``best.json`` and ``config.yaml``
-- with random but plausible trials: 8 workers, ~85% complete, pruned trials with the accuracy
they were stopped at, a few failed and running ones, real FLOPs/params/arch strings of the
sampled networks, and an accuracy that depends on a few choices plus noise.

Then, in the same run and on the same file, it times (best of ``--rounds``):

* ``pd.read_parquet`` -- the floor;
* ``report.load_results`` of the Parquet and of the CSV file;
* ``report.param_importances`` (PED-ANOVA from the table);
* with ``--optuna``: the same importance through Optuna's ``PedAnovaImportanceEvaluator`` on a
  study built with one ``add_trials`` of ``create_trial`` objects, and the largest difference
  between the two results (they compute the same quantity);
* ``report.make_report`` with plots (what ``nas-report`` does in-process);
* ``nas-report`` as a fresh process (``python -m report``: interpreter start and imports too).

The last lines are the timings side by side and the ratio ``make_report / read_parquet``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run without installing

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from effnas.io import write_json, write_table  # noqa: E402
from effnas.results import TRIALS  # noqa: E402
from search_space import count_flops, count_params, default_space  # noqa: E402

RESOLUTION = 32


class _Pick:
    """What ``SearchSpace.sample`` asks of a trial: draws each choice at random, remembers it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.params = rng, {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        value = self.rng.choice(choices)
        self.params[name] = value
        return value


def build_study(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """Write a ``nas-search``-like results folder of ``n`` trials; returns the trials frame."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    space = default_space(num_classes=10, in_channels=1, resolution=RESOLUTION)
    names = space.param_names()
    picks, specs = [], []
    for _ in range(n):
        pick = _Pick(rng)
        specs.append(space.sample(pick))
        picks.append(pick.params)
    flops = np.array([count_flops(s, RESOLUTION) for s in specs], dtype="float64")
    params = np.array([count_params(s) for s in specs], dtype="int64")
    target = float(np.median(flops))
    # accuracy: bigger helps a little; stage 1's op, stage 4's kernel and stage 6's SE matter; noise
    acc = (0.86 + 0.015 * np.log(flops / target)
           - np.array([0.03 if p["s1_op"] == "conv" else 0.0 for p in picks])
           + np.array([0.01 if p["s4_kernel"] == 5 else 0.0 for p in picks])
           + np.array([0.008 if p["s6_se"] > 0 else 0.0 for p in picks])
           + nrng.normal(0, 0.008, n)).clip(0.1, 0.99)
    reward = acc * (flops / target) ** -0.07
    state = nrng.choice(["COMPLETE", "PRUNED", "FAIL", "RUNNING"], size=n, p=[0.85, 0.1, 0.03, 0.02])
    state[-8:] = "RUNNING"  # the last trial of each worker is still running
    state[:8] = "COMPLETE"
    duration = nrng.gamma(4.0, 15.0, n)
    workers = [f"host{i % 4}:{1000 + i}" for i in range(8)]
    clock = [pd.Timestamp("2026-03-01 08:00:00")] * 8
    rows = []
    for i in range(n):
        w = i % 8
        start = clock[w] + pd.Timedelta(seconds=float(nrng.uniform(0.05, 0.5)))
        st = state[i]
        secs = duration[i] * (0.35 if st == "PRUNED" else 0.05 if st == "FAIL" else 1.0)
        end = None if st == "RUNNING" else start + pd.Timedelta(seconds=float(secs))
        clock[w] = end if end is not None else start
        epochs = 5 if st == "COMPLETE" else 2 if st == "PRUNED" else 0 if st == "FAIL" else None
        rows.append({
            "number": i, "state": st,
            "reward": float(reward[i]) if st == "COMPLETE" else None,
            "accuracy": float(acc[i] - (0.05 if st == "PRUNED" else 0)) if st in ("COMPLETE", "PRUNED") else None,
            "flops": int(flops[i]), "params": int(params[i]), "latency_ms": None,
            "arch": specs[i].to_string(), "epochs": epochs,
            "train_seconds": float(secs * 0.9) if st in ("COMPLETE", "PRUNED") else None,
            "worker": workers[w], "seed": i,
            "datetime_start": start, "datetime_complete": end,
            "duration_seconds": None if end is None else (end - start).total_seconds(),
            "reason": (f"pruned by MedianPruner at epoch 2 (reward {reward[i] * 0.95:.4f}, acc {acc[i] - 0.05:.4f})"
                       if st == "PRUNED" else "diverged: loss is nan" if st == "FAIL" else None),
            "retry_of": None,
            **{name: picks[i].get(name) for name in names},
        })
    df = TRIALS.frame(rows, names)
    for name in names:  # as effnas.results.trials_frame types them
        values = [r[name] for r in rows if r[name] is not None]
        if all(isinstance(v, str) for v in values):
            df[name] = df[name].astype("string")
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            df[name] = df[name].astype("Int64")
        else:
            df[name] = pd.to_numeric(df[name]).astype("float64")
    folder.mkdir(parents=True, exist_ok=True)
    write_table(df, folder, "trials")
    done = df[df["state"] == "COMPLETE"]
    best = done.sort_values(["reward", "number"], ascending=[False, True]).iloc[0]
    write_json({"arch": best["arch"], "params": int(best["params"]), "flops": int(best["flops"]),
                "accuracy": float(best["accuracy"]), "reward": float(best["reward"]), "T": target, "w": -0.07,
                "alpha": -0.07, "beta": -0.07, "metric": "flops", "study": folder.name,
                "trial": int(best["number"]), "choices": {k: picks[int(best["number"])].get(k) for k in names}},
               folder / "best.json")
    (folder / "config.yaml").write_text(yaml.safe_dump({"sampler": {"name": "tpe"},
                                                        "objective": {"metric": "flops", "target": target}}))
    return df


def best_of(rounds: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def optuna_importance(df: pd.DataFrame, quantile: float) -> dict[str, float]:
    """The alternative: Optuna's evaluator on a study built from the table in one add_trials."""
    import optuna

    choices = [c for c in df.columns if c[:1] == "s" and "_" in c and c.split("_")[0][1:].isdigit()]
    done = df[(df["state"] == "COMPLETE") & df["reward"].notna()]
    dists = {c: optuna.distributions.CategoricalDistribution(
        [v.item() if hasattr(v, "item") else v for v in df[c].cat.categories]) for c in choices}
    records = done[choices].astype(object).where(done[choices].notna(), None).to_dict("records")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials([optuna.trial.create_trial(
        params={k: (v.item() if hasattr(v, "item") else v) for k, v in r.items() if v is not None},
        distributions={k: dists[k] for k, v in r.items() if v is not None}, value=float(reward))
        for r, reward in zip(records, done["reward"])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optuna", action="store_true", help="also time Optuna's evaluator on the same table")
    ap.add_argument("--keep", metavar="DIR", help="build the study folder here and keep it")
    args = ap.parse_args()

    from report import load_results, make_report, param_importances

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-report-"))
    folder = root / "bench-study"
    try:
        t0 = time.perf_counter()
        build_study(folder, args.trials, args.seed)
        print(f"built {folder} ({args.trials} trials, {time.perf_counter() - t0:.1f}s)", flush=True)
        parquet, csv = folder / "trials.parquet", folder / "trials.csv"

        def read_parquet() -> pd.DataFrame:
            with open(parquet, "rb") as f:
                return pd.read_parquet(f)

        rows: list[tuple[str, float]] = []
        t_read, _ = best_of(args.rounds, read_parquet)
        rows.append(("pd.read_parquet", t_read))
        t_load, df = best_of(args.rounds, lambda: load_results(parquet))
        rows.append(("load_results (parquet)", t_load))
        t_csv, df_csv = best_of(args.rounds, lambda: load_results(csv))
        rows.append(("load_results (csv)", t_csv))
        pd.testing.assert_frame_equal(df, df_csv)
        t_imp, (imp, note) = best_of(args.rounds, lambda: param_importances(df))
        rows.append(("param_importances", t_imp))
        print(f"importance: {note}")
        print("  top 5: " + ", ".join(f"{k} {v:.3f}" for k, v in imp.head(5).items()))
        if args.optuna:
            quantile = imp.attrs["quantile"]
            t_opt, ref = best_of(1, lambda: optuna_importance(df, quantile))
            rows.append(("optuna PedAnovaImportanceEvaluator", t_opt))
            diff = max(abs(ref.get(k, 0.0) - float(imp.get(k, 0.0))) for k in set(ref) | set(imp.index))
            print(f"  optuna's evaluator on the same table: max |difference| {diff:.2e}; top 5: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in list(ref.items())[:5]))
        out = root / "out"
        t_rep, rep = best_of(args.rounds, lambda: make_report(folder, out, plots=True))
        rows.append(("make_report (plots)", t_rep))
        print(f"make_report wrote {len(rep.plots)} plots: {', '.join(p.name for p in rep.plots)}")
        cli = [sys.executable, "-m", "report", str(folder), "--out", str(root / "cli")]
        t_cli, proc = best_of(1, lambda: subprocess.run(cli, cwd=ROOT, capture_output=True, text=True))
        if proc.returncode != 0:
            raise SystemExit(f"nas-report failed: {proc.stderr.strip()}")
        rows.append(("nas-report process (python -m report)", t_cli))
        print()
        width = max(len(name) for name, _ in rows)
        for name, secs in rows:
            print(f"{name:<{width}}  {secs * 1000:9.1f} ms  {secs / t_read:7.1f}x read_parquet")
        print(f"make_report with plots / read_parquet = {t_rep / t_read:.1f}x "
              f"({t_rep * 1000:.0f} ms vs {t_read * 1000:.1f} ms, {args.trials} trials); "
              f"load_results / read_parquet = {t_load / t_read:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
