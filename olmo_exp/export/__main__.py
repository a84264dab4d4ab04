"""``python -m olmo_exp.export`` (see :mod:`olmo_exp.cli.export`)."""

from olmo_exp.cli.export import entry

if __name__ == "__main__":
    entry()
