"""olmo-exp entry point, the same as ``python -m olmo_exp``: see olmo_exp/__main__.py."""

from olmo_exp.__main__ import main

if __name__ == "__main__":
    main()
