"""olmo-exp: Hydra-composed OLMo pretraining experiments on olmo-core."""

__version__ = "0.1.0"

from olmo_exp.console import install_noise_filters

# Known-harmless library messages (olmo_exp/console.py NOISE) are dropped in every process that
# imports this package (run.py, spawned ranks, SLURM jobs), before olmo-core is first imported.
install_noise_filters()
