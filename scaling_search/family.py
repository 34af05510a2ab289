"""``scale-family``: B0 -> B0..B7 with fixed alpha, beta, gamma (the paper's step 2).

Member phi has depth ``alpha**phi``, width ``beta**phi``, resolution ``round(r0 * gamma**phi)``
and dropout growing linearly from 0.2 at phi = 0 to 0.5 at phi = 7 (the paper's B0 and B7; held
at 0.5 beyond), all with the official rounding. ``coefficients="paper"`` uses the published
B0..B7 rows instead (``search_space.references.EFFICIENTNET_PARAMS``), which are not exactly
``1.2**phi, 1.1**phi, 1.15**phi``: the tool offers both. For a base at another resolution than
224 the published resolutions are scaled by ``r0 / 224``.

Every member reports its FLOPs ratio to B0 and to ``2**phi``: the formula promises
``(alpha * beta**2 * gamma**2) ** phi ~= 2**phi``; the rounded networks land elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import yaml

from effnas.config import as_config
from effnas.io import write_json, write_table
from effnas.results import FAMILY
from effnas.runs import study_folder
from search_space import ArchSpec, count_flops, count_params, resolve_arch, scale_resolution
from search_space.references import EFFICIENTNET_PARAMS
from search_space.resolve import DEFAULT_ARCH

from .config import ScaleFamilyConfig
from .grid import product_of, scaled_spec

__all__ = ["PAPER", "Coefficients", "load_coefficients", "resolve_coefficients", "family_table", "format_family",
           "run_family", "FamilyOutcome", "FAMILY_COLUMNS", "dropout_at"]

PAPER = "paper"
_PAPER_ROWS = list(EFFICIENTNET_PARAMS.values())  # (width, depth, resolution, dropout) of B0..B7
_PAPER_R0 = 224
_DROPOUT_SPAN = 7  # the paper's dropout goes from B0 to B7

FAMILY_COLUMNS = list(FAMILY.columns)


@dataclass(frozen=True)
class Coefficients:
    """alpha (depth), beta (width), gamma (resolution), each >= 1."""

    alpha: float
    beta: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a number >= 1, got {value!r}")
            if value < 1:
                raise ValueError(f"{name}={value} is below 1: scaling multipliers must be >= 1")
            object.__setattr__(self, name, float(value))

    @property
    def product(self) -> float:
        return product_of(self.alpha, self.beta, self.gamma)

    @classmethod
    def from_mapping(cls, data: Any, where: str = "coefficients") -> Coefficients:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping with alpha, beta, gamma, got {type(data).__name__}")
        missing = [n for n in ("alpha", "beta", "gamma") if data.get(n) is None]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        try:
            coeffs = cls(data["alpha"], data["beta"], data["gamma"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        product = data.get("product")
        if product is not None:
            if isinstance(product, bool) or not isinstance(product, (int, float)) \
                    or not math.isclose(product, coeffs.product, rel_tol=1e-6):
                raise ValueError(f"{where}: product {product!r} does not match alpha·beta²·gamma² = "
                                 f"{coeffs.product:.6g}")
        return coeffs


def load_coefficients(path: str | Path) -> tuple[Coefficients, dict[str, Any]]:
    """Read and check a ``coefficients.yaml`` (as ``scale-search`` writes it)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "coefficients.yaml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"coefficients file {path} not found (use coefficients=paper for the published "
                         f"table)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read coefficients file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"coefficients file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    where = f"coefficients file {path}"
    coeffs = Coefficients.from_mapping(data, where)
    r0 = data.get("base_resolution")
    if r0 is not None and (isinstance(r0, bool) or not isinstance(r0, int) or r0 < 32):
        raise ValueError(f"{where}: base_resolution must be an integer >= 32, got {r0!r}")
    if data.get("base") is not None:
        try:
            ArchSpec.from_string(data["base"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: bad base architecture: {exc}") from None
    return coeffs, data


def dropout_at(phi: int, dropout: tuple[float, float] = (0.2, 0.5)) -> float:
    """Linear from ``dropout[0]`` at phi 0 to ``dropout[1]`` at phi 7, held beyond (4 decimals)."""
    low, high = dropout
    return round(low + (high - low) * min(phi, _DROPOUT_SPAN) / _DROPOUT_SPAN, 4)  # tidy arch strings


def _check_dropout(dropout: Any) -> tuple[float, float]:
    if isinstance(dropout, (str, bytes)) or not hasattr(dropout, "__len__") or len(dropout) != 2:
        raise ValueError(f"dropout must be [at B0, at B7], got {dropout!r}")
    for v in dropout:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise ValueError(f"dropout values must be numbers in [0, 1), got {list(dropout)!r}")
    return float(dropout[0]), float(dropout[1])


def _check_max_phi(max_phi: Any, paper: bool) -> int:
    if isinstance(max_phi, bool) or not isinstance(max_phi, int):
        raise ValueError(f"max_phi must be an integer >= 0, got {max_phi!r}")
    if max_phi < 0:
        raise ValueError(f"max_phi must be >= 0 (phi < 0 would shrink the base), got {max_phi}")
    if paper and max_phi >= len(_PAPER_ROWS):
        raise ValueError(f"coefficients=paper has B0..B{len(_PAPER_ROWS) - 1}: max_phi must be <= "
                         f"{len(_PAPER_ROWS) - 1}, got {max_phi}")
    return max_phi


def family_table(base: ArchSpec, coefficients: Coefficients | Mapping[str, Any] | str, max_phi: int = 7,
                 dropout: tuple[float, float] = (0.2, 0.5),
                 resolution: int | None = None) -> tuple[pd.DataFrame, dict[str, ArchSpec]]:
    """Members phi = 0..max_phi of the family of ``base`` at ``resolution`` (default: the base's).

    Returns the table (:data:`FAMILY_COLUMNS`) and ``{name: spec}`` with each spec's
    ``resolution`` and ``dropout`` set to the member's."""
    paper = isinstance(coefficients, str)
    if paper and coefficients != PAPER:
        raise ValueError(f"coefficients must be 'paper', a coefficients.yaml or alpha/beta/gamma, "
                         f"got {coefficients!r}")
    max_phi = _check_max_phi(max_phi, paper)
    dropout = _check_dropout(dropout)
    coeffs = None if paper else (coefficients if isinstance(coefficients, Coefficients)
                                 else Coefficients.from_mapping(coefficients))
    r0 = base.resolution if resolution is None else resolution
    if isinstance(r0, bool) or not isinstance(r0, int) or r0 < 32:
        raise ValueError(f"base resolution must be an integer >= 32, got {r0!r}")
    rows, specs = [], {}
    b0_flops = count_flops(base, r0)
    for phi in range(max_phi + 1):
        if coeffs is None:
            width, depth, paper_res, drop = _PAPER_ROWS[phi]
            res = paper_res if r0 == _PAPER_R0 else int(round(r0 * paper_res / _PAPER_R0))
        else:
            depth, width = coeffs.alpha ** phi, coeffs.beta ** phi
            res, drop = scale_resolution(r0, coeffs.gamma, phi), dropout_at(phi, dropout)
        spec = scaled_spec(base, width=width, depth=depth).replace(resolution=res, dropout=drop)
        name = f"b{phi}"
        flops = count_flops(spec, res)
        ratio = flops / b0_flops
        rows.append({
            "name": name, "phi": phi, "depth": depth, "width": width, "resolution": res, "dropout": drop,
            "params": count_params(spec), "flops": flops, "flops_ratio": ratio, "ideal_ratio": 2.0 ** phi,
            "ratio_vs_2phi": ratio / 2.0 ** phi,
            "formula_ratio": depth * width ** 2 * (res / r0) ** 2 if coeffs is None else coeffs.product ** phi,
            "arch": spec.to_string(),
        })
        specs[name] = spec
    return FAMILY.frame(rows), specs


def _count(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def format_family(df: pd.DataFrame) -> str:
    """The table as aligned text (what ``scale-family`` prints)."""
    headers = ["model", "depth", "width", "res", "dropout", "params", "FLOPs", "xB0", "x2^phi", "FLOPs/2^phi"]
    extra = "accuracy" in df.columns and df["accuracy"].notna().any()
    if extra:
        headers.append("accuracy")
    lines = []
    for r in df.itertuples(index=False):
        cells = [r.name, f"{r.depth:.3f}", f"{r.width:.3f}", str(r.resolution), f"{r.dropout:.3f}",
                 f"{r.params:,}", _count(r.flops), f"{r.flops_ratio:.2f}", f"{r.ideal_ratio:g}",
                 f"{r.ratio_vs_2phi:.2f}"]
        if extra:
            cells.append("-" if pd.isna(r.accuracy) else f"{r.accuracy:.4f}")
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:  # first column left-aligned, numbers right-aligned
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(c) for c in lines)])


@dataclass
class FamilyOutcome:
    folder: Path
    table: pd.DataFrame
    specs: dict[str, ArchSpec]
    coefficients: str  # "paper" or "alpha=... beta=... gamma=..."
    base_source: str
    files: list[Path]


def resolve_coefficients(value: Any) -> tuple[Coefficients | str, dict[str, Any], Path | None]:
    """``coefficients=`` as given -- ``paper`` (or null), a coefficients.yaml (its path or folder), or a
    mapping {alpha, beta, gamma} -- as (the coefficients or ``"paper"``, the file's record, the file's
    folder). A bad value is a one-line ValueError naming it."""
    if value is None or value == PAPER:
        return PAPER, {}, None
    if isinstance(value, Mapping):
        return Coefficients.from_mapping(value, "coefficients"), dict(value), None
    if isinstance(value, str):
        coeffs, data = load_coefficients(value)
        path = Path(value).expanduser()
        return coeffs, data, (path if path.is_dir() else path.parent)
    raise ValueError(f"coefficients must be 'paper', a coefficients.yaml path or {{alpha, beta, gamma}}, "
                     f"got {value!r}")


def run_family(cfg: ScaleFamilyConfig | Any) -> FamilyOutcome:
    """``scale-family`` from its config (see :class:`scaling_search.config.ScaleFamilyConfig`).
    Everything is checked and computed before the first file is written."""
    cfg = as_config("scale_family", cfg)
    coeffs, coeff_data, coeff_folder = resolve_coefficients(cfg.coefficients)
    paper = coeffs == PAPER
    max_phi = _check_max_phi(cfg.max_phi, paper)
    dropout = _check_dropout(cfg.dropout)
    upto = cfg.train.upto
    num_classes, in_channels = cfg.num_classes, cfg.in_channels
    from_coefficients = cfg.base is None and coeff_data.get("base") is not None
    source = resolve_arch(coeff_data["base"] if from_coefficients else (cfg.base or DEFAULT_ARCH), what="base")
    resolution = cfg.base_resolution
    if resolution is None:
        resolution = ((coeff_data.get("base_resolution") if from_coefficients else None)
                      or source.resolution or source.spec().resolution)

    data_cache, asked_by = None, "num_classes / in_channels"
    if upto is not None:  # the dataset decides the head unless num_classes/in_channels are given
        from effnas.task import DataCache  # torch: only when training

        data_cache = DataCache(cfg.dataset, cfg.proxy, cfg.train.seed)
        probe = data_cache.at(resolution)
        if num_classes is None and in_channels is None:
            asked_by = f"dataset {probe.name} (train.upto)"
        num_classes = num_classes or probe.num_classes
        in_channels = in_channels or probe.in_channels
    if num_classes is None and in_channels is None:
        base = source.spec()
    else:
        own = source.spec()
        base = source.spec_for(num_classes or own.num_classes, in_channels or own.in_channels, what=asked_by)
    table, specs = family_table(base, coeffs, max_phi, dropout, resolution)

    label = PAPER if paper else f"alpha={coeffs.alpha:g} beta={coeffs.beta:g} gamma={coeffs.gamma:g}"
    if cfg.study_name:
        folder = study_folder(cfg.results_dir, cfg.study_name, key="study_name")
    elif coeff_folder is not None:
        folder = coeff_folder.resolve()
    else:
        folder = study_folder(cfg.results_dir, "family-paper" if paper else "family-custom")

    checkpoints: list[Path] = []  # each member saves itself after every epoch: an interrupted run resumes
    if data_cache is not None:
        from effnas.protocol import checkpoint_path
        from effnas.study import handle_signals
        from effnas.train import train_and_evaluate

        train_cfg = cfg.proxy.train_config(cfg.train.seed)
        # handle_signals: Ctrl-C and SIGTERM stop it also where it started with SIGINT ignored (`cmd &`)
        try:
            with handle_signals():
                for i, (name, spec) in enumerate(specs.items()):
                    if i > upto:
                        break
                    data = data_cache.at(spec.resolution)
                    ckpt = checkpoint_path(folder / "checkpoints", name, spec, cfg.dataset, data, cfg.proxy,
                                           cfg.train.seed) if cfg.train.checkpoint else None
                    checkpoints += [ckpt] if ckpt is not None else []
                    result = train_and_evaluate(spec, data, train_cfg, checkpoint=ckpt,
                                                progress=lambda m, name=name: print(f"scale-family: {name}: {m}",
                                                                                    flush=True))
                    table.loc[i, "accuracy"], table.loc[i, "train_seconds"] = result.accuracy, result.train_seconds
                    print(f"scale-family: trained {name} ({spec.resolution} px): minival accuracy "
                          f"{result.accuracy:.4f} in {result.train_seconds:.1f}s", flush=True)
        except KeyboardInterrupt as exc:
            if any(c.exists() for c in checkpoints):
                exc.detail = (f"the finished members and epochs are saved in {folder / 'checkpoints'}; run the same "
                              f"command again to resume")
            raise

    files = list(write_table(table, folder, FAMILY.stem))
    coeff_record = ({"source": PAPER} if paper else
                    {"alpha": coeffs.alpha, "beta": coeffs.beta, "gamma": coeffs.gamma, "product": coeffs.product})
    for i, (name, spec) in enumerate(specs.items()):
        row = table.iloc[i]
        files.append(write_json({
            "name": name, "phi": int(row["phi"]), "arch": spec.to_string(), "spec": spec.to_dict(),
            "resolution": spec.resolution, "params": int(row["params"]), "flops": int(row["flops"]),
            "flops_ratio": float(row["flops_ratio"]), "depth": float(row["depth"]), "width": float(row["width"]),
            "dropout": spec.dropout, "coefficients": coeff_record, "base": base.to_string(),
            "base_resolution": int(table.iloc[0]["resolution"]),
            "accuracy": None if pd.isna(row["accuracy"]) else float(row["accuracy"]),
        }, folder / "family" / f"{name}.json"))
    for ckpt in checkpoints:  # their results are in the files now
        ckpt.unlink(missing_ok=True)
    return FamilyOutcome(folder, table, specs, label, source.describe(), files)
