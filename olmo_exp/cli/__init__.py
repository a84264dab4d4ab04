"""Command line: the entry points (``main`` for ``run.py``, ``data`` for ``python -m olmo_exp.data``),
override checks before Hydra composes (``overrides``), registration with Hydra (``registry``) and
``--help`` (``usage``). The top layer: may import any other.
"""
