"""olmo-exp entry point: compose the config groups, build the run object, run it."""

import sys

import hydra
from omegaconf import DictConfig

from olmo_exp.schema import register

register()


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from olmo_exp.experiment import Run

    Run.from_hydra(cfg).execute()


if __name__ == "__main__":
    main()
    # -m hydra/launcher=slurm|local: failed jobs were reported one per line; the others finished.
    from olmo_exp.slurm import sweep_exit_code

    sys.exit(sweep_exit_code())
