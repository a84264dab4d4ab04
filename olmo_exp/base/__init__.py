"""The bottom layer: the one-line errors every check raises (``errors``) and how files are found
(``conf/``, ``sweeps/``, the README), written whole and read back (``files``).

Imports nothing of ours; nothing here imports torch, Hydra or olmo-core.
"""
