"""``python -m olmo_exp.evaluate``: validation loss, BPB and eval.tasks of a run's checkpoint, without training (see :mod:`olmo_exp.cli.evaluate`).

An entry point only, above every layer (tests/test_layout.py); the code is in ``cli/evaluate.py``."""
