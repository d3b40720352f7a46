"""xcorrflow: the command line (cli, commands/), run orchestration (orchestration/), the local stack (localstack/)."""

__version__ = "0.1.0"
