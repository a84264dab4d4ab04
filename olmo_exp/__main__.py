"""``python -m olmo_exp`` (or ``python run.py``): compose the config groups, build the run object,
run it."""

import sys

import hydra
from omegaconf import DictConfig

from olmo_exp.files import CONF_DIR
from olmo_exp.schema import check_command_line, register
from olmo_exp.usage import answer_help

register()


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def run(cfg: DictConfig) -> None:
    from olmo_exp.experiment import Run

    Run.from_hydra(cfg).execute()


def main() -> None:
    if not answer_help("run", sys.argv[1:]):
        # Unknown keys and group options in any override form: one line, exit 2, before Hydra runs.
        check_command_line(sys.argv[1:])
        run()
        # -m hydra/launcher=slurm|local: failed jobs were reported one per line; the others finished.
        from olmo_exp.slurm import sweep_exit_code

        sys.exit(sweep_exit_code())


if __name__ == "__main__":
    main()
