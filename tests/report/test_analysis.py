"""report.analysis: the Pareto front, the summary and leaderboard, PED-ANOVA importance."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from effnas.io import write_table
from effnas.results import TRIALS
from report import leaderboard, load_results, param_importances, pareto_front, summarize
from report.analysis import accuracy_follows
from report.load import CHOICE_COLUMN

# ------------------------------------------------------------------------------ Pareto front


def test_pareto_front_known_answer() -> None:
    df = pd.DataFrame({
        "number":   [0,    1,    2,    3,    4,    5,    6,    7,    8,    9,    10],
        "state":    ["COMPLETE"] * 8 + ["PRUNED", "COMPLETE", "COMPLETE"],
        "accuracy": [0.70, 0.80, 0.80, 0.75, 0.90, 0.90, 0.90, 0.60, 0.99, None, 0.70],
        "flops":    [10,   20,   20,   20,   40,   40,   50,   5,    1,    1,    12],
    })
    front = pareto_front(df)
    # 7: cheapest; 0: more accurate; 1 and 2: an exact duplicate pair, both kept; 4 and 5: duplicates
    # 3: same FLOPs as 1/2 but less accurate -> dominated; 6: same accuracy as 4/5, more FLOPs -> dominated
    # 10: same accuracy as 0, more FLOPs -> dominated; 8 PRUNED and 9 without accuracy do not count
    assert front["number"].tolist() == [7, 0, 1, 2, 4, 5]
    assert front.index.tolist() == [7, 0, 1, 2, 4, 5]  # the original index, to match rows back
    assert front["flops"].is_monotonic_increasing


def test_pareto_front_matches_the_definition() -> None:
    """On random data with many ties: exactly the rows no other row dominates."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"accuracy": rng.integers(0, 12, 300) / 10, "flops": rng.integers(1, 15, 300)})
    up, down = df["accuracy"].to_numpy(), df["flops"].to_numpy()
    dominated = [bool(((up >= u) & (down <= d) & ((up > u) | (down < d))).any()) for u, d in zip(up, down)]
    assert sorted(pareto_front(df).index) == [i for i, dom in enumerate(dominated) if not dom]


def test_pareto_front_other_columns_and_errors() -> None:
    df = pd.DataFrame({"acc": [0.5, 0.6, 0.4], "params": [3, 3, 1]})  # no state column: all rows count
    assert pareto_front(df, maximize="acc", minimize="params").index.tolist() == [2, 1]
    assert pareto_front(df.iloc[0:0], maximize="acc", minimize="params").empty
    with pytest.raises(ValueError, match="no column 'accuracy'"):
        pareto_front(df)


# ----------------------------------------------------------------------- summary, leaderboard


def test_summary_leaderboard_and_importance_of_a_real_run(real_run: Path, best_of) -> None:
    df = load_results(real_run)
    best = best_of(real_run)
    s = summarize(df, best)
    assert s["trials"] == 4 and sum(s["states"].values()) == 4 and s["workers"] == 1
    assert s["best"]["trial"] == best["trial"] and s["best"]["reward"] == pytest.approx(best["reward"])
    assert s["best"]["arch"] == best["arch"] and s["target"] == best["T"]
    board = leaderboard(df, top=2)
    assert len(board) <= 2 and board.iloc[0]["number"] == best["trial"]
    imp, note = param_importances(real_run)
    complete = int((df["state"] == "COMPLETE").sum())
    if complete >= 3 and df.loc[df["state"] == "COMPLETE", "reward"].nunique() > 1:
        assert imp is not None, note
        assert imp.sum() == pytest.approx(1.0) and (imp >= 0).all()
        assert set(imp.index) <= {c for c in df.columns if CHOICE_COLUMN.match(c)}  # s3_kernel, activation
        assert "trials table" in note
    else:
        assert imp is None and note.startswith("skipped")


def test_importance_skipped_with_fewer_than_three_trials(real_run: Path) -> None:
    df = load_results(real_run)
    imp, note = param_importances(df.head(2))
    assert imp is None and "at least 3" in note


# ---------------------------------------------------------------------------------- importance


