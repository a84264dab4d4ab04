"""olmo-exp entry point: compose the config groups, build the run object, run it."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from olmo_exp.schema import check_command_line, register
from olmo_exp.usage import answer_help

register()


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from olmo_exp.experiment import Run

    Run.from_hydra(cfg).execute()


if __name__ == "__main__":
    if not answer_help("run", sys.argv[1:], Path(__file__).resolve().parent / "conf"):
        # Unknown keys and group options in any override form: one line, exit 2, before Hydra runs.
        check_command_line(sys.argv[1:], Path(__file__).resolve().parent / "conf")
        main()
        # -m hydra/launcher=slurm|local: failed jobs were reported one per line; the others finished.
        from olmo_exp.slurm import sweep_exit_code

        sys.exit(sweep_exit_code())
