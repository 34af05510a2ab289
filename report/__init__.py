"""``nas-report``: read any results folder, print and plot what a reader needs, write ``report.md``.

Results folders hold one table each stage writes (Parquet + CSV of the same frame), with the
schema of :data:`effnas.results.TABLES`:

* ``trials``  -- ``nas-search``: one row per trial, :data:`effnas.results.TRIALS` then one column
  per stage choice ``s<i>_<what>``; ``best.json`` and ``config.yaml`` beside it;
* ``grid``    -- ``scale-search``: one row per (alpha, beta, gamma) point; ``coefficients.yaml``;
* ``family``  -- ``scale-family``: one row per model B0..Bn.

Modules: :mod:`report.load` (finding and typing the tables), :mod:`report.analysis` (Pareto
front, leaderboard, summary, PED-ANOVA importance), :mod:`report.plots` (matplotlib, Agg),
:mod:`report.markdown` (the document: :func:`make_report`, :func:`compare`), :mod:`report.cli`
(``main``). FLOPs are multiply-adds (the paper's convention), shown as MFLOPs or GFLOPs. Nothing
here imports torch or the search stages.
"""

from .analysis import leaderboard, pareto_front, param_importances, summarize
from .cli import main
from .load import ReportError, find_results, load_results
from .markdown import Report, compare, make_report

__all__ = ["load_results", "find_results", "pareto_front", "leaderboard", "summarize", "param_importances",
           "make_report", "compare", "Report", "ReportError", "main"]
