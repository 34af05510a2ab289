"""The check of a ready supernet's random subnets against chance: a supernet that serves only the
subnets its sandwich trains by name cannot rank a space (bench/supernet_choices.py measures where
that happens)."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from effnas.supernet.evaluate import SupernetEvaluator, supernet_evaluator
from effnas.supernet.model import SuperNet


def _scorer(toy) -> SupernetEvaluator:
    return SupernetEvaluator(SuperNet(toy["SPACE"]), toy["toy_data"](), toy["SUPERNET"], toy["PROXY"], 0)


@pytest.mark.parametrize("accs, ok", [
    ([0.1] * 8, False),                                     # chance
    ([0.05, 0.1, 0.1, 0.15, 0.18, 0.9, 0.9, 0.9], False),  # median 0.165: below chance + 0.09
    ([0.1, 0.1, 0.1, 0.2, 0.2, 0.9, 0.9, 0.9], True),      # median 0.2
    ([0.7] * 8, True),
])
def test_check_compares_the_random_subnets_median_with_chance(toy, accs, ok):
    scorer = _scorer(toy)
    seen, values = [], iter(accs)

    def accuracy(spec):
        seen.append(spec.network_key())
        return next(values)

    scorer.accuracy = accuracy
    health = scorer.check(8, seed=3)
    assert health["ok"] is ok and health["chance"] == pytest.approx(0.1)
    assert health["median"] == pytest.approx(sorted(accs)[3] / 2 + sorted(accs)[4] / 2)
    assert (health["min"], health["max"], health["subnets"]) == (min(accs), max(accs), 8)
    # random subnets of the space, drawn from the seed: the same seed scores the same networks
    again = []
    scorer.accuracy = lambda spec: again.append(spec.network_key()) or 0.5
    scorer.check(8, seed=3)
    assert again == seen and len(set(seen)) > 1
    scorer.check(8, seed=4)
    assert again[8:] != seen


@pytest.mark.parametrize("acc, warned", [(0.1, True), (0.9, False)])
def test_a_supernet_at_chance_is_a_warning_naming_the_way_out(toy, tmp_path, caplog, monkeypatch, acc, warned):
    monkeypatch.setattr(SupernetEvaluator, "accuracy", lambda self, spec: acc)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="effnas"):
        scorer = supernet_evaluator(toy["SUPERNET"], {"name": "toy", "root": None}, toy["PROXY"], toy["SPACE"],
                                    toy["toy_data"](), 0, tmp_path)
    assert scorer.health["ok"] is not warned and math.isclose(scorer.health["median"], acc)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warned:
        assert len(warnings) == 1 and "near chance: median 0.100 over 8 random subnets" in warnings[0]
        assert "evaluator=proxy" in warnings[0] and "Which choices a supernet can serve" in warnings[0]
    else:
        assert not warnings
        assert any("supernet: median 0.900 over 8 random subnets" in r.getMessage() for r in caplog.records)


def test_evaluator_seed_trains_another_supernet_on_the_same_split(toy, tmp_path, monkeypatch):
    """``evaluator.seed`` keys and trains another supernet (its initial weights, data order and
    subnets); the split stays the study's; unset, the study's seed trains it and the protocol of
    studies made before the setting is unchanged."""
    import dataclasses

    import effnas.supernet.cache as cache

    monkeypatch.setattr(SupernetEvaluator, "accuracy", lambda self, spec: 0.5)
    seeds = []
    train = cache.train_supernet
    monkeypatch.setattr(cache, "train_supernet", lambda net, data, cfg, proxy, seed, *a, **k:
                        seeds.append(seed) or train(net, data, cfg, proxy, seed, *a, **k))
    nets = {}
    for name, cfg in {"default": toy["SUPERNET"], "seed 0": dataclasses.replace(toy["SUPERNET"], seed=0),
                      "seed 5": dataclasses.replace(toy["SUPERNET"], seed=5)}.items():
        nets[name] = supernet_evaluator(cfg, {"name": "toy", "root": None}, toy["PROXY"], toy["SPACE"],
                                        toy["toy_data"](), 0, tmp_path)
    assert seeds == [0, 5]  # seed 0 is the default's supernet: loaded, not trained again
    assert nets["seed 0"].path == nets["default"].path != nets["seed 5"].path
    ident = json.loads((nets["seed 5"].path.parent / "identity.json").read_text())
    assert ident["seed"] == 5 and ident["data"]["split_seed"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(nets["default"].net.state_dict().values(),
                                                     nets["seed 5"].net.state_dict().values()))
    assert "seed" not in toy["SUPERNET"].protocol()
    assert dataclasses.replace(toy["SUPERNET"], seed=0).protocol()["seed"] == 0


def test_a_supernet_starts_from_its_seed_whatever_the_process_drew_before(toy):
    from effnas.supernet.cache import initial_supernet

    def weights(seed: int, noise: int) -> list[torch.Tensor]:
        torch.manual_seed(noise)
        torch.rand(noise + 1)  # what the process did before
        before = torch.random.get_rng_state()
        net = initial_supernet(toy["SPACE"], toy["PROXY"], seed)
        assert torch.equal(torch.random.get_rng_state(), before)  # the process's generator is left as it was
        return list(net.state_dict().values())

    same = zip(weights(3, 1), weights(3, 2))
    assert all(torch.equal(a, b) for a, b in same)
    assert any(not torch.equal(a, b) for a, b in zip(weights(3, 1), weights(4, 1)))


def test_a_candidate_scores_as_its_network_unfolded_and_the_supernet_is_left_as_it_was(toy):
    """Scoring folds the recalibrated subnet's BN into its convolutions (faster): the accuracy is
    the unfolded network's, and the supernet's own weights and statistics are not touched."""
    import random

    from effnas.supernet.evaluate import _recalibrate_bn
    from effnas.supernet.model import random_spec

    scorer = _scorer(toy)
    before = {k: v.clone() for k, v in scorer.net.state_dict().items()}
    rng = random.Random(0)
    for _ in range(6):
        spec = random_spec(scorer.net.space, rng)
        with torch.no_grad():
            model = scorer.net.subnet(spec).to(memory_format=torch.channels_last)
            for block in model.blocks:
                block.drop_connect = 0.0
            _recalibrate_bn(model, scorer.recal, len(scorer.recal))
            model.eval()
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in scorer.minival)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert scorer.accuracy(spec) == correct / scorer.images
    after = scorer.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
