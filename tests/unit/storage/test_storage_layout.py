"""The storage layout contract (DESIGN.md §5): every key is built and parsed by storage.layout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.ids import pair_problem, split_pair
from storage import InvalidKey, keys
from storage.layout import Layout, run_object, run_prefixes

W = "20100901T000000Z"
A, B = "YA.UV05..HHZ", "YA.UV06..HHZ"


def test_layout_matches_the_contract() -> None:
    assert Layout().raw(W, A) == f"raw/{W}/{A}.mseed"
    assert Layout().product(W, A) == f"prep/{W}/{A}.npz"
    assert Layout("run1/").product(W, A) == f"run1/prep/{W}/{A}.npz"
    assert Layout("run1/").product_dir(W) == f"run1/prep/{W}/"
    assert Layout("run1/").manifest(W, A, 64) == f"run1/tasks/{W}/{A}.s64.json"
    assert Layout("run1/").manifests(W) == f"run1/tasks/{W}/"
    assert Layout("run1/").results_root() == "run1/results.zarr"
    assert run_object("run-1", "report.json") == "runs/run-1/report.json"
    assert run_prefixes("run-1") == ("run-1/", "runs/run-1/")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Layout().raw("../x", A),
        lambda: Layout().product(W, "../../etc/passwd"),
        lambda: Layout("../up/").product(W, A),
        lambda: Layout().product_dir("W1/.."),
        lambda: Layout().manifest(W, "YA.UV06..HHZ/../../x", 0),
        lambda: run_object("../other", "report.json"),
        lambda: run_object("r1", "../../escape"),
        lambda: run_object(".hidden", "x"),
        lambda: run_prefixes(""),
    ],
)
def test_layout_helpers_refuse_hostile_ids(build: object) -> None:
    with pytest.raises(InvalidKey):
        build()  # type: ignore[operator]


def test_product_keys_are_parsed_strictly() -> None:
    layout = Layout("run1/")
    assert layout.parse_product("run1/prep/W1/XX.A..HHZ.npz") == ("run1/prep/W1/", "W1", "XX.A..HHZ")
    for bad in ["prep/W1/XX.A..HHZ.npz", "run1/ccf/W1/a.npz", "run1/prep/W1/sub/x.npz", "run1/prep/W1/noext"]:
        with pytest.raises(ValueError):
            layout.parse_product(bad)
    with pytest.raises(ValueError):
        layout.parse_product("run1/prep/W1/XX.A..HHZ.sac", ext="npz")
    assert layout.parse_product_dir("run1/prep/W1/") == "W1"
    for bad in ["run1/ccf/W1/", "prep/W1/", "run1/prep/"]:
        with pytest.raises(ValueError):
            layout.parse_product_dir(bad)


def test_built_keys_parse_back() -> None:
    layout = Layout("ns/")
    assert layout.parse_product(layout.product(W, A)) == (layout.product_dir(W), W, A)
    assert layout.is_manifest(layout.manifest(W, A, 0)) and not Layout("other/").is_manifest(layout.manifest(W, A, 0))


_ID_PART = st.from_regex(r"[A-Za-z0-9-]{1,8}", fullmatch=True)


@given(net=_ID_PART, sta=_ID_PART, loc=st.from_regex(r"[A-Za-z0-9-]{0,8}", fullmatch=True), cha=_ID_PART)
def test_every_valid_seed_id_makes_valid_keys_under_its_stage(net: str, sta: str, loc: str, cha: str) -> None:
    seed_id = f"{net}.{sta}.{loc}.{cha}"
    key = Layout().product(W, seed_id)
    assert keys.validate_key(key) == key
    assert key.startswith(f"prep/{W}/") and key.count("/") == 2


def test_pairs_are_ordered_and_unambiguous() -> None:
    assert split_pair(f"{A}__{B}") == (A, B)
    for a, b in ((B, A), (A, A)):
        assert pair_problem(a, b)
    for bad in (f"{B}__{A}", A, f"{A}___{B}", f"{A}__{B}__{B}"):
        assert split_pair(bad) is None


_ANY_PART = st.from_regex(r"[A-Za-z0-9_-]{0,8}", fullmatch=True)
_SEED_LIKE = st.tuples(_ANY_PART, _ANY_PART, _ANY_PART, _ANY_PART).map(".".join)


@given(a=_SEED_LIKE, b=_SEED_LIKE)
def test_any_accepted_pair_parses_back_to_itself(a: str, b: str) -> None:
    """Underscores are allowed in ids, so this is where an ambiguous ``A__B`` split would show up."""
    if pair_problem(a, b):
        return
    assert split_pair(f"{a}__{b}") == (a, b)
