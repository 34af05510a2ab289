"""Training the supernet: the random subnets' own loss in the history and the progress lines, the
stage-wise feature distillation (``evaluator.stage_distill``) and progressive sampling
(``evaluator.progressive``)."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest
import torch

from effnas.supernet import SupernetConfig
from effnas.supernet.model import SuperNet, largest_spec, random_spec
from effnas.supernet.train import _stage_loss, train_supernet


def test_history_and_progress_show_the_random_subnets_loss(toy, tmp_path, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="effnas"):
        history = train_supernet(SuperNet(toy["SPACE"]), toy["toy_data"](), toy["SUPERNET"], toy["PROXY"], 0,
                                 tmp_path / "a.pt", log_every=0.0)
    for h in history:  # cross-entropy of 10 classes on random labels: near ln 10, and its own number
        assert 1.0 < h["random_loss"] < 6.0 and h["random_loss"] != h["loss"], h
    steps = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
    assert steps and all(", random subnets " in m for m in steps), steps
    done = [r.getMessage() for r in caplog.records if "done:" in r.getMessage()]
    assert len(done) == 2 and f"random subnets {history[-1]['random_loss']:.3f}" in done[-1]

    none = train_supernet(SuperNet(toy["SPACE"]), toy["toy_data"](),
                          dataclasses.replace(toy["SUPERNET"], random_subnets=0), toy["PROXY"], 0, tmp_path / "b.pt")
    assert all(h["random_loss"] is None for h in none)  # the sandwich without random subnets


def test_stages_chain_into_the_forward(toy):
    net = SuperNet(toy["SPACE"]).eval()
    x = toy["toy_data"]().train.images[:4].float() / 255
    for spec in [largest_spec(toy["SPACE"]), random_spec(toy["SPACE"], random.Random(2))]:
        logits, feats = net(x, spec, features=True)
        assert torch.equal(logits, net(x, spec)) and len(feats) == len(spec.stages) + 1
        for i, stage in enumerate(spec.stages):
            assert feats[i].shape[1] == stage.in_filters and feats[i + 1].shape[1] == stage.out_filters
            assert torch.allclose(net.stage(feats[i], spec, i), feats[i + 1])


def test_stage_loss_pulls_a_subnet_towards_the_largest(toy):
    torch.manual_seed(0)
    net = SuperNet(toy["SPACE"]).train()
    for p in net.parameters():  # no zero-initialised residual BN: every branch has an output to match
        if p.dim() == 1:
            torch.nn.init.uniform_(p, 0.5, 1.5)
    x = toy["toy_data"]().train.images[:8].float() / 255
    big = largest_spec(toy["SPACE"])
    _, feats = net(x, big, features=True)
    feats = [f.detach() for f in feats]
    assert float(_stage_loss(net, big, feats).detach()) == pytest.approx(0.0, abs=1e-10)  # the teacher matches itself
    spec = next(s for s in (random_spec(toy["SPACE"], random.Random(i)) for i in range(50))
                if s.network_key() != big.network_key())
    loss = _stage_loss(net, spec, feats)
    assert float(loss.detach()) > 1e-3
    loss.backward()  # its gradient reaches the subnet's weights, not the teacher's features
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.stages.parameters())


@pytest.mark.parametrize("setting, value", [("stage_distill", 1.0), ("progressive", 0.5)])
def test_a_later_setting_trains_other_weights_and_is_keyed_only_when_on(toy, tmp_path, setting, value):
    on = dataclasses.replace(toy["SUPERNET"], **{setting: value})
    off = dataclasses.replace(toy["SUPERNET"], **{setting: 0.0})
    nets = {}
    for name, cfg in {"off": off, "on": on}.items():
        torch.manual_seed(0)
        nets[name] = SuperNet(toy["SPACE"])
        train_supernet(nets[name], toy["toy_data"](), cfg, toy["PROXY"], 0, tmp_path / f"{name}.pt")
    assert any(not torch.equal(a, b) for a, b in zip(nets["off"].state_dict().values(),
                                                     nets["on"].state_dict().values()))
    assert setting not in off.training_settings()  # caches from before keep their keys
    assert setting not in off.protocol()           # studies from before resume (with the setting off)
    assert on.training_settings()[setting] == value == on.protocol()[setting]


def _non_nested(spec) -> int:
    return sum(st.conv_type.value != "mbconv" or st.skip != "identity" for st in spec.stages)


def test_progressive_sampling_keeps_to_the_nested_options_with_its_probability():
    from search_space import default_space
    from search_space.space import SearchSpace

    space = default_space(10, 1, 32)
    rng, plain = random.Random(7), random.Random(7)
    for _ in range(5):  # nested=0 is the uniform draw, unchanged (no extra random numbers)
        uniform = space.sample(type("P", (), {"suggest_categorical": lambda self, n, c: plain.choice(list(c))})())
        assert random_spec(space, rng, 0.0).network_key() == uniform.network_key()
    always = [random_spec(space, random.Random(i), 1.0) for i in range(20)]
    assert all(_non_nested(s) == 0 and all(st.expand_ratio > 1 for st in s.stages) for s in always)
    assert len({s.network_key() for s in always}) == 20  # the nested choices stay random
    counts = [sum(_non_nested(random_spec(space, random.Random(i), q)) for i in range(60)) for q in (0.0, 0.5)]
    assert 0.3 * counts[0] < counts[1] < 0.75 * counts[0], counts  # about half as many non-nested stages
    # a space without a nested option for a choice keeps drawing from all of its options
    conv_only = SearchSpace.from_config({"ops": ["conv"]}, num_classes=10, in_channels=1, resolution=32)
    assert all(st.conv_type.value == "conv" for st in random_spec(conv_only, random.Random(0), 1.0).stages)


def test_progressive_needs_uniform_sampling():
    from effnas.schema import ConfigError

    with pytest.raises(ConfigError, match="evaluator.progressive needs evaluator.sampling=uniform"):
        SupernetConfig(progressive=0.5, sampling="fair")
