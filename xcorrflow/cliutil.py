"""Helpers for sub-command flags that fall back to environment variables (and say so in ``--help``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any


def env_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    default: Any,
    help: str,
    convert: Callable[[str], Any] = str,
    **kwargs: Any,
) -> None:
    """Add ``flag`` whose default comes from ``env`` when set, else ``default``; help shows both."""
    raw = os.environ.get(env)
    value = convert(raw) if raw is not None else default
    shown = "" if default is None else "; default %(default)s"
    parser.add_argument(flag, type=convert, default=value, help=f"{help} (env: {env}{shown})", **kwargs)
