"""``python -m olmo_exp.generate`` (see :mod:`olmo_exp.cli.generate`)."""

from olmo_exp.cli.generate import entry

if __name__ == "__main__":
    entry()
