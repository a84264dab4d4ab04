"""``python -m olmo_exp.generate``: text from a run's checkpoint, as the run samples it (see :mod:`olmo_exp.cli.generate`).

An entry point only, above every layer (tests/test_layout.py); the code is in ``cli/generate.py``."""
