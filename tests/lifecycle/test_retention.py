"""Retention policies over HTTP and `cargobay retention`, on both setups: which tags and
manifests each rule keeps or deletes (and says why), index and referrer graphs, immutable tags,
dry runs, pull times, pushes racing a run, the periodic run and its webhook events.

Push times are set in the past directly in the metadata database (`backdate`), as an operator's
registry would have them after weeks of pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    canonical,
    digest_of,
    push_artifact,
    push_image,
)
from tests.api.helpers import push_manifest as put_manifest
from tests.conftest import BACKENDS
from tests.lifecycle.gc_setup import GCSetup, index_of, pull_exact, start_gc_setup, wait_until
from tests.notifications.receiver import Receiver

DAY = 86400.0
MANIFEST_TYPES = f"{OCI_INDEX},{OCI_MANIFEST}"

POLICIES: list[dict[str, Any]] = [
    {"repositories": ["keep/exempt/*"]},  # first match wins: nothing is deleted there
    {
        "repositories": ["keep/*"],
        "keep_tags": {"patterns": ["^v[0-9]"], "most_recent": 2, "pushed_within": "10d"},
    },
    {"repositories": ["pulled/*"], "keep_tags": {"pulled_within": "1h"}},
    {"repositories": ["untagged/*"], "delete_untagged_after": "1d"},
    {"repositories": ["referrers/*"], "delete_untagged_after": "1d", "delete_referrers": True},
    {"repositories": ["immutable/*"], "keep_tags": {"most_recent": 1}},
    {
        "repositories": ["race/*"],
        "keep_tags": {"patterns": ["^keep"], "pushed_within": "1d"},
        "delete_untagged_after": "1d",
    },
]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def manual(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[GCSetup]:
    """Policies applied only by `cargobay retention`; webhook delete events to `receiver`."""
    setup = start_gc_setup(
        request.param,
        tmp_path_factory.mktemp("retention"),
        request,
        {"enabled": False},
        retention={"interval_seconds": 3600, "policies": POLICIES},
        immutable_tags=[{"repositories": ["immutable/*"], "tags": ["^v"]}],
        notifications={
            "endpoints": [{"url": receiver.url(f"/{request.param}"), "actions": ["delete"]}]
        },
    )
    yield setup
    setup.server.stop()


# -- helpers ------------------------------------------------------------------------------------
def sql(setup: GCSetup, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """Run a statement (? placeholders) on the registry's metadata database."""
    if setup.store is None:
        path = setup.server.data_dir / "metadata.db"
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            rows = db.execute(statement, params).fetchall()
            db.commit()
            return rows
    parts = statement.split("?")
    numbered = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(setup.config["metadata"]["url"])
        try:
            return [tuple(row) for row in await conn.fetch(numbered, *params)]
        finally:
            await conn.close()

    return asyncio.run(run())


_REPOSITORY = "(SELECT id FROM repositories WHERE name = ?)"


def backdate(
    setup: GCSetup, repository: str, days: float, *, tag: str | None = None, digest: str = ""
) -> None:
    """Make a tag, or a manifest, look pushed `days` ago."""
    when = time.time() - days * DAY
    if tag is not None:
        sql(
            setup,
            f"UPDATE tags SET updated_at = ? WHERE repository_id = {_REPOSITORY} AND name = ?",
            when,
            repository,
            tag,
        )
    else:
        sql(
            setup,
            f"UPDATE manifests SET created_at = ? WHERE repository_id = {_REPOSITORY}"
            " AND digest = ?",
            when,
            repository,
            digest,
        )


def pulled_at(setup: GCSetup, repository: str, digest: str) -> float | None:
    rows = sql(
        setup,
        f"SELECT pulled_at FROM manifests WHERE repository_id = {_REPOSITORY} AND digest = ?",
        repository,
        digest,
    )
    return rows[0][0] if rows else None


