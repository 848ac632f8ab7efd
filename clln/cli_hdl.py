"""CLI commands of the gateware layer: ``clln generate`` and ``clln verify``."""


def add_parsers(sub):
    """Add the gateware subcommands to the ``clln`` argument parser."""
