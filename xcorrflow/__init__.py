"""xcorrflow: the command line and the local-stack orchestration around the role packages."""

__version__ = "0.1.0"
