"""``python -m olmo_exp.export``: a run's checkpoint as a Hugging Face transformers directory (see :mod:`olmo_exp.cli.export`).

An entry point only, above every layer (tests/test_layout.py); the code is in ``cli/export.py``."""
