"""`python -m hoshikage` runs the command-line interface."""

from hoshikage.cli.app import main

main()
