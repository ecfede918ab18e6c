"""Registers its commands on analyzer.cli.app (filled in by its issue)."""
