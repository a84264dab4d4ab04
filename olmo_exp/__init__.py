"""olmo-exp: Hydra-composed OLMo pretraining experiments on olmo-core.

Layers, bottom to top (imports point down only; ``tests/test_layout.py`` checks it):
``base`` -> ``config`` -> ``data`` -> ``build`` -> ``runtime`` -> ``sweep`` -> ``cli`` / ``bench``.
"""

__version__ = "0.1.0"

from olmo_exp.runtime.console import install_noise_filters

# Known-harmless library messages (olmo_exp/runtime/console.py NOISE) are dropped in every process
# that imports this package (run.py, spawned ranks, SLURM jobs), before olmo-core is first imported.
install_noise_filters()
