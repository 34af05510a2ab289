"""Typed configs for every command: the group options in Hydra's ConfigStore, loading and checking.

Group options come from the registries (``dataset``, ``sampler``, ``pruner``, ``storage``,
``evaluator``) and from the schemas' own presets (``proxy``: ``search`` and ``full``; ``objective``:
``soft`` and ``hard``; ``space``: ``mnasnet``). The root configs (``conf/<command>.yaml``) are defaults lists over a
root schema each stage registers with :func:`register_root`. Every option is a :class:`Schema`
dataclass: Hydra rejects wrong types and unknown keys while composing, and :func:`to_typed`
builds the objects, which runs every value rule (:mod:`effnas.schema`).

:func:`load` composes a command's config from overrides (tests, notebooks); :func:`as_config`
turns what a ``run_*`` function was given (a typed config, a ``DictConfig`` or a plain dict of the
keys to change) into the typed config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from .schema import ConfigError, Schema, rule

__all__ = ["SpaceConfig", "register_root", "register_groups", "load", "as_config", "to_typed", "ROOTS",
           "GROUP_SELECTORS", "CONFIG_MODULE", "group_options"]

CONFIG_MODULE = "effnas_conf"
ROOTS: dict[str, type] = {}
# The key of a group's node that names its option, for plain-dict configs (``{"sampler": {"name": ...}}``).
GROUP_SELECTORS = {"dataset": "name", "sampler": "name", "pruner": "name", "storage": "kind", "evaluator": "name"}


@dataclass
class SpaceConfig(Schema):
    """The ``space`` group: MnasNet's factorized hierarchical space over a base network's stages."""

    _key: ClassVar[str] = "space"

    base: str = "efficientnet-b0"  # a reference name, architecture string or best.json: its stages
    ops: List[str] = field(default_factory=lambda: ["mbconv", "conv"])  # mbconv with expansion 1 = ds
    expand_ratios: List[int] = rule(default_factory=lambda: [1, 3, 6], ge=1)
    kernels: List[int] = rule(default_factory=lambda: [3, 5], ge=1)
    se_ratios: List[float] = rule(default_factory=lambda: [0.0, 0.25], ge=0, le=1)
    skips: List[str] = field(default_factory=lambda: ["identity", "none"])
    filter_multipliers: List[float] = rule(default_factory=lambda: [0.75, 1.0, 1.25], gt=0)
    layer_deltas: List[int] = field(default_factory=lambda: [-1, 0, 1])
    # Stem and head widths as choices, round_filters(base width, m) each; [1.0]: the base's (MnasNet's)
    stem_multipliers: List[float] = rule(default_factory=lambda: [1.0], gt=0)
    head_multipliers: List[float] = rule(default_factory=lambda: [1.0], gt=0)
    include: Optional[List[str]] = None  # networks whose widths / activation join the choices (null: the
                                         # default warm starts where they fit; []: MnasNet's choices only)

    def validate(self) -> None:
        try:
            self.build()
        except ValueError as exc:
            message = str(exc)
            raise ConfigError("space", message if message.startswith("space") else f"space: {message}") from None

    def protocol(self) -> dict:
        """The space as a study's protocol records it: stem and head multipliers only where they
        are not the default ``[1.0]`` (studies made before they existed resume unchanged)."""
        out = dataclasses.asdict(self)
        for name in ("stem_multipliers", "head_multipliers"):
            if [float(m) for m in out[name]] == [1.0]:
                del out[name]
        return out

    def build(self, num_classes: int = 1000, in_channels: int = 3, resolution: int | None = None):
        from search_space import SearchSpace

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return SearchSpace.from_config(values, num_classes=num_classes, in_channels=in_channels,
                                       resolution=resolution)


_REGISTERED = False


def register_groups() -> None:
    """Store every group option in Hydra's ConfigStore (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore

    from .data import dataset_configs
    from .objective import ObjectiveConfig
    from .rerank import RerankConfig
    from .study import PRUNERS, SAMPLERS, STORAGES
    from .supernet.config import EVALUATORS
    from .train import ProxyConfig

    cs = ConfigStore.instance()
    for name, node in dataset_configs().items():
        cs.store(group="dataset", name=name, node=node)
    for registry in (SAMPLERS, PRUNERS, STORAGES, EVALUATORS):
        for name, cls in registry.items():
            cs.store(group=registry.group, name=name, node=cls)
    cs.store(group="objective", name="soft", node=ObjectiveConfig)
    cs.store(group="objective", name="hard", node=ObjectiveConfig(alpha=0.0, beta=-1.0))
    cs.store(group="proxy", name="search", node=ProxyConfig)
    cs.store(group="proxy", name="full", node=ProxyConfig(epochs=10, train_size=None))
    cs.store(group="space", name="mnasnet", node=SpaceConfig)
    cs.store(group="rerank", name="top3", node=RerankConfig)
    cs.store(group="rerank", name="none", node=RerankConfig(k=0))
    _REGISTERED = True


