"""Hydra entry points: ``nas-search`` and ``nas-train``. Thin layers over plain functions.

Every user error becomes one line on stderr and exit status 2 (never a traceback); an
interrupted run (Ctrl-C / SIGTERM) writes its results and exits 130 / 143.
"""

from __future__ import annotations

import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable

__all__ = ["search_main", "train_main", "check_group_overrides", "fail", "hydra_entry", "to_dict"]

log = logging.getLogger("effnas")

CONFIG_PATH = "pkg://effnas_conf"


def fail(message: str, code: int = 2) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _group_options(group: str) -> list[str] | None:
    try:
        folder = resources.files("effnas_conf").joinpath(*group.split("/"))
        if not folder.is_dir():
            return None
        return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def check_group_overrides(argv: list[str], groups: list[str]) -> None:
    """Hydra reports an unknown group option (``sampler=foo``) as a multi-line message; say it in
    one line with the valid options instead, before Hydra starts."""
    for arg in argv:
        if "=" not in arg or arg.startswith(("-", "+", "~")):
            continue
        key, _, value = arg.partition("=")
        if key not in groups:
            continue
        options = _group_options(key)
        if options is None:
            continue
        wanted = [v.strip() for v in value.split(",")] if not value.startswith(("range(", "choice(", "glob(")) else []
        for v in wanted:
            if v not in options:
                fail(f"unknown {key} {v!r}; valid: {', '.join(options)}")


def to_dict(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]


def _absolute_results(cfg: dict[str, Any]) -> None:
    """Relative ``results_dir`` is taken from where the user launched (also in multirun jobs)."""
    from hydra.core.hydra_config import HydraConfig

    results = Path(cfg.get("results_dir") or "results").expanduser()
    if not results.is_absolute():
        try:
            results = Path(HydraConfig.get().runtime.cwd) / results
        except ValueError:
            results = Path.cwd() / results
    cfg["results_dir"] = str(results)


def hydra_entry(config_name: str, task: Callable[[dict[str, Any]], int | None], groups: list[str]) -> None:
    """Run ``task(cfg_dict)`` under ``hydra.main``, turning errors into one line + exit 2."""
    import hydra
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    check_group_overrides(sys.argv[1:], groups)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # effnas prints its own one-line progress

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
    def _main(cfg: Any) -> None:
        try:
            plain = to_dict(cfg)
        except MissingMandatoryValue as exc:
            fail(f"missing value for {exc.full_key}: set it on the command line, e.g. {exc.full_key}=...")
        except OmegaConfBaseException as exc:
            fail(str(exc).splitlines()[0])
        _absolute_results(plain)
        try:
            code = task(plain)
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            fail(str(exc))
        except KeyboardInterrupt as exc:  # before the worker loop (loading data...): nothing to save
            name = getattr(exc, "signame", "SIGINT")
            fail(f"interrupted by {name} before any trial finished; nothing was written",
                 143 if name == "SIGTERM" else 130)
        if code:
            raise SystemExit(code)

    _main()


def _search_task(cfg: dict[str, Any]) -> int:
    from .search import run_search

    outcome = run_search(cfg)
    best = outcome.best
    counts = ", ".join(f"{n} {s.lower()}" for s, n in outcome.counts.items())
    if outcome.interrupted:
        print(f"nas-search interrupted by {outcome.interrupted}: the running trial was marked FAIL and queued again; "
              f"{counts}; results written to {outcome.folder}", file=sys.stderr, flush=True)
        return 143 if outcome.interrupted == "SIGTERM" else 130
    if best is None:
        print(f"nas-search: no trial completed ({counts}); see {outcome.folder / 'trials.csv'}")
        return 1
    print(f"nas-search: study {outcome.study_name}: {counts}")
    print(f"winner (B0): trial {best['trial']}, reward {best['reward']:.4f}, minival accuracy "
          f"{best['accuracy']:.4f}, {best['flops'] / 1e6:.2f}M FLOPs, {best['params'] / 1e6:.3f}M params")
    print(f"  arch: {best['arch']}")
    print(f"  results: {outcome.folder}/trials.parquet, trials.csv, best.json")
    return 0


def _train_task(cfg: dict[str, Any]) -> int:
    from .trainone import run_train

    out = run_train(cfg)
    print(f"nas-train: {out['name']}: test accuracy {out['test_accuracy']:.4f} "
          f"(minival {out['minival_accuracy']:.4f}) after {out['epochs']} epochs; saved in {out['folder']}")
    return 0


_GROUPS = ["dataset", "space", "sampler", "pruner", "storage", "objective"]


def search_main() -> None:
    hydra_entry("nas_search", _search_task, _GROUPS)


def train_main() -> None:
    hydra_entry("nas_train", _train_task, ["dataset"])


if __name__ == "__main__":  # pragma: no cover
    search_main()
