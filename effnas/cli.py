"""The CLI shell every command shares: a Hydra entry point with one-line errors and exit codes.

:func:`run_app` checks the command line *before* Hydra runs: the override grammar, each job's
composition (unknown keys and typos, wrong types, a missing group option) and every value rule of
the typed config (:mod:`effnas.config`). Whatever is wrong is one line on stderr naming the key,
exit status 2 -- Hydra's own multi-line errors never reach the user. ``--cfg job|all|hydra`` is
answered here too, with passwords redacted. Then Hydra runs the command (single run or
``-m`` multirun with any launcher); inside, the task gets the typed config.

Exit codes: 0 done, 1 the command ran but produced nothing (e.g. no trial completed) or a launcher
job (worker) ended without a result (``effnas.launchers.WorkerJobsFailed``), 2 a user error,
130 / 143 interrupted by SIGINT / SIGTERM (results written first).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from typing import Any, Callable, Sequence

__all__ = ["fail", "run_app", "check_command_line", "explain_error", "UsageError"]

log = logging.getLogger("effnas")

CONFIG_PATH = "pkg://effnas_conf"
_MAX_JOBS_CHECKED = 256
# Flags Hydra takes, with whether they consume the next argument.
_FLAGS = {"-m": False, "--multirun": False, "-c": True, "--cfg": True, "-p": True, "--package": True,
          "--resolve": False, "--help": False, "-h": False, "--hydra-help": False, "--info": False, "-i": False,
          "--version": False, "--run": False, "-r": False, "--shell-completion": False, "-sc": True,
          "--config-path": True, "-cp": True, "--config-name": True, "-cn": True, "--config-dir": True,
          "-cd": True, "--experimental-rerun": True}


class UsageError(ValueError):
    """A bad command line; the message is one line naming the key."""


def fail(message: str, code: int = 2) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with ``code`` (2: a user error)."""
    from .secrets import redact_secrets

    print(f"error: {redact_secrets(' '.join(str(message).split()))}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# --------------------------------------------------------------------------------- the command line


def _split_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, str | bool]]:
    overrides: list[str] = []
    flags: dict[str, str | bool] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and not arg.startswith("--") and "=" in arg:  # e.g. -m=... never valid
            raise UsageError(f"unknown option {arg!r}")
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if name not in _FLAGS:
                raise UsageError(f"unknown option {name!r}; overrides are key=value, options: -m/--multirun, "
                                 f"--cfg job|hydra|all, --resolve, --help")
            if _FLAGS[name]:
                if not eq:
                    if i + 1 >= len(args):
                        raise UsageError(f"option {name} needs a value")
                    value = args[i + 1]
                    i += 1
                flags[name] = value
            else:
                flags[name] = True
        else:
            overrides.append(arg)
        i += 1
    return overrides, flags


def _key_of(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].strip() or override


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as exc:
            quoted = _quoted(text)
            if quoted is not None:  # e.g. arch='stem=32 r1_k3_s11_e1_i32_o16 ...' as best.json prints it
                try:
                    parsed.extend(parser.parse_overrides([quoted]))
                    continue
                except OverrideParseException:
                    pass
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "hydra.cc" not in ln
                     and not ln.startswith("Error parsing override")]
            raise UsageError(f"{_key_of(text)}: cannot parse override {text!r}"
                             f"{': ' + lines[0] if lines else ''} (see Hydra's override grammar)") from None
    for o in parsed:
        if not o.key_or_group:
            raise UsageError(f"cannot parse override {o.input_line!r}: expected key=value")
    return parsed


_PLAIN_KEY = re.compile(r"^[+~]?[A-Za-z_][\w.]*=")


def _quoted(text: str) -> str | None:
    """``key=value`` with the value quoted for Hydra's grammar, when the value is one plain string
    that the grammar cannot read unquoted (spaces, ``=``): architecture strings."""
    m = _PLAIN_KEY.match(text)
    if m is None:
        return None
    value = text[m.end():]
    if not value or any(c in value for c in "'\"\\$"):
        return None
    return f"{text[:m.end()]}'{value}'"