def retention(setup: GCSetup, *args: str, env: dict[str, str] | None = None) -> str:
    """`cargobay retention` against the registry's configuration; its output."""
    command = [sys.executable, "-m", "cargobay", "retention", "--config", str(setup.config_file)]
    command += ["--data-dir", str(setup.server.data_dir), *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CARGOBAY_")}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=environ | (env or {})
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def name(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


def tags_of(client: httpx.Client, repository: str) -> list[str]:
    r = client.get(f"/v2/{repository}/tags/list")
    assert r.status_code == 200, r.text
    return sorted(r.json()["tags"] or [])


def exists(client: httpx.Client, repository: str, digest: str) -> bool:
    r = client.head(f"/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES})
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def push_index(
    client: httpx.Client, repository: str, reference: str | None, children: list[tuple[bytes, str]]
) -> tuple[bytes, str]:
    body = index_of(children)
    put_manifest(client, repository, reference or digest_of(body), body, OCI_INDEX)
    return body, digest_of(body)


def push_index_of_indexes(
    client: httpx.Client, repository: str, reference: str | None, child: tuple[bytes, str]
) -> tuple[bytes, str]:
    body = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_INDEX, "digest": child[1], "size": len(child[0])}],
        }
    )
    put_manifest(client, repository, reference or digest_of(body), body, OCI_INDEX)
    return body, digest_of(body)


# -- tags -----------------------------------------------------------------------------------------
def test_tags_kept_by_pattern_recency_and_push_time(manual: GCSetup) -> None:
    repo, exempt = name("keep"), name("keep/exempt")
    with manual.client() as client:
        for tag, days in (("v1", 100), ("r1", 50), ("r2", 40), ("r3", 30), ("r4", 20), ("new", 0)):
            push_image(client, repo, tag)
            backdate(manual, repo, days, tag=tag)
        push_image(client, exempt, "old")
        backdate(manual, exempt, 100, tag="old")

        preview = retention(manual, "--dry-run")
        assert tags_of(client, repo) == ["new", "r1", "r2", "r3", "r4", "v1"]  # nothing changed
        for tag, days in (("r1", 50), ("r2", 40)):
            line = (
                f"tag {repo}:{tag}: not among the 2 most recent, pushed {days}d ago,"
                " no pattern matches"
            )
            assert line in preview, preview
        assert "would be deleted" in preview

        output = retention(manual)
        # v1: pattern; new, r4: the 2 most recent (new also pushed within 10 days).
        assert tags_of(client, repo) == ["new", "r4", "v1"]
        assert tags_of(client, exempt) == ["old"]
        assert f"tag {repo}:r3: not among the 2 most recent, pushed 30d ago" in output
        assert f"{exempt}" not in output
        # No delete_untagged_after: the manifests of deleted tags stay, untagged.
        state = sql(
            manual, f"SELECT count(*) FROM manifests WHERE repository_id = {_REPOSITORY}", repo
        )
        assert state == [(6,)]


def test_dry_run_in_the_config_deletes_nothing(manual: GCSetup) -> None:
    repo = name("keep")
    with manual.client() as client:
        for tag in ("a", "b", "c"):
            push_image(client, repo, tag)
            backdate(manual, repo, 20, tag=tag)
        output = retention(manual, env={"CARGOBAY_RETENTION__DRY_RUN": "true"})
        assert f"tag {repo}:a: not among the 2 most recent, pushed 20d ago" in output
        assert "dry run: nothing changed" in output
        assert tags_of(client, repo) == ["a", "b", "c"]


def test_tags_kept_by_a_recent_pull(manual: GCSetup) -> None:
    repo = name("pulled")
    with manual.client() as client:
        _, pulled_digest = push_image(client, repo, "pulled")
        _, idle_digest = push_image(client, repo, "idle")
        for tag in ("pulled", "idle"):
            backdate(manual, repo, 30, tag=tag)
        before = time.time()
        r = client.get(f"/v2/{repo}/manifests/pulled", headers={"Accept": MANIFEST_TYPES})
        assert r.status_code == 200
        assert client.head(f"/v2/{repo}/manifests/idle").status_code == 200  # HEAD: no pull
        # Written in batches by the worker that served the GET: wait for its flush.
        wait_until(
            lambda: (pulled_at(manual, repo, pulled_digest) or 0) >= before - 1, "pull recorded"
        )
        assert pulled_at(manual, repo, idle_digest) is None
        output = retention(manual)
        assert tags_of(client, repo) == ["pulled"]
        assert f"tag {repo}:idle: pushed 30d ago, never pulled" in output


