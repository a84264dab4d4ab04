"""``python -m olmo_exp.evaluate`` (see :mod:`olmo_exp.cli.evaluate`)."""

from olmo_exp.cli.evaluate import entry

if __name__ == "__main__":
    entry()
