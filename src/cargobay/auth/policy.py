"""Access policy: which users may pull, push or delete in which repositories.

Rules are checked in order; access is granted if any rule grants it. A rule names users (a user
name, `*` for any authenticated user, `anonymous` for requests without credentials), repository
patterns (shell-style globs; `*` also matches `/`), and actions (`pull`, `push`, `delete`, `*`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

ACTIONS = ("pull", "push", "delete")
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Rule:
    users: tuple[str, ...]
    repositories: tuple[str, ...]
    actions: tuple[str, ...]

    def grants(self, user: str | None, repository: str, action: str) -> bool:
        who = ANONYMOUS if user is None else user
        return (
            any(u == who or (u == "*" and user is not None) for u in self.users)
            and ("*" in self.actions or action in self.actions)
            and repository_matches(repository, self.repositories)
        )


def repository_matches(repository: str, patterns: Iterable[str]) -> bool:
    """Whether the repository name matches one of the shell-style globs (`*` also matches
    `/`), as in access rules and every other setting that names repositories by glob."""
    return any(fnmatchcase(repository, pattern) for pattern in patterns)


# Without rules: every authenticated user may do everything, anonymous users nothing.
DEFAULT_RULES = (Rule(users=("*",), repositories=("*",), actions=("*",)),)


class AccessPolicy:
    def __init__(self, rules: tuple[Rule, ...] = DEFAULT_RULES) -> None:
        self.rules = rules

    def allows(self, user: str | None, repository: str, action: str) -> bool:
        return any(rule.grants(user, repository, action) for rule in self.rules)
