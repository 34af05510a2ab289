"""The weight-sharing evaluator (``evaluator=supernet``): one supernet over the search space, trained
once per dataset and protocol with the sandwich rule and cached on disk; a trial scores its
network with inherited weights after re-estimating BN.

* :mod:`.config` -- the ``evaluator`` config group (``proxy``, ``supernet``);
* :mod:`.model` -- :class:`SuperNet`: which choices share weights, subnet extraction;
* :mod:`.train` -- sandwich-rule training with in-place distillation, resumable per epoch;
* :mod:`.cache` -- the on-disk cache, its key and the lock for concurrent first use;
* :mod:`.evaluate` -- :class:`SupernetEvaluator`: BN re-estimation and minival accuracy per candidate.

The torch-side names are imported on first use, so that importing the config schema stays cheap."""

from __future__ import annotations

from typing import Any

from .config import EVALUATORS, EvaluatorConfig, ProxyEvaluatorConfig, SupernetConfig

__all__ = ["EVALUATORS", "EvaluatorConfig", "ProxyEvaluatorConfig", "SupernetConfig", "SuperNet",
           "SupernetEvaluator", "supernet_evaluator", "load_or_train"]

_LAZY = {"SuperNet": ".model", "SupernetEvaluator": ".evaluate", "supernet_evaluator": ".evaluate",
         "load_or_train": ".cache"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
