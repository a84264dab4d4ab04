"""``python -m olmo_exp.data``: prepare data only (see :mod:`olmo_exp.cli.data`)."""

from olmo_exp.cli.data import entry

if __name__ == "__main__":
    entry()
