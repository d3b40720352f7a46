"""The commit broker's rules logic, without Kafka: CnF, fire modes, deadlines, on_close/on_termination/on_file,
and restoring from persisted state without deciding anything twice."""

from __future__ import annotations

import random

import pytest

from commit_broker.core import CommitCore, Effects
from commit_broker.rules import RuleSet
from contracts.events import (
    DirectoryCommitted,
    DirectoryExpected,
    FileCommitted,
    FileReady,
    ProducerFinished,
    ProducerStarted,
)

RULES = """
rules:
  - match: "prep/*/"
    commit: n_files
    n_files: expected
    fire: no_update
    deadline: 60s
  - match: "fixed/*/"
    commit: n_files
    n_files: 3
    fire: update
  - match: "single/"
    commit: on_close
  - match: "ccf/*/"
    commit: on_termination
    fire: update
  - match: "final/"
    commit: on_file
    on_file: ["prep/w1/", "fixed/a/x2"]
"""


def core() -> CommitCore:
    return CommitCore(RuleSet.parse(RULES))


def fc(directory: str, name: str, producer: str = "p1") -> FileCommitted:
    return FileCommitted(directory=directory, key=f"{directory}{name}", size=1, producer=producer)


def run(c: CommitCore, events: list, now: float = 0.0) -> Effects:  # type: ignore[type-arg]
    total = Effects()
    for e in events:
        total.merge(c.handle(e, now))
    return total


def test_cnf_commits_at_exactly_n_distinct_files_with_duplicates_and_disorder() -> None:
    c = core()
    files = [fc("prep/w1/", f"S{i}") for i in range(5)]
    stream = [*files, files[1], files[3]]  # two duplicates
    random.Random(3).shuffle(stream)
    stream.insert(4, DirectoryExpected(directory="prep/w1/", n_files=5))  # expectation arrives mid-stream
    effects = run(c, stream)
    assert [type(e) for e in effects.events].count(DirectoryCommitted) == 1
    commit = effects.commits[0]
    assert sorted(commit.files) == sorted(f.key for f in files) and not commit.partial
    assert sorted(r.key for r in effects.ready) == sorted(f.key for f in files), "one FileReady per distinct key"
    assert effects.events[-1] == commit, "every FileReady precedes the commit"


def test_cnf_does_not_commit_before_n() -> None:
    c = core()
    effects = run(c, [DirectoryExpected(directory="prep/w1/", n_files=3), fc("prep/w1/", "a"), fc("prep/w1/", "b")])
    assert not effects.commits and len(effects.ready) == 2
    assert c.open_directories == 1
    assert run(c, [fc("prep/w1/", "c")]).commits


def test_fire_update_announces_only_at_commit_and_lists_first_n() -> None:
    c = core()
    first = run(c, [fc("fixed/a/", "x1"), fc("fixed/a/", "x2")])
    assert not first.ready and not first.commits
    done = run(c, [fc("fixed/a/", "x3")])
    assert [r.key for r in done.ready] == ["fixed/a/x1", "fixed/a/x2", "fixed/a/x3"]
    assert done.commits[0].files == ["fixed/a/x1", "fixed/a/x2", "fixed/a/x3"]
    late = run(c, [fc("fixed/a/", "x4")])
    assert [r.key for r in late.ready] == ["fixed/a/x4"] and not late.commits, "a late file is usable, no recommit"


def test_deadline_commits_partial_with_what_is_there() -> None:
    c = core()
    c.handle(DirectoryExpected(directory="prep/w2/", n_files=10), now=100.0)
    c.handle(fc("prep/w2/", "a"), now=101.0)
    assert not c.tick(now=159.0).commits
    effects = c.tick(now=160.0)
    assert effects.commits[0].partial and effects.commits[0].files == ["prep/w2/a"]
    assert effects.commit_latencies == [("n_files", 60.0)]
    assert not c.tick(now=1000.0).commits, "committed exactly once"


def test_next_deadline_is_the_earliest_open_one() -> None:
    c = core()
    assert c.next_deadline == float("inf"), "nothing open"
    c.handle(fc("fixed/a/", "x1"), now=50.0)
    assert c.next_deadline == float("inf"), "a rule without a deadline sets none"
    c.handle(fc("prep/w2/", "a"), now=100.0)
    c.handle(fc("prep/w1/", "a"), now=120.0)
    assert c.next_deadline == 160.0
    c.tick(now=160.0)  # w2 commits partial at its deadline
    assert c.next_deadline == 180.0


