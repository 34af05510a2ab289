"""effnas.rerank: the re-evaluations' seeds never replay a proxy seed, and the group's value rules."""

from __future__ import annotations

import pytest

from effnas.rerank import RerankConfig, rerank_seed
from effnas.schema import ConfigError


def test_a_re_evaluation_seed_is_never_a_proxy_seed_nor_another_re_evaluations():
    proxy = {seed + n for seed in range(3) for n in range(2000)}  # a proxy trial trains with search.seed + number
    again = [rerank_seed(seed, n, s) for seed in range(3) for n in range(2000) for s in range(3)]
    assert not proxy & set(again)
    assert len(set(rerank_seed(0, n, s) for n in range(2000) for s in range(3))) == 6000


@pytest.mark.parametrize("field, value", [("k", -1), ("seeds", 0), ("epochs", 0), ("train_size", 0)])
def test_bad_values_name_their_key(field, value):
    with pytest.raises(ConfigError, match=f"rerank.{field}"):
        RerankConfig(**{field: value}).check()
