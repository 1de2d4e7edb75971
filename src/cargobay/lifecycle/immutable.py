"""Immutable tags: rules of repository globs and tag regular expressions (`immutable_tags`).

A tag a rule covers may be pushed the first time, and pushed again with the same manifest
(clients re-push), but never moved to another manifest nor deleted, by tag or with its manifest.
The registry names the rule that refused; the metadata store checks that a covered tag does not
move atomically with writing it (`MetadataStore.put_manifest`'s `fixed_tags`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cargobay.auth.policy import repository_matches
from cargobay.config import ImmutableTagRuleConfig


@dataclass(frozen=True, slots=True)
class ImmutableTagRule:
    index: int  # its position in `immutable_tags`, to name it
    repositories: tuple[str, ...]
    tags: tuple[re.Pattern[str], ...]

    def covers(self, repository: str, tag: str) -> bool:
        return repository_matches(repository, self.repositories) and any(
            pattern.search(tag) for pattern in self.tags
        )

    def describe(self) -> str:
        """As in the config: immutable_tags[0]: repositories ["release/*"], tags ["^v[0-9]"]."""
        patterns = [pattern.pattern for pattern in self.tags]
        return (
            f"immutable_tags[{self.index}]: repositories {_quoted(self.repositories)},"
            f" tags {_quoted(patterns)}"
        )

    def refusal(self, repository: str, tag: str) -> str:
        return f'tag "{tag}" of "{repository}" is immutable ({self.describe()})'


class ImmutableTags:
    def __init__(self, rules: Sequence[ImmutableTagRule] = ()) -> None:
        self.rules = tuple(rules)

    @classmethod
    def from_config(cls, configs: Sequence[ImmutableTagRuleConfig]) -> ImmutableTags:
        """Rules from checked settings (load_config refuses invalid regular expressions)."""
        return cls(
            [
                ImmutableTagRule(
                    index, tuple(rule.repositories), tuple(re.compile(t) for t in rule.tags)
                )
                for index, rule in enumerate(configs)
            ]
        )

    def rule_for(self, repository: str, tag: str) -> ImmutableTagRule | None:
        """The first rule that makes the tag immutable, if any."""
        return next((rule for rule in self.rules if rule.covers(repository, tag)), None)

    def fixed(self, repository: str, tags: Iterable[str]) -> list[str]:
        """Those of `tags` that are immutable in the repository."""
        if not self.rules:
            return []
        return [tag for tag in tags if self.rule_for(repository, tag) is not None]


def _quoted(items: Iterable[str]) -> str:
    # Not JSON: a pattern must read as the user wrote it, without escaped backslashes.
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"
