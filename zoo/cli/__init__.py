"""The command line (`python -m zoo ...`): one module per command group, `format` for their plain-text tables."""

from zoo.cli.main import main as main
