"""Sweeps: the submitit launchers (``launcher``) and how a failed job is told (``failures``), the
report (``report``, ``plots``, ``arms``) and equal-budget matching (``match``).

May import ``runtime`` and everything below it; never ``cli``.
"""
