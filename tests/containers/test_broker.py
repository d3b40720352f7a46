"""The commit broker's CnF exactly-once tests, kill -9 included, against Kafka in its container.

The broker runs as a process of this machine, as in tests/integration/commit_broker/test_commit_broker.py,
whose tests these are; only the Kafka it talks to differs.
"""

from __future__ import annotations

from tests.integration.commit_broker.test_commit_broker import (
    broker,
    test_kill_9_and_restart_commits_exactly_once,
    test_outside_client_cnf_exactly_once,
)

__all__ = ["broker", "test_kill_9_and_restart_commits_exactly_once", "test_outside_client_cnf_exactly_once"]
