"""effnas's Hydra launcher plugin: Hydra instantiates launchers only from classes defined in the
``hydra_plugins`` namespace. ``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml) targets
:class:`SlurmLauncher`; the logic is :mod:`effnas.launchers`."""

from effnas import launchers

__all__ = ["SlurmLauncher"]


class SlurmLauncher(launchers.SlurmLauncher):
    __doc__ = launchers.SlurmLauncher.__doc__
