"""Rewards: MnasNet's piecewise exponent, presets, T auto, cost metrics."""

from __future__ import annotations

import math

import pytest

import nas.config  # noqa: F401 -- registers the nas_search root
from effnas.config import load
from effnas.objective import ObjectiveConfig, Reward, auto_target, cost_of, measure_latency_ms
from search_space import count_flops, count_params, reference_spec


def test_soft_reward_is_the_paper_formula():
    r = Reward(target=400e6)
    assert r(0.8, 400e6) == pytest.approx(0.8)
    assert r(0.8, 800e6) == pytest.approx(0.8 * 2 ** -0.07)
    assert r(0.8, 200e6) == pytest.approx(0.8 * 0.5 ** -0.07)
    # doubling FLOPs must buy ~5% relative accuracy to break even (the paper's reading of w)
    assert 0.8 * 1.05 * 2 ** -0.07 > r(0.8, 400e6) > 0.8 * 1.04 * 2 ** -0.07


def test_hard_reward_ignores_cost_below_target_and_punishes_above():
    r = load("nas_search", ["objective=hard"]).objective.reward(100.0)  # the `hard` option
    assert (r.alpha, r.beta) == (0.0, -1.0)
    assert r(0.9, 10.0) == pytest.approx(0.9) == r(0.9, 100.0)
    assert r(0.9, 200.0) == pytest.approx(0.45)


def test_w_sets_both_sides_unless_alpha_or_beta_are_given():
    assert ObjectiveConfig(w=-0.15).reward(1.0).alpha == -0.15
    assert ObjectiveConfig(w=-0.2).reward(1.0).beta == -0.2
    assert (ObjectiveConfig(w=-0.2, beta=-1.0).reward(1.0).alpha, ObjectiveConfig(beta=-1.0).reward(1.0).beta) == \
        (-0.2, -1.0)
    for bad in (0.0, 0.07, math.nan):
        with pytest.raises(ValueError, match="objective.w"):
            ObjectiveConfig(w=bad)


@pytest.mark.parametrize("kwargs, needle", [
    ({"target": 0}, "objective.target"), ({"target": -1.0}, "objective.target"),
    ({"target": math.nan}, "objective.target"), ({"target": 1.0, "alpha": 0.5}, "objective.alpha"),
    ({"target": 1.0, "metric": "energy"}, "objective.metric"),
])
def test_invalid_rewards(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Reward(**kwargs)


def test_auto_target_is_b0_at_the_task_shape():
    b0 = reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    assert auto_target("flops", 10, 1, 32) == count_flops(b0, 32)
    assert auto_target("params", 10, 1, 32) == count_params(b0)
    assert auto_target("flops", 1000, 3, 224) == 385_814_752  # the paper's ~0.39B


def test_latency_is_measured_and_positive():
    spec = reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    ms = measure_latency_ms(spec, 32, repeats=3, warmup=1, threads=1)
    assert 0 < ms < 10_000
    assert cost_of(spec, "latency", 32, repeats=2, warmup=0) > 0
