"""``python -m tradebot`` runs the command line."""

from tradebot.cli.main import main

main()