def _trials(n: int, seed: int, reward_of) -> pd.DataFrame:
    """A trials table of ``n`` trials over two stages' choices (``s<i>_expand`` only where the op
    is mbconv), about 1 in 10 not complete; ``reward_of(row) -> float``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = {"number": i, "state": "COMPLETE" if rng.random() > 0.1 else "PRUNED"}
        for s in (1, 2):
            op = str(rng.choice(["mbconv", "conv"]))
            row.update({f"s{s}_op": op, f"s{s}_expand": int(rng.choice([1, 3, 6])) if op == "mbconv" else None,
                        f"s{s}_kernel": int(rng.choice([3, 5])), f"s{s}_se": float(rng.choice([0.0, 0.25])),
                        f"s{s}_skip": str(rng.choice(["identity", "none"])),
                        f"s{s}_filters": int(rng.choice([16, 24, 32])), f"s{s}_layers": int(rng.choice([-1, 0, 1]))})
        row["reward"] = reward_of(row, rng) if row["state"] == "COMPLETE" else None
        rows.append(row)
    choices = [c for c in rows[0] if re.match(r"^s\d+_", c)]
    return TRIALS.frame(rows, choices)


def test_the_choice_that_decides_the_reward_ranks_first(tmp_path: Path) -> None:
    df = _trials(200, 0, lambda r, rng: 0.5 + 0.3 * (r["s2_kernel"] == 5) + rng.normal(0, 0.02))
    write_table(df, tmp_path, "trials")
    imp, note = param_importances(tmp_path)
    assert imp is not None, note
    assert imp.index[0] == "s2_kernel" and imp.iloc[0] > 2 * imp.iloc[1], imp.head()
    assert imp.sum() == pytest.approx(1.0) and (imp >= 0).all()
    assert imp.attrs["trials"] == int((df["state"] == "COMPLETE").sum()) and imp.attrs["source"] == "trials table"
    assert f"top {imp.attrs['top']} trials" in note


def test_a_conditional_choice_is_assessed_where_it_is_made(tmp_path: Path) -> None:
    """The reward depends on s1_expand among mbconv trials only: it ranks first, not s1_op."""
    df = _trials(300, 1, lambda r, rng: 0.5 + 0.3 * (r["s1_expand"] == 6) + rng.normal(0, 0.02))
    imp, note = param_importances(load_results(_write(df, tmp_path)))
    assert imp is not None and imp.index[0] == "s1_expand", imp.head()


def _write(df: pd.DataFrame, folder: Path) -> Path:
    write_table(df, folder, "trials")
    return folder


def _optuna_importances(df: pd.DataFrame, quantile: float) -> dict[str, float]:
    """Optuna's own PED-ANOVA evaluator on a study of the table's complete trials."""
    choices = [c for c in df.columns if re.match(r"^s\d+_", c)]
    dists = {c: optuna.distributions.CategoricalDistribution([v.item() if hasattr(v, "item") else v
                                                              for v in df[c].cat.categories]) for c in choices}
    done = df[(df["state"] == "COMPLETE") & df["reward"].notna()]
    trials = []
    for _, row in done.iterrows():
        params = {c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in choices if not pd.isna(row[c])}
        trials.append(optuna.trial.create_trial(params=params, distributions={c: dists[c] for c in params},
                                                value=float(row["reward"])))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile))


@pytest.mark.parametrize("n", [12, 150])
def test_importance_is_optunas_ped_anova(n: int, tmp_path: Path) -> None:
    """The same numbers as optuna.importance.PedAnovaImportanceEvaluator on the same trials,
    ties at the top-quantile cut-off and conditional choices included."""
    df = load_results(_write(_trials(n, 2, lambda r, rng: round(0.5 + 0.1 * (r["s1_op"] == "conv")
                                                                + 0.05 * (r["s2_filters"] == 32)
                                                                + rng.normal(0, 0.03), 2)), tmp_path))
    imp, note = param_importances(df)
    assert imp is not None, note
    ref = _optuna_importances(df, imp.attrs["quantile"])
    assert set(ref) == set(imp.index)
    for name, value in ref.items():
        assert imp[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_importance_skipped_when_nothing_to_explain(tmp_path: Path) -> None:
    df = _trials(20, 3, lambda r, rng: 0.5)
    imp, note = param_importances(df)
    assert imp is None and "same reward" in note
    no_choices = df[["number", "state", "reward"]].assign(reward=np.linspace(0, 1, len(df)))
    imp, note = param_importances(no_choices)
    assert imp is None and "no stage-choice columns" in note


# ------------------------------------------------------------------------- re-evaluations, copies


def _reranked_table() -> pd.DataFrame:
    """Four search trials, one copy of trial 1 (not trained) and the top-2 re-evaluated with two
    seeds each at a higher fidelity, where the proxy's runner-up (trial 2) wins on re-evaluation."""
    rows = [
        {"number": 0, "state": "COMPLETE", "reward": 0.70, "accuracy": 0.69, "flops": 3e6, "arch": "a"},
        {"number": 1, "state": "COMPLETE", "reward": 0.80, "accuracy": 0.79, "flops": 3e6, "arch": "b"},
        {"number": 2, "state": "COMPLETE", "reward": 0.78, "accuracy": 0.80, "flops": 4e6, "arch": "c"},
        {"number": 3, "state": "PRUNED", "reward": None, "accuracy": 0.5, "flops": 2e6, "arch": "d"},
        {"number": 4, "state": "COMPLETE", "reward": 0.80, "accuracy": 0.79, "flops": 3e6, "arch": "b",
         "duplicate_of": 1},
        {"number": 5, "state": "COMPLETE", "reward": 0.84, "accuracy": 0.83, "flops": 3e6, "arch": "b",
         "rerank_of": 1, "rerank_seed": 0},
        {"number": 6, "state": "COMPLETE", "reward": 0.86, "accuracy": 0.85, "flops": 3e6, "arch": "b",
         "rerank_of": 1, "rerank_seed": 1},
        {"number": 7, "state": "COMPLETE", "reward": 0.90, "accuracy": 0.91, "flops": 4e6, "arch": "c",
         "rerank_of": 2, "rerank_seed": 0},
        {"number": 8, "state": "COMPLETE", "reward": 0.88, "accuracy": 0.89, "flops": 4e6, "arch": "c",
         "rerank_of": 2, "rerank_seed": 1},
    ]
    return TRIALS.frame(rows, [])


