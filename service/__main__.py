"""Entry point for `python -m service`: the same CLI as the `hindsight` console script."""

from service.cli import main

main()
