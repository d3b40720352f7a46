"""The rules file (DESIGN.md §3), in the spirit of CAPIO-CL: when is a directory committed, when may files be read.

```yaml
rules:
  - match: "prep/*/"        # glob over directory prefixes; '*' stays inside one path segment, '**' crosses them
    commit: n_files         # n_files | on_close | on_termination | on_file
    n_files: expected       # an integer, or "expected" (the count a DirectoryExpected event announces)
    fire: no_update         # no_update: FileReady per file at once; update: FileReady only at the commit
    deadline: 15m           # optional: commit what is there after this long (from the directory's first event)
  - match: "final/"
    commit: on_file
    on_file: ["prep/20100901T000000Z/", "ccf/20100901T000000Z/UV05__UV06.npz"]
```

Patterns are relative to the deployment's namespace; :meth:`RuleSet.load` prefixes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from commit_broker.errors import RulesError
from contracts.settings import namespace_prefix

CommitKind = Literal["n_files", "on_close", "on_termination", "on_file"]
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str | float | int) -> float:
    """Seconds of a duration such as ``90``, ``"45s"``, ``"15m"``, ``"1h30m"``.

    Raises:
        ValueError: the text is not a positive duration.
    """
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text.strip())
        if not text.strip() or not match or not any(match.groups()):
            raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h30m)")
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a directory glob: ``*`` and ``?`` stay within one segment, ``**`` spans segments."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


class Rule(BaseModel):
    """One rule of the rules file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: str = Field(description="glob over directory prefixes, ending with '/'")
    commit: CommitKind
    n_files: int | Literal["expected"] | None = None
    fire: Literal["update", "no_update"] = "no_update"
    deadline: float | None = Field(None, description="seconds (the file may say 15m, 1h, 30s)")
    on_file: tuple[str, ...] = Field((), description="keys or directories this directory waits for (on_file)")

    @field_validator("match")
    @classmethod
    def _directory_pattern(cls, value: str) -> str:
        if not value.endswith("/") or value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"match must be a relative directory pattern ending with '/': {value!r}")
        return value

    @field_validator("deadline", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.commit == "n_files" and self.n_files is None:
            raise ValueError("commit: n_files needs n_files: <integer> or n_files: expected")
        if self.commit != "n_files" and self.n_files is not None:
            raise ValueError(f"n_files only applies to commit: n_files, not {self.commit}")
        if isinstance(self.n_files, int) and self.n_files < 1:
            raise ValueError("n_files must be at least 1")
        if self.commit == "on_file" and not self.on_file:
            raise ValueError("commit: on_file needs on_file: [dependencies]")
        if self.commit == "on_file" and any(c in self.match for c in "*?"):
            raise ValueError("an on_file rule names one concrete directory (no glob in match)")
        return self

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled match pattern."""
        return glob_to_regex(self.match)

    @property
    def commits_directory(self) -> bool:
        """False for on_close, whose files are committed one by one."""
        return self.commit != "on_close"

    @property
    def fires_each_file(self) -> bool:
        """True when each file is announced as soon as it is committed."""
        return self.commit == "on_close" or self.fire == "no_update"


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule] = Field(min_length=1)


@dataclass(frozen=True)
class RuleSet:
    """The rules of one broker, with patterns already under the namespace."""

    rules: tuple[Rule, ...]

    @classmethod
    def parse(cls, text: str, namespace: str = "", source: str = "<rules>") -> RuleSet:
        """Parse rules YAML.

        Args:
            text: the YAML text.
            namespace: key prefix prepended to every pattern and dependency ('' or ending with '/').
            source: file name for error messages.

        Raises:
            RulesError: malformed YAML or an invalid rule; the message names the rule and field.
        """
        try:
            data = yaml.safe_load(text)
            parsed = _RulesFile.model_validate(data)
        except yaml.YAMLError as exc:
            raise RulesError(f"{source}: not valid YAML: {exc}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RulesError(f"{source}: {where}: {first['msg']}") from exc
        ns = namespace_prefix(namespace)
        rules = tuple(
            r.model_copy(update={"match": ns + r.match, "on_file": tuple(ns + d for d in r.on_file)})
            for r in parsed.rules
        )
        return cls(rules=rules)

    @classmethod
    def load(cls, path: str | Path, namespace: str = "") -> RuleSet:
        """Read and parse a rules file (see :meth:`parse`)."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RulesError(f"cannot read rules file {path}: {exc}") from exc
        return cls.parse(text, namespace, str(path))

    def rule_for(self, directory: str) -> Rule | None:
        """The first rule whose pattern matches ``directory`` exactly, or None."""
        return next((r for r in self.rules if r.regex.match(directory)), None)

    def directory_of(self, key: str) -> tuple[str, Rule] | None:
        """The deepest ancestor directory of an object key that a rule matches, with that rule."""
        parts = key.split("/")[:-1]
        for depth in range(len(parts), 0, -1):
            directory = "/".join(parts[:depth]) + "/"
            rule = self.rule_for(directory)
            if rule is not None:
                return directory, rule
        return None

    def listing_prefixes(self) -> Sequence[str]:
        """Literal prefixes to list when reconciling lost notifications (the part of each pattern before a glob)."""
        # Cut at the last '/' before the first glob: "prep/2010*/" must list "prep/", not "prep/2010".
        heads = (re.split(r"[*?]", r.match, maxsplit=1)[0] for r in self.rules)
        prefixes = {head[: head.rfind("/") + 1] for head in heads}
        return sorted(p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes))

    def on_file_directories(self) -> list[tuple[str, Rule]]:
        """Concrete directories of on_file rules (they exist before any file of theirs does)."""
        return [(r.match, r) for r in self.rules if r.commit == "on_file"]


DEFAULT_RULES = """\
# xcorrflow default rules: one directory per time window.
rules:
  - match: "prep/*/"
    commit: n_files
    n_files: expected
    fire: no_update
    deadline: 15m
  - match: "ccf/*/"
    commit: on_termination
    fire: update
"""
