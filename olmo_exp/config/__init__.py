"""Config: one dataclass module per ``conf/`` group (``model``, ``lws``, ``dist``, ``data``, ``train``,
``generate``, ``wandb``), ``run`` (RunConfig, the checks across groups), ``topology`` (the world the
run will have) and ``compose`` (the schemas and resolvers Hydra composes with).

May import ``olmo_exp.base`` only. No torch or olmo-core at import: composing, ``--help`` and a
rejected config stay fast; a config's ``build_config``-style methods import olmo-core inside.
"""