def test_on_close_announces_each_file_and_never_commits_the_directory() -> None:
    c = core()
    effects = run(c, [fc("single/", "a"), fc("single/", "b"), fc("single/", "a")])
    assert [r.key for r in effects.ready] == ["single/a", "single/b"] and not effects.commits
    assert c.open_directories == 0


def test_on_termination_waits_for_every_registered_producer() -> None:
    c = core()
    effects = run(
        c,
        [
            ProducerStarted(producer="c1"),
            ProducerStarted(producer="c2"),
            fc("ccf/w/", "ab", "c1"),
            fc("ccf/w/", "ac", "c2"),
            ProducerFinished(producer="c1"),
        ],
    )
    assert not effects.commits and not effects.ready
    done = run(c, [ProducerFinished(producer="c2")])
    assert done.commits[0].files == ["ccf/w/ab", "ccf/w/ac"] and done.commits[0].rule == "on_termination"
    assert [r.key for r in done.ready] == ["ccf/w/ab", "ccf/w/ac"]
    assert not run(c, [ProducerFinished(producer="c2")]).commits


def test_on_termination_is_scoped_to_the_partition_of_the_directory() -> None:
    """ProducerFinished is broadcast to every partition; a directory only trusts the copy behind its own files."""
    c = core()
    c.handle(fc("ccf/w/", "ab", "c1"), now=0, partition=2)
    assert not c.handle(ProducerFinished(producer="c1"), now=0, partition=0).commits
    assert c.handle(ProducerFinished(producer="c1"), now=0, partition=2).commits


def test_on_file_follows_its_dependencies() -> None:
    c = core()
    assert not run(c, [fc("fixed/a/", "x2")]).commits
    effects = run(c, [DirectoryExpected(directory="prep/w1/", n_files=1), fc("prep/w1/", "S")])
    assert [d.directory for d in effects.commits] == ["prep/w1/", "final/"]
    assert effects.commits[1].rule == "on_file"


def test_unmatched_directory_and_foreign_key_are_rejected() -> None:
    c = core()
    with pytest.raises(ValueError, match="no rule matches"):
        c.handle(fc("raw/w1/", "a"), 0)
    with pytest.raises(ValueError, match="not inside directory"):
        c.handle(FileCommitted(directory="prep/w1/", key="prep/w2/a", size=1, producer="p"), 0)
    with pytest.raises(ValueError, match="does not accept"):
        c.handle(FileReady(directory="prep/w1/", key="prep/w1/a"), 0)


def test_object_sightings_count_like_file_events() -> None:
    c = core()
    c.handle(DirectoryExpected(directory="prep/w1/", n_files=2), 0)
    assert c.object_seen("prep/w1/a", 3, "s3-notification", 0).ready
    assert c.object_seen("prep/w1/a", 3, "s3-listing", 0).ignored == "duplicate"
    assert c.object_seen("raw/w1/a", 3, "s3-listing", 0).ignored == "no rule"
    assert c.object_seen("prep/w1/b", 3, "s3-listing", 0).commits


@pytest.mark.parametrize("crash_after", range(0, 9))
def test_restore_after_a_crash_decides_nothing_twice(crash_after: int) -> None:
    """Persist the state records of the first steps only (the last transaction was lost), restore, replay the
    rest from that point: the union of published events is the same as without a crash."""
    files = [fc("prep/w1/", f"S{i}") for i in range(4)]
    stream = [DirectoryExpected(directory="prep/w1/", n_files=4), *files, files[0], files[2], fc("prep/w1/", "S9")]
    ref_core = core()
    reference = [event for e in stream for event in ref_core.handle(e, 0).events]

    first = core()
    published, persisted = [], []
    for e in stream[:crash_after]:
        step = first.handle(e, 0)
        published += step.events
        persisted += step.state
    second = core()
    second.restore(persisted)
    for e in stream[crash_after:]:
        published += second.handle(e, 0).events
    assert _ids(published) == _ids(reference)


def _ids(events: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(e.type, getattr(e, "key", e.directory)) for e in events]


def test_listing_prefixes_stop_at_a_directory_boundary() -> None:
    rules = RuleSet.parse(
        'rules:\n - {match: "prep/2010*/", commit: on_close}\n - {match: "prep/x/y/", commit: on_close}'
        '\n - {match: "ccf/*/", commit: on_close}',
        "ns",
    )
    assert rules.listing_prefixes() == ["ns/ccf/", "ns/prep/"]
