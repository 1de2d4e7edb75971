"""Docker token-auth scopes: `repository:<name>:<actions>`, `registry:catalog:*`.

A repository name may itself contain `:` (a `host:port/` prefix), so the type ends at the first
colon and the actions start after the last one.
"""

from __future__ import annotations

from dataclasses import dataclass

REPOSITORY_ACTIONS = ("pull", "push", "delete")


@dataclass(frozen=True, slots=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """None for a scope that does not parse (the token server ignores those)."""
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep and sep2 and kind and name):
            return None
        return cls(kind, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """Scopes from repeated `scope` parameters, each possibly holding several, space-separated."""
    scopes = []
    for value in values:
        for text in value.split():
            scope = Scope.parse(text)
            if scope is not None:
                scopes.append(scope)
    return scopes
