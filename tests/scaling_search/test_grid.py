"""The constrained grid: exact membership (by hand and by exact decimal arithmetic), the
rounding-aware mode, FLOPs-matched single-dimension networks, and one-line validation errors."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import pytest

from scaling_search.grid import (GridSpec, constrained_grid, grid_values, match_flops, measure_point,
                                 product_of)
from search_space import count_flops, count_params, reference_spec, scale_spec


def keys(points):
    return {(p.alpha, p.beta, p.gamma) for p in points}


def test_small_grid_checked_by_hand():
    # alpha in {1.0, 1.1, 1.2}, beta in {1.0, 1.1}, gamma in {1.0, 1.1, 1.2}: 18 candidates.
    # By hand, alpha·beta²·gamma² of the beta = 1.1 half (beta = 1.0 never exceeds 1.728):
    #   alpha 1.0: 1.21, 1.4641, 1.7424   alpha 1.1: 1.331, 1.61051, 1.91664
    #   alpha 1.2: 1.452, 1.75692, 2.09088
    grid = GridSpec(alpha=(1.0, 1.2), beta=(1.0, 1.1), gamma=(1.0, 1.2), step=0.1, tol=0.1)
    assert grid.candidates() == 18
    assert keys(constrained_grid(grid)) == {(1.1, 1.1, 1.2), (1.2, 1.1, 1.2)}  # 1.91664, 2.09088
    wider = GridSpec(alpha=(1.0, 1.2), beta=(1.0, 1.1), gamma=(1.0, 1.2), step=0.1, tol=0.25)
    points = constrained_grid(wider)
    assert keys(points) == {(1.1, 1.1, 1.2), (1.2, 1.1, 1.1), (1.2, 1.1, 1.2)}  # + 1.75692; 1.7424 is out
    assert [round(p.product, 10) for p in points] == [1.91664, 1.75692, 2.09088]
    assert all(p.flops_ratio is None for p in points)  # no base given: nothing measured


def test_default_grid_is_exactly_the_points_inside_the_constraint():
    grid = GridSpec()  # alpha [1, 1.5], beta [1, 1.3], gamma [1, 1.3], step 0.05, tol 0.1
    assert grid.values("gamma") == [1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3]  # exact, no float drift
    assert grid.values("alpha")[-1] == 1.5 and len(grid.values("alpha")) == 11
    step = Decimal("0.05")
    axis = lambda lo, n: [Decimal(lo) + i * step for i in range(n)]  # noqa: E731
    expected = {(float(a), float(b), float(g))
                for a, b, g in itertools.product(axis("1", 11), axis("1", 7), axis("1", 7))
                if abs(a * b * b * g * g - 2) <= Decimal("0.1")}
    got = constrained_grid(grid)
    assert keys(got) == expected
    assert len(got) == len(expected) == 73
    assert (1.2, 1.1, 1.15) in keys(got)  # the paper's answer (product 1.92027)
    assert all(abs(p.product - 2) <= 0.1 + 1e-9 for p in got)


def test_values_include_the_high_bound_and_never_exceed_it():
    assert grid_values(1.0, 1.12, 0.05) == [1.0, 1.05, 1.1]
    assert grid_values(1.0, 1.3, 0.1) == [1.0, 1.1, 1.2, 1.3]
    assert grid_values(1.15, 1.15, 0.05) == [1.15]
    assert grid_values(1.0, 2.0, 0.01)[-1] == 2.0 and len(grid_values(1.0, 2.0, 0.01)) == 101


def test_measured_ratio_of_paper_point_on_b0_is_about_2_5():
    """REFERENCE: B0 at phi = 1 straight from the formula costs about 2.5x, not 2x (ceil(1.2) = 2)."""
    b0 = reference_spec("efficientnet-b0")
    point, spec = measure_point(b0, 224, 1.2, 1.1, 1.15)
    assert spec == scale_spec(b0, width=1.1, depth=1.2).replace(resolution=258)
    assert point.resolution == round(224 * 1.15) == 258
    assert point.flops == count_flops(spec, 258) and point.params == count_params(spec)
    assert point.flops_ratio == pytest.approx(count_flops(spec, 258) / count_flops(b0, 224))
    assert 2.4 < point.flops_ratio < 2.7
    assert point.product == pytest.approx(1.92027)


def test_rounding_aware_mode_keeps_points_by_measured_ratio():
    b0 = reference_spec("efficientnet-b0")
    base_flops = count_flops(b0, 224)
    grid = GridSpec(mode="measured_flops", tol=0.1)
    got = constrained_grid(grid, b0, 224)
    expected = set()
    for a, b, g in itertools.product(*(grid.values(n) for n in ("alpha", "beta", "gamma"))):
        spec = b0 if (a, b) == (1.0, 1.0) else scale_spec(b0, width=b, depth=a)
        ratio = count_flops(spec, int(round(224 * g))) / base_flops
        if abs(ratio - 2) <= 0.1:
            expected.add((a, b, g))
    assert keys(got) == expected and expected
    assert all(abs(p.flops_ratio - 2) <= 0.1 for p in got)
    assert (1.2, 1.1, 1.15) not in expected  # 2.57x measured: the formula's point is out
    product_mode = keys(constrained_grid(GridSpec(tol=0.1), b0, 224))
    assert product_mode != expected  # rounding moves the grid
    # the product-mode points carry the measured figure too
    assert all(p.flops_ratio is not None and p.resolution for p in constrained_grid(GridSpec(), b0, 224))


def test_identity_point_keeps_the_base_untouched():
    base = reference_spec("efficientnet-b0", 10, 1).replace(resolution=32)
    odd = scale_spec(base, width=0.75)  # widths like 24 * 0.75 = 18 -> rounded, 12 for the stem...
    point, spec = measure_point(odd, 32, 1.0, 1.0, 1.0)
    assert spec == odd and point.flops_ratio == 1.0


@pytest.mark.parametrize("kind", ["depth", "width", "resolution"])
def test_match_flops_picks_the_closest_single_dimension_network(kind):
    b0 = reference_spec("efficientnet-b0")
    compound, _ = measure_point(b0, 224, 1.2, 1.1, 1.15)
    single, spec = match_flops(b0, 224, kind, compound.flops)
    assert single.kind == kind
    others = {"depth": (single.beta, single.gamma), "width": (single.alpha, single.gamma),
              "resolution": (single.alpha, single.beta)}[kind]
    assert others == (1.0, 1.0)
    assert single.flops == count_flops(spec, single.resolution)
    # no neighbouring multiplier is closer (FLOPs are a step function of it)
    distance = abs(single.flops - compound.flops)
    if kind == "resolution":
        neighbours = [measure_point(b0, 224, 1, 1, (single.resolution + d) / 224)[0] for d in (-1, 1)]
    else:
        m = single.alpha if kind == "depth" else single.beta
        args = [(round(m + d, 2), 1.0, 1.0) if kind == "depth" else (1.0, round(m + d, 2), 1.0)
                for d in (-0.01, 0.01)]
        neighbours = [measure_point(b0, 224, *a)[0] for a in args]
    assert all(abs(n.flops - compound.flops) >= distance for n in neighbours)
    assert abs(single.flops_ratio - compound.flops_ratio) / compound.flops_ratio < 0.1


@pytest.mark.parametrize("kwargs,needle", [
    ({"alpha": (0.9, 1.2)}, "grid.alpha=[0.9, 1.2] is below 1"),
    ({"gamma": (1.0, 0.95)}, "below 1"),
    ({"beta": (1.3, 1.1)}, "low must be <= high"),
    ({"beta": 1.1}, "grid.beta must be [low, high]"),
    ({"beta": (1.0, 1.1, 1.2)}, "two numbers"),
    ({"step": 0}, "grid.step must be > 0"),
    ({"step": -0.05}, "grid.step must be > 0"),
    ({"tol": 0}, "grid.tol must be > 0"),
    ({"tol": -1}, "grid.tol must be > 0"),
    ({"mode": "flops"}, "grid.mode must be one of product, measured_flops"),
    ({"step": 1e-5}, "use a larger grid.step"),
    ({"alpha": ("a", 1.2)}, "grid.alpha must be a finite number"),
])
def test_bad_grid_settings_are_one_line_value_errors(kwargs, needle):
    with pytest.raises(ValueError) as info:
        GridSpec(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_unknown_grid_key_is_named():
    with pytest.raises(ValueError, match=r"unknown grid option\(s\) \['size'\]"):
        GridSpec.from_config({"size": 3})


def test_empty_grid_says_which_bound_to_widen():
    too_low = GridSpec(alpha=(1.0, 1.1), beta=(1.0, 1.05), gamma=(1.0, 1.05))
    with pytest.raises(ValueError) as info:
        constrained_grid(too_low)
    msg = str(info.value)
    assert msg.startswith("empty grid") and "\n" not in msg
    assert "reachable: 1.000 to 1.337" in msg
    assert "raise the high of grid.alpha, grid.beta or grid.gamma" in msg
    # the suggested alpha high does reach the window with the other highs
    suggested = float(msg.split("grid.alpha=[1,")[1].split("]")[0])
    assert product_of(suggested, 1.05, 1.05) >= 1.9
    assert constrained_grid(GridSpec(alpha=(1.0, suggested), beta=(1.0, 1.05), gamma=(1.0, 1.05)))

    too_high = GridSpec(alpha=(1.9, 2.0), beta=(1.5, 1.5), gamma=(1.2, 1.3))
    with pytest.raises(ValueError, match="lower the low of grid.alpha"):
        constrained_grid(too_high)
    too_coarse = GridSpec(step=0.1, tol=0.001)
    with pytest.raises(ValueError, match=r"raise grid.tol \(now 0.001\) or use a smaller grid.step"):
        constrained_grid(too_coarse)
    assert constrained_grid(too_coarse, allow_empty=True) == []


def test_measured_mode_needs_a_base_and_reports_measured_range():
    with pytest.raises(ValueError, match="needs a base"):
        constrained_grid(GridSpec(mode="measured_flops"))
    b0 = reference_spec("efficientnet-b0")
    tiny = GridSpec(mode="measured_flops", alpha=(1.0, 1.0), beta=(1.0, 1.05), gamma=(1.0, 1.0), step=0.05)
    with pytest.raises(ValueError, match="measured FLOPs ratio in \\[1.9, 2.1\\] \\(reachable: 1.000 to"):
        constrained_grid(tiny, b0, 224)
    assert math.isclose(measure_point(b0, 224, 1, 1, 1)[0].flops_ratio, 1.0)
