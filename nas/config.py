"""Root schemas of stage 1's commands: ``nas-search`` and ``nas-train`` (``conf/nas_search.yaml``,
``conf/nas_train.yaml`` are their defaults lists)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Optional

from omegaconf import MISSING

from effnas.config import register_groups, register_root
from effnas.rerank import RerankConfig  # noqa: F401 -- re-exported: the rerank group's schema lived here
from effnas.schema import Schema, rule

__all__ = ["SearchSettings", "RerankConfig", "NasSearchConfig", "NasTrainConfig"]


@dataclass
class SearchSettings(Schema):
    _key: ClassVar[str] = "search"

    study_name: str = "nas-${dataset.name}"  # the study and its folder <results_dir>/<study_name>
    n_trials: int = rule(40, ge=1)           # global budget over all workers (COMPLETE + PRUNED trials)
    timeout: Optional[float] = rule(None, gt=0)  # seconds per worker, null = no limit
    seed: int = rule(0, ge=0)
    warm_start: List[str] = field(default_factory=lambda: ["efficientnet-b0", "mnasnet-a1"])  # enqueued first
    multi_objective: bool = False            # true: (accuracy, FLOPs) Pareto front, e.g. with sampler=nsgaii

    def validate(self) -> None:
        from effnas.runs import check_study_name
        from search_space import resolve_arch

        check_study_name(self.study_name)
        for name in self.warm_start:
            resolve_arch(name, what="search.warm_start")


@dataclass
class NasSearchConfig(Schema):
    results_dir: str = "results"   # relative paths are taken from the directory you launch in
    worker: int = rule(0, ge=0)    # worker index: seeds each worker's sampler differently (-m worker=range(N))
    workers: int = rule(1, ge=1)   # how many workers share the study (only used for the SQLite warning)
    search: SearchSettings = field(default_factory=SearchSettings)
    dataset: Any = MISSING
    proxy: Any = MISSING
    space: Any = MISSING
    sampler: Any = MISSING
    pruner: Any = MISSING
    storage: Any = MISSING
    objective: Any = MISSING
    rerank: Any = MISSING
    evaluator: Any = MISSING


@dataclass
class NasTrainConfig(Schema):
    arch: str = "efficientnet-b0"  # a best.json or results folder, an architecture string, or a reference name
    name: Optional[str] = None     # output folder name (default: the study or reference name)
    results_dir: str = "results"   # outputs go to <best.json folder>/train/ or <results_dir>/train/
    seed: int = rule(0, ge=0)
    resolution: Optional[int] = rule(None, ge=32)  # null: best.json's / the string's res=, else proxy.resolution
    checkpoint: bool = True        # save after every epoch; the same command resumes an interrupted run
    dataset: Any = MISSING
    proxy: Any = MISSING

    def validate(self) -> None:
        from search_space import resolve_arch

        resolve_arch(self.arch, what="arch")


register_groups()
register_root("nas_search", NasSearchConfig)
register_root("nas_train", NasTrainConfig)
