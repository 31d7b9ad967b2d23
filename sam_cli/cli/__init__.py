"""The command line. Only this package prints, exits or imports Typer."""
