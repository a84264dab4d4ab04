"""The run's checks that read a tokenizer: the config's own (``RunConfig.validate``) plus the vocab
the tokenizer has, resolved once and handed on to data prep and the model."""

from __future__ import annotations

from olmo_exp.base.errors import ConfigError
from olmo_exp.config.run import RunConfig
from olmo_exp.config.topology import Host
from olmo_exp.data.tokenizer import TokenizerInfo, tokenizer_info


def check_run(config: RunConfig, host: Host | None = None) -> TokenizerInfo:
    """Every check that needs no data prep and no process: one ConfigError, nothing written.

    ``host``: the launcher and GPUs to check against; None = this process's.
    Returns the tokenizer it resolved, for data prep and the model's vocab (resolved once).
    """
    config.data.validate()  # before reading its tokenizer
    tokenizer = tokenizer_info(config.data)
    # the vocab sizes the LM head, whose FLOPs a compute budget (train.size_rule) counts
    config.validate(host, tokenizer_vocab=tokenizer.vocab_size)
    vocab = config.model.vocab_size
    if vocab is not None and vocab < tokenizer.vocab_size:
        raise ConfigError("model.vocab_size", vocab,
                          f"must be >= the tokenizer's vocab ({tokenizer.vocab_size}) or null")
    return tokenizer
