"""Root schemas of stage 2's commands: ``scale-search`` and ``scale-family`` (``conf/scale_search.yaml``,
``conf/scale_family.yaml`` are their defaults lists)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Optional

from omegaconf import MISSING

from effnas.config import register_groups, register_root
from effnas.schema import ConfigError, Schema, rule

from .grid import MODES, GridSpec

__all__ = ["GridConfig", "ScaleSettings", "ScaleSearchConfig", "FamilyTrain", "ScaleFamilyConfig"]


@dataclass
class GridConfig(Schema):
    """The constrained grid ``{(alpha, beta, gamma): |figure - target| <= tol}`` (rules: :class:`GridSpec`)."""

    _key: ClassVar[str] = "grid"

    alpha: List[float] = field(default_factory=lambda: [1.0, 1.5])  # [low, high], all >= 1
    beta: List[float] = field(default_factory=lambda: [1.0, 1.3])
    gamma: List[float] = field(default_factory=lambda: [1.0, 1.3])
    step: float = 0.05
    tol: float = 0.1        # keep |figure - target| <= tol
    target: float = 2.0     # the paper's alpha·beta²·gamma² ≈ 2
    mode: str = rule("measured_flops", choices=MODES)  # measured_flops: the real (rounded) FLOPs ratio to
                                                       # the base | product: alpha·beta²·gamma² (the paper's)

    def validate(self) -> None:
        self.spec()

    def spec(self) -> GridSpec:
        try:
            return GridSpec(tuple(self.alpha), tuple(self.beta), tuple(self.gamma), self.step, self.tol,
                            self.mode, self.target)
        except ValueError as exc:
            message = str(exc)
            key = message.split(" ", 1)[0].split("=", 1)[0] if message.startswith("grid.") else "grid"
            raise ConfigError(key, message) from None


@dataclass
class ScaleSettings(Schema):
    _key: ClassVar[str] = "search"

    study_name: str = "scale-${dataset.name}"
    seed: int = rule(0, ge=0)                   # one training seed for every point
    timeout: Optional[float] = rule(None, gt=0)  # seconds per worker, null = no limit

    def validate(self) -> None:
        from effnas.runs import check_study_name

        check_study_name(self.study_name)


@dataclass
class ScaleSearchConfig(Schema):
    results_dir: str = "results"
    worker: int = rule(0, ge=0)    # worker index (-m worker=range(N) starts N workers on one grid)
    workers: int = rule(1, ge=1)   # how many workers share the study (only used for the SQLite warning)
    base: str = "efficientnet-b0"  # reference name, architecture string, best.json (or its results folder)
    base_resolution: Optional[int] = rule(None, ge=32)  # null: best.json's (else proxy.resolution), at least
    min_base_resolution: int = rule(48, ge=32)          # ... this: gamma steps are expressible (data upsampled)
    # One point instead of the grid (-m alpha=1.1,1.2 beta=... gamma=...): all three or none.
    alpha: Optional[float] = rule(None, ge=1)  # depth multiplier
    beta: Optional[float] = rule(None, ge=1)   # width multiplier
    gamma: Optional[float] = rule(None, ge=1)  # resolution multiplier
    baselines: bool = False        # also depth-, width- and resolution-only at the best point's FLOPs
    grid: GridConfig = field(default_factory=GridConfig)
    search: ScaleSettings = field(default_factory=ScaleSettings)
    dataset: Any = MISSING
    proxy: Any = MISSING
    storage: Any = MISSING
    rerank: Any = MISSING          # the top k distinct networks re-trained at a higher fidelity (effnas.rerank)

    def validate(self) -> None:
        given = {n: getattr(self, n) for n in ("alpha", "beta", "gamma")}
        missing = [n for n, v in given.items() if v is None]
        if 0 < len(missing) < 3:
            set_ = ", ".join(f"{n}={v}" for n, v in given.items() if v is not None)
            raise ConfigError(missing[0], f"a single point needs alpha, beta and gamma; got {set_} without "
                                          f"{', '.join(missing)} (or set none of them to search the grid)")
        from search_space import resolve_arch

        resolve_arch(self.base, what="base")


@dataclass
class FamilyTrain(Schema):
    _key: ClassVar[str] = "train"

    upto: Optional[int] = rule(None, ge=0)  # null: no training; K: train b0..bK with the proxy protocol
    seed: int = rule(0, ge=0)
    checkpoint: bool = True                 # save each training after every epoch; the same command resumes


@dataclass
class ScaleFamilyConfig(Schema):
    results_dir: str = "results"
    study_name: Optional[str] = None  # output folder <results_dir>/<study_name>; null: the coefficients
                                      # file's folder, else family-paper / family-custom
    base: Optional[str] = None        # null: the coefficients file's base, else efficientnet-b0
    num_classes: Optional[int] = rule(None, ge=1)  # reference names: 1000 unless set; with train.upto the dataset's
    in_channels: Optional[int] = rule(None, ge=1)  # reference names: 3 unless set
    base_resolution: Optional[int] = rule(None, ge=32)  # null: the coefficients file's / best.json's / base's own
    coefficients: Any = "paper"       # paper | path/to/coefficients.yaml | {alpha: 1.2, beta: 1.1, gamma: 1.15}
    max_phi: int = rule(7, ge=0)      # members phi = 0..max_phi (paper: at most 7)
    dropout: List[float] = rule(default_factory=lambda: [0.2, 0.5], ge=0, lt=1)  # at phi 0 and 7, linear between
    train: FamilyTrain = field(default_factory=FamilyTrain)
    dataset: Any = MISSING
    proxy: Any = MISSING

    def validate(self) -> None:
        if len(self.dropout) != 2:
            raise self.fail("dropout", f"must be [at B0, at B7], got {list(self.dropout)!r}")
        if self.train.upto is not None and self.train.upto > self.max_phi:
            raise ConfigError("train.upto", f"train.upto={self.train.upto} is beyond max_phi={self.max_phi}")
        from effnas.runs import check_study_name
        from search_space import resolve_arch

        from .family import resolve_coefficients

        if self.study_name is not None:
            check_study_name(self.study_name, "study_name")
        if self.base is not None:
            resolve_arch(self.base, what="base")
        coefficients = self.coefficients
        if hasattr(coefficients, "items"):
            coefficients = dict(coefficients)
        resolve_coefficients(coefficients)


register_groups()
register_root("scale_search", ScaleSearchConfig)
register_root("scale_family", ScaleFamilyConfig)
