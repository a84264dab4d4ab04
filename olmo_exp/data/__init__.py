"""Data: dump/HF/files -> clean text -> tokenizer -> headerless token shards + ``manifest.json``,
and ``check`` (the run's checks that read a tokenizer).

May import ``olmo_exp.config`` and ``olmo_exp.base``. The preparation stack (mwparserfromhell,
datasets, tokenizers) loads in ``prep``, only once a run really prepares data.
"""