def register_root(name: str, schema: type) -> type:
    """Register a command's root schema as ``<name>_schema`` (the first entry of its defaults list)."""
    from hydra.core.config_store import ConfigStore

    ROOTS[name] = schema
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)
    return schema


def group_options(group: str) -> list[str]:
    """The option names of a config group, as the ConfigStore holds them."""
    from hydra.core.config_store import ConfigStore

    register_groups()
    node = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part, {})
    return sorted(k[:-5] for k in node if k.endswith(".yaml"))


def _check_keys(node: DictConfig, path: str = "") -> None:
    """Keys a schema does not have (``+key=value`` appends them past Hydra's struct check)."""
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        known = {f.name for f in dataclasses.fields(schema)}
        for key in node:
            if key not in known:
                full = f"{path}.{key}" if path else str(key)
                valid = ", ".join(sorted(k for k in known if not k.startswith("_")))
                raise ConfigError(full, f"unknown key {full} (valid keys{' of ' + path if path else ''}: {valid})")
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _check_keys(child, f"{path}.{key}" if path else str(key))


def to_typed(cfg: DictConfig) -> Any:
    """The typed config objects of a composed config (every value rule runs here)."""
    _check_keys(cfg)
    obj = OmegaConf.to_object(cfg)
    if isinstance(obj, dict):
        raise TypeError("the config has no root schema: its defaults list must start with <command>_schema")
    return obj


def _initialized():
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().is_initialized()


def compose(config_name: str, overrides: Sequence[str] = (), *, hydra_config: bool = False) -> DictConfig:
    """Hydra's compose of a command's config (inside a Hydra app or from scratch)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register_groups()
    if _initialized():
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=hydra_config)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=hydra_config)


def load(config_name: str, overrides: Sequence[str] = ()) -> Any:
    """The typed config of ``config_name`` (``nas_search``, ``scale_search``...) with overrides.
    The stage that owns the command registers its root schema when imported (``nas.config``,
    ``scaling_search.config``): the engine does not import the stages."""
    return to_typed(compose(config_name, overrides))


def _merge_values(cfg: DictConfig, values: Mapping[str, Any]) -> DictConfig:
    merged = OmegaConf.merge(cfg, OmegaConf.create(dict(values)))
    assert isinstance(merged, DictConfig)
    return merged


def as_config(config_name: str, cfg: Any) -> Any:
    """A run function's argument as the typed config: a typed config is returned as it is; a
    ``DictConfig`` or a plain mapping holds the keys to change from the command's defaults (a
    group's option is chosen by its ``name`` / ``kind``, e.g. ``{"sampler": {"name": "random"}}``)."""
    schema = ROOTS.get(config_name)
    if schema is not None and isinstance(cfg, schema):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a {config_name} config (typed, DictConfig or dict), got {type(cfg).__name__}")
    choices = []
    for group, selector in GROUP_SELECTORS.items():
        node = cfg.get(group)
        if isinstance(node, Mapping) and node.get(selector) is not None:
            choices.append(f"{group}={node[selector]}")
    from omegaconf.errors import OmegaConfBaseException

    try:
        base = compose(config_name, [c for c in choices if c.split("=")[0] in _groups_of(config_name)])
        return to_typed(_merge_values(base, cfg))
    except ConfigError:
        raise
    except (OmegaConfBaseException, ValueError) as exc:  # a wrong type or unknown key: one line naming it
        from .cli import explain_error

        raise ConfigError("", explain_error(config_name, exc, [])) from None


def _groups_of(config_name: str) -> set[str]:
    schema = ROOTS[config_name]
    return {f.name for f in dataclasses.fields(schema)} & set(GROUP_SELECTORS)
