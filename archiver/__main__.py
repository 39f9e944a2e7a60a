"""``python -m archiver`` runs the command line."""

from archiver.cli import main

main()
