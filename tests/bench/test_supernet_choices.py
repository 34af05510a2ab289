"""bench/supernet_choices.py: its variants are the nested space plus one non-nested choice each,
and a bad ``--variants`` is a one-line usage error (``--smoke`` runs the bench at toy sizes)."""

from __future__ import annotations

import pytest

from search_space import ConvType, SearchSpace, default_space


@pytest.fixture
def bench(import_bench):
    return import_bench("supernet_choices")


def _choices(options: dict) -> set:
    space = SearchSpace.from_config(options, num_classes=10, in_channels=1, resolution=32) if options else \
        default_space(10, 1, 32)
    out = set()
    for stage in space.stages:
        out |= {("op", t) for _, t, _ in stage.variants()} | {("skip", s) for s in stage.skips}
        out |= {("expand", e) for e in stage.expand_ratios}
    return out


def test_each_variant_adds_one_non_nested_choice_to_the_nested_space(bench):
    nested = _choices(bench.VARIANTS["nested"])
    assert nested == {("op", ConvType.MBCONV), ("skip", "identity"), ("expand", 3), ("expand", 6)}
    assert _choices(bench.VARIANTS["expand1"]) - nested == {("expand", 1), ("op", ConvType.DS)}
    assert _choices(bench.VARIANTS["conv"]) - nested == {("op", ConvType.CONV)}
    assert _choices(bench.VARIANTS["noskip"]) - nested == {("skip", "none")}
    assert _choices(bench.VARIANTS["full"]) == _choices({})  # the default space
    for name in ("expand1", "conv", "noskip"):
        assert nested <= _choices(bench.VARIANTS[name])


@pytest.mark.parametrize("value", ["nested,bogus", ",", "full;nested"])
def test_unknown_variants_are_a_usage_error(bench, usage_error, value, tmp_path):
    err = usage_error(bench, ["supernet_choices.py", "--results", str(tmp_path), "--variants", value])
    assert f"--variants {value!r}: expected a comma-separated list of nested, expand1, conv, noskip, full" in err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("args, words", [
    (["--stage-distill", "-1"], "evaluator.stage_distill must be a number >= 0, got -1.0"),
    (["--progressive", "2"], "evaluator.progressive must be a number >= 0 and <= 1, got 2.0"),
    (["--random-subnets", "-1"], "evaluator.random_subnets must be an integer >= 0, got -1"),
])
def test_a_bad_supernet_setting_is_one_line_before_anything_is_written(bench, usage_error, tmp_path, args, words):
    out = tmp_path / "results"
    assert words in usage_error(bench, ["supernet_choices.py", "--results", str(out), *args])
    assert not out.exists()
