"""``python run.py`` / ``python -m olmo_exp``: check the command line, compose the config groups,
build the run object, run it."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from olmo_exp.base.files import CONF_DIR
from olmo_exp.cli.overrides import check_command_line
from olmo_exp.cli.registry import register
from olmo_exp.cli.usage import answer_help

register()


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def run(cfg: DictConfig) -> None:
    from olmo_exp.runtime.run import Run  # torch and olmo-core: not on the --help path

    Run.from_hydra(cfg).execute()


def main() -> None:
    if not answer_help("run", sys.argv[1:]):
        # Unknown keys and group options in any override form: one line, exit 2, before Hydra runs.
        check_command_line(sys.argv[1:])
        run()
        # -m hydra/launcher=slurm|local: failed jobs were reported one per line; the others finished.
        from olmo_exp.sweep.launcher import sweep_exit_code

        sys.exit(sweep_exit_code())