def test_immutable_tags_are_never_deleted(manual: GCSetup) -> None:
    repo = name("immutable")
    with manual.client() as client:
        for tag, days in (("v1", 40), ("v2", 30), ("old", 20), ("latest", 1)):
            push_image(client, repo, tag)
            backdate(manual, repo, days, tag=tag)
        retention(manual)
        assert tags_of(client, repo) == ["latest", "v1", "v2"]


# -- untagged manifests, indexes, referrers -----------------------------------------------------
def test_untagged_manifests_go_after_the_duration(manual: GCSetup) -> None:
    repo = name("untagged")
    with manual.client() as client:
        _, old = push_image(client, repo)
        _, young = push_image(client, repo)
        _, tagged = push_image(client, repo, "t")
        for digest in (old, young, tagged):
            backdate(manual, repo, 3, digest=digest)
        backdate(manual, repo, 0.5, digest=young)
        output = retention(manual)
        assert f"manifest {repo}@{old}: untagged, pushed 3d ago" in output
        assert (exists(client, repo, old), exists(client, repo, young)) == (False, True)
        pull_exact(client, repo, tagged)


def test_an_untagged_manifest_pushed_again_is_young_again(manual: GCSetup) -> None:
    """A client pushing an old untagged manifest again by digest (as buildx re-pushes an
    index's children before the index) makes it young: the run keeps it, and the index push
    that follows finds it."""
    repo = name("untagged")
    with manual.client() as client:
        child = push_image(client, repo)
        backdate(manual, repo, 3, digest=child[1])
        put_manifest(client, repo, child[1], child[0], OCI_MANIFEST)
        output = retention(manual)
        assert child[1] not in output, output
        assert exists(client, repo, child[1])
        _, index = push_index(client, repo, "multi", [child])
        pull_exact(client, repo, index)


def test_index_graphs(manual: GCSetup) -> None:
    """Tagged index with untagged children: everything stays. Untagged index with untagged
    children: all of it goes in one run. A child shared by two indexes survives the deletion of
    one. Three levels deep, tagged and untagged."""
    repo = name("untagged")
    with manual.client() as client:
        kept_children = [push_image(client, repo) for _ in range(2)]
        kept_index = push_index(client, repo, "multi", kept_children)
        gone_children = [push_image(client, repo) for _ in range(2)]
        gone_index = push_index(client, repo, None, gone_children)
        shared = push_image(client, repo)
        beside_shared = push_image(client, repo)
        shared_by_gone = push_index(client, repo, None, [shared, beside_shared])
        shared_by_kept = push_index(client, repo, "shared", [shared])
        leaf = push_image(client, repo)
        middle = push_index(client, repo, None, [leaf])
        top = push_index_of_indexes(client, repo, "nested", middle)
        gone_leaf = push_image(client, repo)
        gone_middle = push_index(client, repo, None, [gone_leaf])
        gone_top = push_index_of_indexes(client, repo, None, gone_middle)
        everything = [
            *kept_children, kept_index, *gone_children, gone_index, shared, beside_shared,
            shared_by_gone, shared_by_kept, leaf, middle, top, gone_leaf, gone_middle, gone_top,
        ]  # fmt: skip
        for _, digest in everything:
            backdate(manual, repo, 5, digest=digest)

        retention(manual)
        for body in [kept_index, shared_by_kept, top]:
            pull_exact(client, repo, body[1])  # with every child, at any depth
        gone = [*gone_children, gone_index, beside_shared, shared_by_gone]
        gone += [gone_leaf, gone_middle, gone_top]
        assert [d for _, d in gone if exists(client, repo, d)] == []


