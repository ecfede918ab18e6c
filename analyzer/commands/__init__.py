"""CLI command groups; each module registers its commands on `analyzer.cli.app`."""
