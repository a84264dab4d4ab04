"""Data: dump/HF/files -> clean text -> tokenizer -> headerless token shards + manifest.json.

Composing and validating a config imports only ``olmo_exp.data.config`` (and ``tokenizer`` for the
vocab); the preparation stack (mwparserfromhell, datasets, tokenizers) loads in ``prep``.
"""
