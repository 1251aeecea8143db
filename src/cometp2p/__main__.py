"""``python -m cometp2p``: the same entry point as the ``cometp2p`` console script."""

from cometp2p.cli.main import main

main()
