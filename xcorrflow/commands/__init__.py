"""Sub-commands of the ``xcorrflow`` CLI. Each module defines ``register(subparsers)``; cli.py discovers them."""