def test_rankings_hold_search_trials_only() -> None:
    """Re-evaluations (another protocol) and copies of a twin are never ranked against the
    search's own scores: not in the leaderboard, the Pareto front, the best or the importance."""
    df = _reranked_table()
    assert leaderboard(df, top=10)["number"].tolist() == [1, 2, 0]
    assert set(pareto_front(df)["number"]) == {1, 2}
    s = summarize(df, {"trial": 2, "selected_by": "rerank"})
    assert s["best"]["trial"] == 1 and s["best"]["reward"] == pytest.approx(0.80)
    assert s["trials"] == 9 and s["reevaluations"] == 4 and s["duplicates"] == 1
    assert s["selected"] == {"trial": 2, "by": "rerank"}


def test_reevaluations_one_row_per_candidate_best_mean_first() -> None:
    from report.analysis import reevaluations

    again = reevaluations(_reranked_table())
    assert again["candidate"].tolist() == [2, 1] and again["seeds"].tolist() == [2, 2]
    assert again["reward_mean"].tolist() == pytest.approx([0.89, 0.85])
    assert again["reward_sd"].tolist() == pytest.approx([np.std([0.90, 0.88], ddof=1), np.std([0.84, 0.86], ddof=1)])
    assert again["proxy_reward"].tolist() == pytest.approx([0.78, 0.80])
    assert again["accuracy_mean"].tolist() == pytest.approx([0.90, 0.84])
    assert reevaluations(TRIALS.frame([{"number": 0, "state": "COMPLETE", "reward": 0.7}], [])).empty


def test_report_shows_the_reevaluation_and_the_selected_trial(tmp_path: Path) -> None:
    import json

    from report import make_report

    write_table(_reranked_table(), tmp_path, "trials")
    (tmp_path / "best.json").write_text(json.dumps({"trial": 2, "selected_by": "rerank", "T": 8.33e6,
                                                    "metric": "flops", "w": -0.07}))
    rep = make_report(tmp_path, tmp_path / "out", plots=False, write=False)
    assert "of them 4 top-k re-evaluations, 1 repeated architectures" in rep.text
    assert "selected (best.json): trial 2, by rerank" in rep.text
    section = rep.text.split("Top-k re-evaluation")[1].split("Leaderboard")[0]
    rows = [line.split() for line in section.splitlines() if line.strip()[:1].isdigit()]
    assert [r[1] for r in rows] == ["2", "1"] and rows[0][4] == "0.8900" and rows[1][4] == "0.8500"


# ------------------------------------------------------------------------------ what accuracy follows


def test_accuracy_follows_ranks_accuracy_against_size_and_plain_layers() -> None:
    df = pd.DataFrame({
        "number": range(8),
        "state": ["COMPLETE"] * 7 + ["PRUNED"],
        "accuracy": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.99],
        "flops": [1, 3, 2, 5, 4, 7, 6, 1],             # mostly rising while accuracy falls
        "params": [5, 5, 5, 5, 5, 5, 5, 1],           # constant over the complete trials: left out
        "plain_layers": [0, 1, 2, 3, 4, 5, 6, 0],     # every extra plain layer costs accuracy
        "duplicate_of": [None] * 8,
    })
    out = accuracy_follows(df)
    assert out.attrs["trials"] == 7 and list(out.index) == ["FLOPs", "layers without a shortcut"]
    assert out["layers without a shortcut"] == pytest.approx(-1.0)
    assert out["FLOPs"] == pytest.approx(-(1 - 6 * 6 / (7 * 48)))  # Spearman: two swapped pairs, d^2 = 6
    # a repeated architecture's copied result is not a measurement; too few trials: nothing to say
    dup = df.assign(duplicate_of=[None] * 6 + [0, None])
    assert accuracy_follows(dup).attrs["trials"] == 6
    assert accuracy_follows(df.head(4)) is None
    assert accuracy_follows(df.drop(columns=["flops", "plain_layers"])) is None