def test_referrers_stay_with_their_subject_and_go_with_it_when_the_policy_says(
    manual: GCSetup,
) -> None:
    plain, follow = name("untagged"), name("referrers")
    with manual.client() as client:
        found: dict[str, dict[str, str]] = {}
        for repo in (plain, follow):
            tagged = push_image(client, repo, "t")
            subject = push_image(client, repo)
            _, signature, _ = push_artifact(client, repo, tagged)  # of a kept subject
            _, old_sbom, _ = push_artifact(client, repo, subject)
            _, young_sbom, _ = push_artifact(client, repo, subject)
            for digest in (tagged[1], subject[1], signature, old_sbom):
                backdate(manual, repo, 5, digest=digest)
            found[repo] = {
                "subject": subject[1],
                "signature": signature,
                "old": old_sbom,
                "young": young_sbom,
            }
        output = retention(manual)
        for repo in (plain, follow):
            d = found[repo]
            assert exists(client, repo, d["signature"])  # its subject is kept
            assert not exists(client, repo, d["subject"])
            assert not exists(client, repo, d["old"])  # old, and its subject is gone
        # Without delete_referrers a young referrer stays; with it, it goes with its subject.
        assert exists(client, plain, found[plain]["young"])
        assert not exists(client, follow, found[follow]["young"])
        assert (
            f"manifest {follow}@{found[follow]['young']}: referrer of"
            f" {found[follow]['subject']}, which goes (delete_referrers)"
        ) in output
        r = client.get(f"/v2/{follow}/referrers/{found[follow]['subject']}")
        assert r.status_code == 200 and r.json()["manifests"] == []


# -- races, webhooks, the periodic run ----------------------------------------------------------
def test_pushes_racing_a_run_are_never_lost(manual: GCSetup) -> None:
    """While `cargobay retention` deletes old tags and untagged manifests, clients tag the
    manifests being deleted, move the tags being deleted, and push indexes over them (some after
    pushing the child again by digest, which must then keep it): every push that succeeded is
    there afterwards."""
    repos = [name("race") for _ in range(12)]
    images: dict[str, dict[str, tuple[bytes, str]]] = {}
    with manual.client() as client:
        for repo in repos:
            untagged = [push_image(client, repo) for _ in range(5)]
            old_tagged = push_image(client, repo, "old")
            newer = push_image(client, repo)
            for _, digest in [*untagged, old_tagged]:
                backdate(manual, repo, 5, digest=digest)
            backdate(manual, repo, 5, tag="old")
            images[repo] = {f"u{i}": image for i, image in enumerate(untagged)}
            images[repo] |= {"old": old_tagged, "newer": newer}
    pushed: list[tuple[str, str, str]] = []  # (repository, tag, digest) answered 201
    indexes: list[tuple[str, str]] = []
    failures: list[str] = []
    done = threading.Event()

    def push() -> None:
        try:
            push_until_done()
        except Exception as exc:  # a timeout or a non-JSON 500 must fail the test, not the thread
            failures.append(f"pusher: {exc!r}")

    def push_until_done() -> None:
        with manual.client() as client:
            while not done.is_set():
                for repo in repos:
                    for key in ("u0", "u1", "u2"):
                        body, digest = images[repo][key]
                        tag = f"keep-{key}"
                        r = client.put(
                            f"/v2/{repo}/manifests/{tag}",
                            content=body,
                            headers={"Content-Type": OCI_MANIFEST},
                        )
                        if r.status_code == 201:
                            pushed.append((repo, tag, digest))
                        else:
                            failures.append(f"{r.status_code} {r.text}")
                    body, digest = images[repo]["newer"]
                    r = client.put(
                        f"/v2/{repo}/manifests/old",
                        content=body,
                        headers={"Content-Type": OCI_MANIFEST},
                    )
                    if r.status_code == 201:
                        pushed.append((repo, "old", digest))
                    else:
                        failures.append(f"{r.status_code} {r.text}")
                    index = index_of([images[repo]["u3"]])
                    r = client.put(
                        f"/v2/{repo}/manifests/keep-index",
                        content=index,
                        headers={"Content-Type": OCI_INDEX},
                    )
                    if r.status_code == 201:
                        indexes.append((repo, digest_of(index)))
                    elif r.json()["errors"][0]["code"] != "MANIFEST_BLOB_UNKNOWN":
                        failures.append(f"{r.status_code} {r.text}")
                    # As buildx does: the child again by digest, then the index, which must
                    # find it (the child pushed again is young).
                    body, digest = images[repo]["u4"]
                    r = client.put(
                        f"/v2/{repo}/manifests/{digest}",
                        content=body,
                        headers={"Content-Type": OCI_MANIFEST},
                    )
                    index = index_of([images[repo]["u4"]])
                    r2 = client.put(
                        f"/v2/{repo}/manifests/keep-rebuilt",
                        content=index,
                        headers={"Content-Type": OCI_INDEX},
                    )
                    if (r.status_code, r2.status_code) == (201, 201):
                        indexes.append((repo, digest_of(index)))
                    else:
                        failures.append(f"{r.status_code} {r2.status_code} {r2.text}")

    pusher = threading.Thread(target=push)
    pusher.start()
    try:
        retention(manual)
    finally:
        done.set()
        pusher.join()
    assert failures == []
    assert pushed
    with manual.client() as client:
        for repo, tag, digest in pushed:
            if tag == "old":
                continue  # checked below
            r = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES})
            assert r.status_code == 200 and digest_of(r.content) == digest, (repo, tag)
            pull_exact(client, repo, digest)
        for repo in repos:
            if any(p[0] == repo and p[1] == "old" for p in pushed):
                r = client.get(f"/v2/{repo}/manifests/old", headers={"Accept": MANIFEST_TYPES})
                assert digest_of(r.content) == images[repo]["newer"][1], repo
        for repo, digest in indexes:
            pull_exact(client, repo, digest)


