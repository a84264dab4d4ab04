"""olmo-exp: Hydra-composed OLMo pretraining experiments on olmo-core."""

__version__ = "0.1.0"
