"""``python -m robust_lightning``: the same entry point as the ``robust-lightning`` console script."""

from robust_lightning.cli import main

if __name__ == "__main__":
    main()
