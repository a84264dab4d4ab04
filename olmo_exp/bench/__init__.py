"""Benchmarks: ratios measured side by side in one run (ours vs raw olmo-core, prep vs the raw
tokenizer, ``--help`` vs a bare Hydra import). Each is ``python -m olmo_exp.bench.NAME``.

Sits beside ``cli`` at the top: may import any layer below; nothing imports it.
"""
