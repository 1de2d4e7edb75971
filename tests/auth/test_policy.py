from __future__ import annotations

import pytest

from cargobay.auth.policy import DEFAULT_RULES, AccessPolicy, Rule

POLICY = AccessPolicy(
    (
        Rule(users=("*",), repositories=("*",), actions=("pull",)),
        Rule(users=("alice",), repositories=("team/*",), actions=("push", "delete")),
        Rule(users=("anonymous",), repositories=("public/*",), actions=("pull",)),
        Rule(users=("admin",), repositories=("*",), actions=("*",)),
    )
)


@pytest.mark.parametrize(
    ("user", "repository", "action", "allowed"),
    [
        ("bob", "team/app", "pull", True),
        ("bob", "team/app", "push", False),
        ("alice", "team/app", "push", True),
        ("alice", "team/sub/app", "delete", True),  # * matches across /
        ("alice", "teams/app", "push", False),
        ("alice", "other/app", "push", False),
        (None, "public/x", "pull", True),
        (None, "public/x", "push", False),
        (None, "team/app", "pull", False),  # "*" means signed-in users only
        ("admin", "anything/at/all", "delete", True),
    ],
)
def test_rules(user: str | None, repository: str, action: str, allowed: bool) -> None:
    assert POLICY.allows(user, repository, action) is allowed


def test_default_rules_let_signed_in_users_do_everything() -> None:
    policy = AccessPolicy(DEFAULT_RULES)
    assert policy.allows("anyone", "x/y", "delete")
    assert not policy.allows(None, "x/y", "pull")
