"""`python -m kreaserve.cli`: the same as the `kreaserve` command."""

from kreaserve.cli import main

main()
