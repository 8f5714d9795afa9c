"""``python -m hybridvision`` (and ``torchrun ... -m hybridvision train ...``)."""

from hybridvision.cli import main

if __name__ == "__main__":
    main()
