"""olmo-exp entry point: compose the config groups, build the run object, run it."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from olmo_exp.schema import register
from olmo_exp.usage import answer_help

register()


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from olmo_exp.experiment import Run

    Run.from_hydra(cfg).execute()


if __name__ == "__main__":
    if not answer_help("run", sys.argv[1:], Path(__file__).resolve().parent / "conf"):
        main()