_WORKER_CONFIGS = ("nas_search", "scale_search")  # the commands whose workers share a study (worker=range(N))


def _launcher_without_multirun(config_name: str, parsed: list[Any], multirun: bool) -> None:
    """Hydra uses a launcher only in a multirun; without ``-m`` the command would quietly run here, in
    this process, however long -- refused in one line instead."""
    launcher = next((o for o in parsed if o.key_or_group == "hydra/launcher" and not o.is_delete()), None)
    if launcher is None or multirun or str(launcher.value()) == "basic":
        return
    tool = config_name.replace("_", "-")
    example = f"{tool} -m {launcher.input_line}" + (" 'worker=range(2)'" if config_name in _WORKER_CONFIGS else "")
    raise UsageError(f"{launcher.input_line}: a launcher starts jobs only in a multirun: add -m (e.g. {example}), "
                     f"or drop it to run in this process")


def _jobs(parsed: list[Any], multirun: bool) -> list[list[str]]:
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if not sweeps:
        return [[o.input_line for o in parsed]]
    if not multirun:
        o = sweeps[0]
        raise UsageError(f"{o.key_or_group}: {o.input_line!r} is a sweep (several values): add -m to run one job "
                         f"per value, or give one value")
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    try:
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception as exc:  # noqa: BLE001 -- e.g. an empty range(): one line, naming the sweep
        raise UsageError(f"{sweeps[0].key_or_group}: cannot expand sweep {sweeps[0].input_line!r} "
                         f"({_first_line(exc)})") from None
    jobs = [job for batch in batches for job in batch]
    if not jobs:
        raise UsageError(f"{sweeps[0].key_or_group}: the sweep {sweeps[0].input_line!r} gives no job")
    return jobs


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _siblings(config_name: str, key: str) -> list[str]:
    """The valid keys next to ``key`` in the default config (for "did you mean")."""
    from omegaconf import DictConfig, OmegaConf

    from .config import compose

    try:
        node: Any = compose(config_name, [])
    except Exception:  # noqa: BLE001
        return []
    parts = key.split(".")[:-1]
    for p in parts:
        if not isinstance(node, DictConfig) or p not in node:
            return []
        node = node[p]
    if not isinstance(node, DictConfig):
        return []
    return [str(k) for k in OmegaConf.to_container(node, resolve=False, throw_on_missing=False)]


def _unknown_key(config_name: str, key: str) -> str:
    leaf = key.split(".")[-1]
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    valid = _siblings(config_name, key)
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    where = f"valid keys of {prefix.rstrip('.')}" if prefix else "valid top-level keys"
    listing = f" ({where}: {', '.join(valid)})" if valid and not close else ""
    return f"unknown key {key}{hint}{listing}"


