"""``python -m mcgw``: the same as the ``mcgw`` command."""

from mcgw.cli import main

main()
