"""Build: our config mapped onto olmo-core objects beyond each config's own ``build_config``-style
methods: ``summary`` (``model_summary.json`` from the built model).

May import ``config``, ``data`` and ``base``; never ``runtime``, ``sweep`` or ``cli``.
"""