def explain_error(config_name: str, exc: BaseException, job: list[str]) -> str:
    """One line, naming the key, for whatever Hydra or OmegaConf raised while composing ``job``."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

    from .config import group_options

    if isinstance(exc, MissingConfigException):
        missing = str(getattr(exc, "missing_cfg_file", "") or "")
        group, _, option = missing.rpartition("/")
        if group:
            options = list(getattr(exc, "options", None) or []) or group_options(group)
            return f"{group}: unknown option {option!r}; valid: {', '.join(options)}"
        return _first_line(exc)
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    text = _first_line(exc)
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        message = _first_line(cause)
        if isinstance(cause, MissingMandatoryValue) and key:
            return f"{key} is not set: pass {key}=<value>"
        if isinstance(cause, ValidationError) and key:
            m = re.search(r"Value '(.*?)'(?: of type '[^']*')? could not be converted to (\w+)", message) or \
                re.search(r"Value '(.*?)' is not a valid (bool)", message)
            if m:
                kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
                        "String": "a string", "bool": "true or false"}.get(m.group(2), m.group(2))
                return f"{key} must be {kind}, got {m.group(1)!r}"
            return f"{key}: {message}"
        if isinstance(cause, (ConfigKeyError, AttributeError)) or "not in struct" in message or "not in '" in message:
            if key:
                return _unknown_key(config_name, key)
        if key:
            return f"{key}: {message}"
    m = re.search(r"Could not (?:override|append to config|delete from config)\.? '?([\w./@-]+)'?", text)
    key = m.group(1) if m else _key_of(job[0]) if job else "?"
    if "not in struct" in str(exc) or "is not in" in str(exc):
        return _unknown_key(config_name, key)
    return f"{key}: {text}"


def check_command_line(config_name: str, argv: Sequence[str]) -> tuple[list[list[str]], dict[str, Any]]:
    """Check a command line as Hydra will run it: every job's config composes and passes every
    value rule. Returns ``(jobs' overrides, flags)``; raises :class:`UsageError` (one line)."""
    from .config import compose, register_groups, to_typed
    from .schema import ConfigError

    register_groups()
    overrides, flags = _split_argv(argv)
    parsed = _parse(overrides)
    flags["overrides"] = [o.input_line for o in parsed]  # as Hydra must get them (quoted where needed)
    multirun = bool(flags.get("-m") or flags.get("--multirun"))
    jobs = _jobs(parsed, multirun)
    for job in jobs[:_MAX_JOBS_CHECKED]:
        try:
            cfg = compose(config_name, job, hydra_config=any(o.startswith(("hydra", "+hydra")) for o in job))
        except Exception as exc:  # noqa: BLE001 -- every composition error becomes one line
            raise UsageError(explain_error(config_name, exc, job)) from None
        try:
            if "hydra" in cfg:
                from omegaconf import OmegaConf, open_dict

                with open_dict(cfg):
                    del cfg["hydra"]
                OmegaConf.set_struct(cfg, True)
            to_typed(cfg)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 -- e.g. a missing mandatory value
            raise UsageError(_missing_dataset_root(cfg, exc) or explain_error(config_name, exc, job)) from None
    _launcher_without_multirun(config_name, parsed, multirun)  # a valid launcher, then: needs -m
    return jobs, flags


def _missing_dataset_root(cfg: Any, exc: BaseException) -> str | None:
    """``dataset=cifar10`` without ``dataset.root``: the ways to get the files, not OmegaConf's words."""
    from omegaconf.errors import MissingMandatoryValue

    if not isinstance(exc, MissingMandatoryValue) or getattr(exc, "full_key", None) != "dataset.root":
        return None
    from .data.registry import get_source

    name = cfg.dataset.name
    source = get_source(name)
    if source.default_root is not None:
        return f"dataset.root is not set: pass a folder, or null for dataset={name}'s own ({source.default_root})"
    return f"dataset.root is not set: dataset={name} has no default folder; {source.fixes(False)}"


def _print_config(config_name: str, job: list[str], which: str, resolve: bool) -> None:
    from omegaconf import OmegaConf

    from .config import compose
    from .secrets import redact_secrets

    if which not in ("job", "hydra", "all"):
        raise UsageError(f"--cfg must be job, hydra or all, got {which!r}")
    cfg = compose(config_name, job, hydra_config=which != "job")
    if which == "hydra":
        cfg = cfg.hydra
    elif which == "job" and "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    print(redact_secrets(OmegaConf.to_yaml(cfg, resolve=resolve)), end="", flush=True)


# --------------------------------------------------------------------------------- running the app


def _hydra_argv(argv: list[str], overrides: list[str]) -> list[str]:
    """The command line with its overrides replaced by their checked (quoted) form, flags kept."""
    out, queue, i = [], list(overrides), 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            out.append(arg)
            name = arg.partition("=")[0]
            if _FLAGS.get(name) and "=" not in arg and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        elif queue:
            out.append(queue.pop(0))
        i += 1
    return out


def _absolute_results(cfg: Any) -> None:
    """Relative ``results_dir`` is taken from where the user launched (also in multirun jobs)."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    if not hasattr(cfg, "results_dir"):
        return
    results = Path(cfg.results_dir or "results").expanduser()
    if not results.is_absolute():
        try:
            results = Path(HydraConfig.get().runtime.cwd) / results
        except ValueError:
            results = Path.cwd() / results
    given = cfg.results_dir
    cfg.results_dir = str(results)
    existing = results
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        fail(f"results_dir={given}: {existing} is a file; expected a folder (made where missing)")


def _run_task(task: Callable[[Any], int | None], cfg: Any) -> int:
    """Run ``task(typed cfg)`` turning errors and signals into one line and an exit code."""
    from .config import to_typed
    from .data import DataError
    from .schema import ConfigError
    from .study.signals import exit_code

    try:
        typed = to_typed(cfg)
    except ConfigError as exc:
        fail(str(exc))
    _absolute_results(typed)
    try:
        return int(task(typed) or 0)
    except (ValueError, DataError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:  # before or outside a worker loop: nothing half-written is kept
        name = getattr(exc, "signame", "SIGINT")
        fail(f"interrupted by {name}; " + (getattr(exc, "detail", None)
                                           or "finished results (if any) are written, nothing else was saved"),
             exit_code(name))
    return 0


def _early_signals() -> None:
    """Until the work installs its own handlers (``effnas.study.handle_signals``), SIGTERM ends the
    command like Ctrl-C does: one line and exit 143 (SIGTERM's default would kill it silently)."""
    import signal

    from .study.signals import Interrupted

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted("SIGTERM")

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        pass


def _interrupted(exc: BaseException) -> int:
    from .study.signals import exit_code

    name = getattr(exc, "signame", "SIGINT")
    try:
        fail(f"interrupted by {name} before any work was done; nothing was written", exit_code(name))
    except SystemExit as done:
        return int(done.code)
    return exit_code(name)


def run_app(config_name: str, task: Callable[[Any], int | None], argv: Sequence[str] | None = None) -> int:
    """The whole command: check the command line, then run ``task`` under ``hydra.main``.
    Returns the exit code (console scripts ``sys.exit`` with it)."""
    from .threads import configure

    configure(warn=False)  # OMP_WAIT_POLICY=PASSIVE where unset: read by OpenMP when torch loads (effnas.threads)
    argv = list(sys.argv[1:] if argv is None else argv)
    _early_signals()
    try:
        jobs, flags = check_command_line(config_name, argv)
        if flags.get("--cfg") or flags.get("-c"):
            _print_config(config_name, jobs[0], str(flags.get("--cfg") or flags.get("-c")), bool(flags.get("--resolve")))
            return 0
    except UsageError as exc:
        try:
            fail(str(exc))
        except SystemExit as done:
            return int(done.code)
    except KeyboardInterrupt as exc:
        return _interrupted(exc)

    import hydra
    import optuna

    from .config import register_groups
    from .launchers import register_launchers
    from .secrets import redact_log_records

    register_groups()
    register_launchers()  # hydra/launcher=slurm's class, also from an editable install
    redact_log_records()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # effnas prints its own one-line progress
    outcome = {"code": 0}

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
    def _main(cfg: Any) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # again: launcher jobs are fresh processes
        # at debug (hydra.verbose=effnas): stderr stays one line on an error; the training commands'
        # first progress line names the allocator too. /proc/self/maps is read only when it is shown.
        if log.isEnabledFor(logging.DEBUG):
            from .allocator import in_use

            log.debug("memory allocator: %s (EFFNAS_ALLOCATOR=%s)", in_use(), os.environ.get("EFFNAS_ALLOCATOR", "auto"))
        code = _run_task(task, cfg)
        outcome["code"] = code
        if code:
            raise SystemExit(code)

    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [saved_argv[0] if saved_argv else config_name, *_hydra_argv(argv, flags["overrides"])]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises: its errors become one line below
    try:
        _main()
    except SystemExit as done:
        return int(done.code or 0) if not isinstance(done.code, str) else 2
    except KeyboardInterrupt as exc:  # while Hydra starts, before the task's own handling
        return _interrupted(exc)
    except Exception as exc:  # noqa: BLE001 -- anything Hydra or a launcher raised
        try:
            fail(_first_line(exc), getattr(exc, "exit_code", 2))  # effnas.launchers.WorkerJobsFailed: 1
        except SystemExit as done:
            return int(done.code)
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
    return outcome["code"]
