"""``python -m olmo_exp.data``: prepare data only (e.g. on CPU nodes, before training jobs that
only read it). Same config groups as run.py; only the ``data`` group is used:

    python -m olmo_exp.data data=wiki data.max_articles=10000
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from olmo_exp.base.errors import ConfigError, DataError
from olmo_exp.base.files import CONF_DIR, remove_created_dir
from olmo_exp.cli.overrides import check_command_line
from olmo_exp.cli.registry import register
from olmo_exp.cli.usage import answer_help
from olmo_exp.config.data import DataConfig
from olmo_exp.runtime.console import configure_logging

log = logging.getLogger("olmo_exp.data")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    """Prepare (or find prepared) the ``data`` group's token shards and print what they hold."""
    from hydra.core.hydra_config import HydraConfig

    from olmo_exp.data.prep import prepare

    # Hydra's run dir (its job log) appears with the first log line: a rejected prep removes it.
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = not run_dir.exists() or not any(run_dir.iterdir())
    configure_logging()  # Hydra's job logging is off (conf/config.yaml): the project's format

    data = OmegaConf.to_object(cfg.data)
    assert isinstance(data, DataConfig)
    try:
        manifest = prepare(data)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        if fresh:
            logging.shutdown()  # close the job log before its directory goes
            remove_created_dir(run_dir)
        sys.exit(2)
    if fresh and not any(run_dir.iterdir()):  # Hydra's run dir: nothing of this command in it
        remove_created_dir(run_dir)
    splits = manifest.data["splits"]
    print(
        f"{manifest.root}: {manifest.data['articles']} articles; "
        + ", ".join(
            f"{s} {splits[s]['tokens']:,} tokens in {len(splits[s]['shards'])} files"
            for s in splits
        )
        + f"; {manifest.dtype}, vocab {manifest.vocab_size}"
    )


def entry() -> None:
    register("data")
    if not answer_help("data", sys.argv[1:]):  # --help describes data preparation
        check_command_line(sys.argv[1:])  # unknown keys: one line, exit 2
        main()
