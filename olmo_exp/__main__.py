"""``python -m olmo_exp``: the same entry point as ``python run.py``."""

from olmo_exp.cli.main import main

if __name__ == "__main__":
    main()