def test_deletions_send_webhook_delete_events(manual: GCSetup, receiver: Receiver) -> None:
    repo = name("referrers")
    path = "/" + ("embedded" if manual.store is None else "s3+postgres")
    with manual.client() as client:
        _, digest = push_image(client, repo, "t")
        backdate(manual, repo, 5, digest=digest)
        assert client.delete(f"/v2/{repo}/manifests/t").status_code == 202  # an API delete
        retention(manual)
        assert not exists(client, repo, digest)

    def events() -> list[dict[str, Any]]:
        return [e for e in receiver.accepted(path) if e["target"]["repository"] == repo]

    wait_until(lambda: len(events()) >= 2, "delete events delivered")
    api, policy = events()
    assert api["target"] == {"repository": repo, "tag": "t"}
    assert policy["action"] == "delete"
    assert policy["target"] == {"digest": digest, "repository": repo}
    assert policy["actor"] == {}
    assert policy["request"] == {"id": "", "addr": "", "host": "", "method": "", "useragent": ""}
    assert set(policy["source"]) == {"addr", "instanceID"}
    assert set(policy) == set(api)


@pytest.mark.parametrize("backend", BACKENDS)
def test_policies_run_periodically(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    setup = start_gc_setup(
        backend,
        tmp_path_factory.mktemp("retention-live"),
        request,
        {"enabled": False},
        retention={
            "interval_seconds": 1,
            "policies": [{"repositories": ["*"], "keep_tags": {"most_recent": 1}}],
        },
    )
    try:
        with setup.client() as client:
            push_image(client, "live/app", "first")
            push_image(client, "live/app", "second")
            backdate(setup, "live/app", 2, tag="first")
            wait_until(lambda: tags_of(client, "live/app") == ["second"], "the policy ran")
            wait_until(
                lambda: "retention: 1 tags and 0 manifests deleted" in setup.server.log(), "log"
            )
            # A pull noted just before the registry stops is written on the way out.
            before = time.time()
            r = client.get("/v2/live/app/manifests/second", headers={"Accept": MANIFEST_TYPES})
            assert r.status_code == 200
    finally:
        setup.server.stop()
    assert (pulled_at(setup, "live/app", digest_of(r.content)) or 0) >= before - 1
