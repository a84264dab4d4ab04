"""What Hydra must know before it starts: the config schemas and resolvers, our launchers in its
plugin registry, and the ``--help`` resolver. Called by every entry point and by the sweep jobs."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from olmo_exp.cli import usage
from olmo_exp.config.cluster import user_config_dir
from olmo_exp.config.compose import register_schemas
from olmo_exp.sweep.basic import CheckedBasicLauncher
from olmo_exp.sweep.launcher import LocalLauncher, SlurmLauncher

# The launchers' names in conf/hydra/launcher/*.yaml (``_target_``). Hydra 1.3 instantiates a
# launcher only under a ``hydra_plugins.`` name found in its plugin registry.
PLUGIN_NAMES = {"slurm": "hydra_plugins.olmo_exp_launcher.SlurmLauncher",
                "local": "hydra_plugins.olmo_exp_launcher.LocalLauncher",
                "basic": "hydra_plugins.olmo_exp_launcher.CheckedBasicLauncher"}


def register_launchers() -> None:
    """Put the launchers in Hydra's plugin registry under their ``hydra_plugins.`` names.

    The classes stay in :mod:`olmo_exp.sweep.launcher` (jobs unpickle them from there); no
    ``hydra_plugins`` package has to be installed.
    """
    from hydra.core.plugins import Plugins

    registry = Plugins.instance().class_name_to_class
    registry[PLUGIN_NAMES["slurm"]] = SlurmLauncher
    registry[PLUGIN_NAMES["local"]] = LocalLauncher
    registry[PLUGIN_NAMES["basic"]] = CheckedBasicLauncher


class UserConfigSearchPath(SearchPathPlugin):
    """Adds :func:`user_config_dir` after conf/ on Hydra's search path, when it exists.

    A plugin rather than ``hydra.searchpath`` in conf/config.yaml: Hydra warns on every command
    about a searchpath entry that does not exist, and most users have no profile. Read each time
    Hydra builds a search path, so the environment variable of that moment counts."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        path = user_config_dir()
        if path.is_dir():
            search_path.append(provider="olmo-exp user config", path=f"file://{path.resolve()}")


def register(app: str = "run") -> None:
    from hydra.core.plugins import Plugins

    register_schemas()
    register_launchers()
    Plugins.instance().register(UserConfigSearchPath)
    usage.register(app)  # ${olmo_help:...} in hydra.help.template
