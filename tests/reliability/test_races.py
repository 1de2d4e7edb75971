"""Races: 50 concurrent clients push the same blob, the same manifest, move the same tag, delete
while others push, and mount from a repository while it is being deleted. Both setups: files +
SQLite (one registry, 2 workers) and S3 (SeaweedFS) + PostgreSQL (3 instances sharing the
database and the bucket prefix, the clients spread over them).

Whatever the interleaving: no request gets a 5xx, the servers log no error, every answer is one
the spec allows, and the final state is valid and the same from every instance and connection.

Every client has its own connection, opened before a barrier releases them all at once. Where
the outcome depends on the interleaving, the checks use real-time order only (each request is
timed with time.monotonic()): a request sent after another was answered must see its effect,
one answered before another was sent must not.

The registries run with `registry.auto_mount: false`: with it on, a mount finds any blob the
registry ever stored (bytes are only reclaimed by a garbage collection that does not exist yet),
so a mount racing the deletion of its source would always succeed and test nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from threading import BrokenBarrierError
from typing import Any, TypeVar

import asyncpg
import httpx
import obstore
import pytest
from obstore.store import S3Store

from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    canonical,
    descriptor,
    digest_of,
    image_manifest,
    location_url,
    push_blob,
    push_manifest,
    with_query,
)
from tests.conftest import BACKENDS, scaleout_config
from tests.server import RegistryProcess

T = TypeVar("T")

CLIENTS = 50
INSTANCES = 3  # s3+postgres: instances on one database and bucket prefix
TIMEOUT = 60.0  # per request, and for a barrier or a wait on other clients
OCTET_STREAM = {"Content-Type": "application/octet-stream"}
MANIFEST_TYPE = {"Content-Type": OCI_MANIFEST}
ACCEPT = {"Accept": OCI_MANIFEST}
UPLOAD_MODES = ("monolithic", "single", "chunked", "streamed")
REGISTRY_SETTINGS: dict[str, object] = {"registry": {"auto_mount": False}}
PROBLEM = re.compile(r"Traceback| ERROR | WARNING | CRITICAL |status=5\d\d")
ACCESS_LINE = re.compile(r" cargobay\.access \[(\d+)\] ")
# One TLS context for every client: building one per client (httpx's default) costs 50 ms of
# CPU, and a race opens 150 clients. (Everything here is plain HTTP on loopback anyway.)
TLS = ssl.create_default_context()


# -- the registries ----------------------------------------------------------------------------
@dataclass
class Cluster:
    """One registry as its clients see it: one or more instances on shared stores."""

    servers: list[RegistryProcess]
    data_dir: Path | None = None  # embedded: blobs, uploads and metadata.db here
    store: S3Store | None = None  # s3+postgres: the bucket, under `prefix`
    prefix: str = ""
    database_url: str = ""
    _log_marks: list[int] = field(default_factory=list)
    _staged_before: set[str] = field(default_factory=set)

    def connect(self, index: int) -> httpx.Client:
        """A client with its own connection to instance `index` (round robin)."""
        server = self.servers[index % len(self.servers)]
        return httpx.Client(base_url=server.url, timeout=TIMEOUT, follow_redirects=True, verify=TLS)

    @contextlib.contextmanager
    def views(self) -> Iterator[list[httpx.Client]]:
        """Fresh connections to every instance (at least 3: with 2 workers, each new
        connection goes to whichever worker accepts it)."""
        count = max(3, len(self.servers))
        clients = [self.connect(i) for i in range(count)]
        try:
            yield clients
        finally:
            for client in clients:
                client.close()

    # -- what a test leaves behind ---------------------------------------------------------
    def begin(self) -> None:
        self._log_marks = [len(server.log()) for server in self.servers]
        self._staged_before = self.staged()

    def assert_clean(self) -> None:
        """No error or warning (each is a failure: a store unavailable, a worker died) nor 5xx
        in any server's log since begin(), every worker of every instance served requests,
        no upload staging left behind."""
        for server, mark in zip(self.servers, self._log_marks, strict=True):
            text = server.log()[mark:]
            problems = [line for line in text.splitlines() if PROBLEM.search(line)]
            assert not problems, "\n".join(problems[:20])
            workers = set(ACCESS_LINE.findall(text))
            assert len(workers) == server.workers, f"{server.url}: served by {workers}"
        left = self.staged() - self._staged_before
        assert not left, f"upload staging left behind: {sorted(left)[:10]}"

    def staged(self) -> set[str]:
        """Staged bytes of uploads: files (embedded) or objects (S3)."""
        if self.data_dir is not None:
            folder = self.data_dir / "uploads"
            return {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()
        assert self.store is not None
        prefix = f"{self.prefix}/uploads/"
        return {meta["path"] for meta in obstore.list(self.store, prefix).collect()}

    def stored_blobs(self, digest: str) -> list[str]:
        """The digests of the copies the blob store holds of a blob (content-addressed: one,
        at its key)."""
        algorithm, encoded = digest.split(":")
        key = f"blobs/{algorithm}/{encoded[:2]}/{encoded}"
        if self.data_dir is not None:
            folder = self.data_dir / "blobs" / algorithm / encoded[:2]
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
            return [digest_of((folder / n).read_bytes()) for n in names if n.startswith(encoded)]
        assert self.store is not None
        folder_key = f"{self.prefix}/{key.rpartition('/')[0]}/"
        metas = obstore.list(self.store, folder_key).collect()
        keys = [m["path"] for m in metas if m["path"].startswith(f"{self.prefix}/{key}")]
        return [digest_of(obstore.get(self.store, k).bytes().to_bytes()) for k in keys]

    def count(self, table: str, column: str, value: str) -> int:
        """Rows of a metadata table with `column` = `value`."""
        if self.data_dir is not None:
            uri = f"file:{self.data_dir / 'metadata.db'}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
                row = db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (value,))
                return int(row.fetchone()[0])

        async def query() -> int:
            conn = await asyncpg.connect(self.database_url)
            try:
                sql = f"SELECT count(*) FROM {table} WHERE {column} = $1"
                return int(await conn.fetchval(sql, value))
            finally:
                await conn.close()

        return asyncio.run(query())


@pytest.fixture(scope="module", params=BACKENDS)
def registries(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("races")
    if request.param == "embedded":
        server = RegistryProcess(root / "data", workers=2, config=REGISTRY_SETTINGS)
        cluster = Cluster([server], data_dir=server.data_dir)
    else:
        seaweedfs = request.getfixturevalue("seaweedfs")
        postgres = request.getfixturevalue("postgres")
        name = f"races{uuid.uuid4().hex[:8]}"
        database_url = postgres.create_database(name)
        config = {**scaleout_config(seaweedfs, database_url, name), **REGISTRY_SETTINGS}
        servers = [
            RegistryProcess(root / f"data{i}", workers=1, config=config) for i in range(INSTANCES)
        ]
        store = seaweedfs.store()
        cluster = Cluster(servers, store=store, prefix=name, database_url=database_url)
    try:
        with ThreadPoolExecutor(len(cluster.servers)) as pool:  # start together: faster
            list(pool.map(RegistryProcess.start, cluster.servers))
        yield cluster
    finally:
        with ThreadPoolExecutor(len(cluster.servers)) as pool:
            list(pool.map(RegistryProcess.stop, cluster.servers))


@pytest.fixture
def cluster(registries: Cluster) -> Cluster:
    registries.begin()
    return registries


# -- concurrent clients ------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One request of a racing client, with when it was sent and when it was answered."""

    method: str
    path: str
    status: int
    started: float
    answered: float
    about: str  # what it concerns: a digest, a tag
    response: httpx.Response

    def before(self, other: Call) -> bool:
        """Answered before `other` was sent: real-time order, whatever the servers did."""
        return self.answered < other.started


class Abandoned(Exception):
    """A client gave up because another one failed."""


class Race:
    """`count` clients, each on its own connection, released together by a barrier."""

    def __init__(self, cluster: Cluster, count: int) -> None:
        self.cluster = cluster
        self.count = count
        self.barrier = threading.Barrier(count, timeout=TIMEOUT)
        self.failed = threading.Event()
        self.calls: list[Call] = []  # list.append is atomic
        self._progress = threading.Condition()
        self._done = 0
        self._signals: set[str] = set()

    def run(self, work: Callable[[int, Client], T]) -> list[T]:
        # Each client also has a connection to each other instance (embedded: a second one,
        # possibly to the other worker), to continue its uploads through.
        connections = max(2, len(self.cluster.servers))

        def one(index: int) -> T:
            try:
                with contextlib.ExitStack() as stack:
                    https = [
                        stack.enter_context(self.cluster.connect(index + n))
                        for n in range(connections)
                    ]
                    for http in https:  # connected now: every client is ready at the start
                        assert http.get("/v2/").status_code == 200
                    self.barrier.wait()
                    return work(index, Client(self, https))
            except BaseException:
                self.failed.set()
                self.barrier.abort()
                with self._progress:
                    self._progress.notify_all()
                raise

        with ThreadPoolExecutor(self.count) as pool:
            futures = [pool.submit(one, i) for i in range(self.count)]
            errors = [e for e in (f.exception() for f in futures) if e is not None]
        # The first failure that is not a consequence of another client's failure.
        for error in sorted(errors, key=lambda e: isinstance(e, Abandoned | BrokenBarrierError)):
            raise error
        server_errors = [c for c in self.calls if c.status >= 500]
        assert not server_errors, [(c.method, c.path, c.status) for c in server_errors]
        return [f.result() for f in futures]

    def progressed(self) -> None:
        with self._progress:
            self._done += 1
            self._progress.notify_all()

    def signal(self, key: str) -> None:
        with self._progress:
            self._signals.add(key)
            self._progress.notify_all()

    def wait_for_progress(self, count: int) -> None:
        """Block until `count` progressed() calls (or another client failed)."""
        self._wait(lambda: self._done >= count)

    def signalled(self, key: str) -> bool:
        with self._progress:
            return key in self._signals

    def wait_for_signal(self, key: str) -> None:
        """Block until another client signal()s `key` (or another client failed)."""
        self._wait(lambda: key in self._signals)

    def _wait(self, condition: Callable[[], bool]) -> None:
        with self._progress:
            reached = self._progress.wait_for(lambda: condition() or self.failed.is_set(), TIMEOUT)
        if not reached or self.failed.is_set():
            raise Abandoned("the other clients did not get that far")

    def select(self, method: str, path: str, status: int | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and c.path == path and status in (None, c.status)
        ]


class Client:
    """A racing client: every request is recorded in the race's journal."""

    def __init__(self, race: Race, https: list[httpx.Client]) -> None:
        self.race = race
        self.https = https
        self.http = https[0]  # its own instance
        self._turn = 0

    def request(
        self, method: str, url: str, *, about: str = "", hop: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """`hop`: through the next of its connections, in turn (another instance)."""
        http = self.http
        if hop:
            self._turn += 1
            http = self.https[self._turn % len(self.https)]
        started = time.monotonic()
        response = http.request(method, url, **kwargs)
        answered = time.monotonic()
        path = httpx.URL(url).path
        self.race.calls.append(
            Call(method, path, response.status_code, started, answered, about, response)
        )
        return response


def expect(response: httpx.Response, status: int) -> httpx.Response:
    assert response.status_code == status, (
        response.request.method,
        str(response.request.url),
        response.status_code,
        response.text,
    )
    return response


def upload(client: Client, name: str, data: bytes, mode: str) -> httpx.Response:
    """Push a blob the way `mode` says, each request of an upload session through another
    instance than the one before; returns the final (201) response."""
    digest = digest_of(data)
    start = f"/v2/{name}/blobs/uploads/"
    if mode == "single":  # one POST with ?digest=
        r = client.request(
            "POST", start, params={"digest": digest}, content=data, headers=OCTET_STREAM
        )
        return expect(r, 201)
    location = expect(client.request("POST", start), 202).headers["Location"]
    if mode == "monolithic":  # POST, then PUT with the whole body
        r = client.request(
            "PUT",
            with_query(location, digest=digest),
            content=data,
            headers=OCTET_STREAM,
            hop=True,
        )
        return expect(r, 201)
    if mode == "streamed":  # POST, one PATCH without Content-Range, PUT without a body
        r = expect(client.request("PATCH", location_url(location), content=data, hop=True), 202)
        assert r.headers["Range"] == f"0-{len(data) - 1}"
        r = client.request("PUT", with_query(r.headers["Location"], digest=digest), hop=True)
        return expect(r, 201)
    assert mode == "chunked"  # POST, two PATCHes with Content-Range, PUT with the last chunk
    third = len(data) // 3
    for begin, end in ((0, third), (third, 2 * third)):
        r = client.request(
            "PATCH",
            location_url(location),
            content=data[begin:end],
            headers={**OCTET_STREAM, "Content-Range": f"{begin}-{end - 1}"},
            hop=True,
        )
        expect(r, 202)
        assert r.headers["Range"] == f"0-{end - 1}"
        location = r.headers["Location"]
    r = client.request(
        "PUT",
        with_query(location, digest=digest),
        content=data[2 * third :],
        headers={**OCTET_STREAM, "Content-Range": f"{2 * third}-{len(data) - 1}"},
        hop=True,
    )
    return expect(r, 201)


def assert_blob(http: httpx.Client, name: str, data: bytes, *, read: bool = True) -> None:
    """The blob is in the repository; `read`: with the right bytes (a GET, which on S3 is a
    redirect and a second request), else HEAD only."""
    digest = digest_of(data)
    if read:
        r = expect(http.get(f"/v2/{name}/blobs/{digest}"), 200)
        assert r.content == data, f"{name}: {digest} has other bytes"
    head = expect(http.head(f"/v2/{name}/blobs/{digest}"), 200)
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest


def repository() -> str:
    return f"race/{uuid.uuid4().hex[:10]}"


def json_blob(**fields: object) -> bytes:
    return json.dumps({**fields, "nonce": uuid.uuid4().hex}).encode()


# -- 1. the same blob --------------------------------------------------------------------------
def test_fifty_clients_push_the_same_blob(cluster: Cluster) -> None:
    name = repository()
    data = os.urandom(96 * 1024 + 7)
    digest = digest_of(data)

    def target(index: int) -> str:  # one client in five pushes into a repository of its own
        return name if index % 5 else f"{name}-own{index}"

    def push(index: int, client: Client) -> None:
        r = upload(client, target(index), data, UPLOAD_MODES[index % len(UPLOAD_MODES)])
        assert r.headers["Docker-Content-Digest"] == digest
        assert location_url(r.headers["Location"]) == f"/v2/{target(index)}/blobs/{digest}"
        # Readable at once, complete, while the others still push (and commit) it.
        assert_blob(client.http, target(index), data)

    Race(cluster, CLIENTS).run(push)

    repositories = sorted({target(i) for i in range(CLIENTS)})
    with cluster.views() as views:
        for n, http in enumerate(views):
            for repo in repositories:
                assert_blob(http, repo, data, read=n == 0)
    assert cluster.stored_blobs(digest) == [digest]  # one copy, complete
    assert cluster.count("blobs", "digest", digest) == 1
    assert cluster.count("repository_blobs", "digest", digest) == len(repositories)
    cluster.assert_clean()


# -- 2. the same manifest ----------------------------------------------------------------------
def test_fifty_clients_push_the_same_manifest(cluster: Cluster) -> None:
    name = repository()
    with cluster.connect(0) as http:
        config, _ = push_blob(http, name, json_blob(kind="config"))
        layer, _ = push_blob(http, name)
        base = canonical(image_manifest(config, [layer], annotations={"base": "yes"}))
        push_manifest(http, name, "base", base)
    body = canonical(image_manifest(config, [layer], subject=descriptor(OCI_MANIFEST, base)))
    digest = digest_of(body)

    def put(index: int, client: Client) -> None:
        reference, params = [
            (digest, None),
            ("v1", None),
            (digest, [("tag", "v1"), ("tag", "same")]),
        ][index % 3]
        r = client.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            content=body,
            headers=MANIFEST_TYPE,
            params=params,
        )
        expect(r, 201)
        assert r.headers["Docker-Content-Digest"] == digest
        assert location_url(r.headers["Location"]) == f"/v2/{name}/manifests/{digest}"
        assert r.headers["OCI-Subject"] == digest_of(base)
        got = expect(client.http.get(f"/v2/{name}/manifests/{reference}", headers=ACCEPT), 200)
        assert got.content == body

    Race(cluster, CLIENTS).run(put)

    with cluster.views() as views:
        for http in views:
            for reference in (digest, "v1", "same"):
                r = expect(http.get(f"/v2/{name}/manifests/{reference}", headers=ACCEPT), 200)
                assert r.content == body
                assert r.headers["Docker-Content-Digest"] == digest
            tags = expect(http.get(f"/v2/{name}/tags/list"), 200).json()["tags"]
            assert tags == ["base", "same", "v1"]
            referrers = expect(http.get(f"/v2/{name}/referrers/{digest_of(base)}"), 200)
            assert [m["digest"] for m in referrers.json()["manifests"]] == [digest]
    assert cluster.count("manifests", "digest", digest) == 1
    assert cluster.count("manifest_references", "manifest_digest", digest) == 2
    assert cluster.count("tags", "digest", digest) == 2
    cluster.assert_clean()


# -- 3. one tag, fifty manifests ---------------------------------------------------------------
def test_fifty_clients_move_the_same_tag(cluster: Cluster) -> None:
    name = repository()
    with cluster.connect(0) as http:
        config, _ = push_blob(http, name, json_blob(kind="config"))
        layer, _ = push_blob(http, name)
        bodies = [
            canonical(image_manifest(config, [layer], annotations={"n": str(i)}))
            for i in range(CLIENTS)
        ]
        # Half of them exist already: for those the race is about the tag only.
        for body in bodies[::2]:
            push_manifest(http, name, digest_of(body), body)
    digests = [digest_of(b) for b in bodies]

    # Two clients in three also move a second tag in the same request, naming the two in
    # either order.
    moves: list[tuple[str, list[tuple[str, str]]]] = [
        ("latest", []),
        ("<digest>", [("tag", "stable"), ("tag", "latest")]),
        ("latest", [("tag", "stable")]),
    ]

    def move(index: int, client: Client) -> None:
        reference, params = moves[index % len(moves)]
        if reference == "<digest>":
            reference = digests[index]
        r = client.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            content=bodies[index],
            headers=MANIFEST_TYPE,
            params=params,
            about=digests[index],
        )
        expect(r, 201)
        assert r.headers["Docker-Content-Digest"] == digests[index]
        # The tag points at one of the manifests, never at nothing.
        got = expect(client.http.get(f"/v2/{name}/manifests/latest", headers=ACCEPT), 200)
        assert got.headers["Docker-Content-Digest"] in digests

    race = Race(cluster, CLIENTS)
    race.run(move)

    def winners(views: list[httpx.Client]) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {"latest": set(), "stable": set()}
        for http in views:
            assert expect(http.get(f"/v2/{name}/tags/list"), 200).json()["tags"] == [
                "latest",
                "stable",
            ]
            for tag, found in seen.items():
                got = expect(http.get(f"/v2/{name}/manifests/{tag}", headers=ACCEPT), 200)
                assert got.content == bodies[digests.index(got.headers["Docker-Content-Digest"])]
                found.add(got.headers["Docker-Content-Digest"])
                head = expect(http.head(f"/v2/{name}/manifests/{tag}", headers=ACCEPT), 200)
                found.add(head.headers["Docker-Content-Digest"])
        return seen

    with cluster.views() as views:
        seen = winners(views)
        assert len(seen["latest"]) == 1, seen  # every instance and connection agrees
        assert len(seen["stable"]) == 1, seen
        movers = {"latest": set(digests), "stable": set(digests[1::3] + digests[2::3])}
        assert seen["stable"] <= movers["stable"]
        for tag, (winner,) in seen.items():  # no move of the tag came after the winner's
            (won,) = [c for c in race.calls if c.about == winner]
            later = [c.about for c in race.calls if c.about in movers[tag] and won.before(c)]
            assert not later, f"{tag} is {winner}, moved to {later} after that"
        for digest, body in zip(digests, bodies, strict=True):  # moving deletes no manifest
            got = expect(views[-1].get(f"/v2/{name}/manifests/{digest}", headers=ACCEPT), 200)
            assert got.content == body
        # The tag is not stuck: a later move is seen everywhere.
        loser = next(i for i in range(CLIENTS) if digests[i] not in seen["latest"])
        push_manifest(views[0], name, "latest", bodies[loser])
        assert winners(views)["latest"] == {digests[loser]}
    cluster.assert_clean()


# -- 4. deleting while pushing -----------------------------------------------------------------
BASES = 5  # images pushed before the race
PUSHERS = DELETERS = CLIENTS // 2


@dataclass(frozen=True)
class Image:
    config: bytes
    layers: list[bytes]
    body: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.body)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]


def make_image(config: bytes, layers: list[bytes]) -> Image:
    return Image(config, layers, canonical(image_manifest(config, layers)))


def index_of(images: list[Image]) -> bytes:
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, image.body) for image in images],
        }
    )


def test_deleting_while_pushing(cluster: Cluster) -> None:
    """Pushers upload a layer, push a manifest using it and a base image's layer (by a tag of
    their own, then by a shared tag), then an index of it and a base image; meanwhile deleters
    delete base images' layers, manifests and tags (two deleters each), the shared tag, and
    the pushers' manifests and layers as soon as they appear."""
    name = repository()
    config = json_blob(kind="config")  # used by every image, never deleted
    bases = [make_image(config, [os.urandom(2048)]) for _ in range(BASES)]
    with cluster.connect(0) as http:
        push_blob(http, name, config)
        for k, image in enumerate(bases):
            push_blob(http, name, image.layers[0])
            push_manifest(http, name, f"base-{k}", image.body)
    # Pusher i uses base i % 5: the layers of bases 0 and 1 and the manifests of 2 and 3 go.
    pushed = [
        make_image(config, [os.urandom(4096 + i), bases[i % BASES].layers[0]])
        for i in range(PUSHERS)
    ]
    indexes = [index_of([pushed[i], bases[i % BASES]]) for i in range(PUSHERS)]

    def put(client: Client, reference: str, body: bytes, media_type: str) -> int:
        r = client.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            content=body,
            headers={"Content-Type": media_type},
            about=digest_of(body),
        )
        if r.status_code == 201:
            assert r.headers["Docker-Content-Digest"] == digest_of(body)
        else:
            assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
        return r.status_code

    tagged: dict[int, int] = {}  # pusher -> status of its PUT by its own tag

    def pusher(i: int, client: Client) -> None:
        image = pushed[i]
        upload(client, name, image.layers[0], UPLOAD_MODES[i % len(UPLOAD_MODES)])
        race.signal(f"uploaded {i}")
        tagged[i] = put(client, f"p{i}", image.body, OCI_MANIFEST)
        race.signal(f"tagged {i}")
        put(client, "shared", image.body, OCI_MANIFEST)
        put(client, f"i{i}", indexes[i], OCI_INDEX)

    def delete(client: Client, what: str, reference: str, code: str) -> int:
        r = client.request("DELETE", f"/v2/{name}/{what}/{reference}", about=reference)
        if r.status_code != 202:
            assert_error(r, 404, code)
        return r.status_code

    def deleter(j: int, client: Client) -> None:
        if j < 2 * BASES:  # two deleters for each base
            k = j % BASES
            if k < 2:  # the layer
                delete(client, "blobs", digest_of(bases[k].layers[0]), "BLOB_UNKNOWN")
            elif k < 4:  # the manifest, and its tag with it
                delete(client, "manifests", bases[k].digest, "MANIFEST_UNKNOWN")
            else:  # the tag only; and the shared tag
                delete(client, "manifests", f"base-{k}", "MANIFEST_UNKNOWN")
                delete(client, "manifests", "shared", "MANIFEST_UNKNOWN")
            return
        # Pusher j's manifest once pushed by its tag (while the pusher pushes it again by the
        # shared tag), or its layer once uploaded (while the pusher pushes the manifest).
        image = pushed[j]
        if j < 17:
            race.wait_for_signal(f"tagged {j}")
            status = delete(client, "manifests", image.digest, "MANIFEST_UNKNOWN")
            assert (status == 202) == (tagged[j] == 201), (j, status, tagged[j])
        else:
            race.wait_for_signal(f"uploaded {j}")
            expect(
                client.request(
                    "DELETE",
                    f"/v2/{name}/blobs/{digest_of(image.layers[0])}",
                    about=digest_of(image.layers[0]),
                ),
                202,
            )

    race = Race(cluster, PUSHERS + DELETERS)
    # Pushers and deleters alternate, so that each instance gets both.
    race.run(lambda n, c: pusher(n // 2, c) if n % 2 == 0 else deleter(n // 2, c))

    # Bookkeeping: what each document references, and the successful PUTs and DELETEs.
    references: dict[str, set[str]] = {}
    for image in bases + pushed:
        references[image.digest] = {digest_of(b) for b in image.blobs}
    for i, body in enumerate(indexes):
        references[digest_of(body)] = {pushed[i].digest, bases[i % BASES].digest}

    def stored(key: str) -> list[Call]:
        return [c for c in race.calls if c.method == "PUT" and c.status == 201 and c.about == key]

    def removed(key: str) -> list[Call]:
        return [
            c for c in race.calls if c.method == "DELETE" and c.status == 202 and c.about == key
        ]

    def gone_before(key: str, call: Call) -> bool:
        """Deleted, and not stored again, by the time `call` was sent."""
        return any(
            d.before(call)
            and not any(not p.before(d) and p.started < call.answered for p in stored(key))
            for d in removed(key)
        )

    # There before their first use: base manifests, blobs (a pusher uploads its layer first).
    initial = {image.digest for image in bases} | {
        digest_of(b) for image in bases + pushed for b in image.blobs
    }
    puts = [c for c in race.calls if c.method == "PUT" and "/manifests/" in c.path]
    for call in puts:
        refs = references[call.about]
        if call.status == 201:  # never stored pointing at something already gone
            for ref in refs:
                assert not gone_before(ref, call), f"{call.path} stored, {ref} was gone"
        else:  # refused: what it names was never stored, or was (being) deleted
            detail = call.response.json()["errors"][0]["detail"]
            missing = [*detail["blobs"], *detail["manifests"]]
            assert missing and set(missing) <= refs, detail
            for ref in missing:
                existed = ref in initial or any(p.before(call) for p in stored(ref))
                deleted = any(not call.before(d) for d in removed(ref))
                assert deleted or not existed, (call.path, ref)

    documents = {image.digest: image.body for image in bases + pushed}
    documents |= {digest_of(body): body for body in indexes}
    blob_data = {digest_of(b): b for image in bases + pushed for b in image.blobs}
    with cluster.views() as views:
        states = [
            state_of(http, name, documents, blob_data, read=n == 0) for n, http in enumerate(views)
        ]
        assert all(s == states[0] for s in states[1:]), "instances or workers disagree"
        manifests, tags, blobs = states[0]
        for tag, digest in tags.items():  # every listed tag resolves, to what HEAD said
            r = expect(views[0].get(f"/v2/{name}/manifests/{tag}", headers=ACCEPT), 200)
            assert r.headers["Docker-Content-Digest"] == digest

    # Concurrent deletes of one thing: exactly one succeeds.
    for key in [digest_of(bases[k].layers[0]) for k in (0, 1)] + [
        bases[2].digest,
        bases[3].digest,
        "base-4",
    ]:
        assert len(removed(key)) == 1, key
    assert blobs[digest_of(config)]
    for k, image in enumerate(bases):  # nothing stores them again
        assert manifests[image.digest] == (not removed(image.digest)), k
        assert (f"base-{k}" in tags) == (not removed(image.digest) and not removed(f"base-{k}"))
    for digest in blob_data:  # each uploaded once, before the race or before its manifest
        assert blobs[digest] == (not removed(digest)), digest
    for i, image in enumerate(pushed):
        index = digest_of(indexes[i])
        for digest in (image.digest, index):
            if manifests[digest]:  # stored, and not deleted after its last PUT
                assert stored(digest), f"{digest} exists, never stored"
                assert not any(all(p.before(d) for p in stored(digest)) for d in removed(digest)), i
            elif stored(digest):  # deleted, and not stored after its last DELETE
                assert removed(digest), f"{digest} stored, never deleted, gone"
                assert not any(all(d.before(p) for d in removed(digest)) for p in stored(digest)), i
        # p<i> and i<i> are set by one PUT each; p<i> goes with the manifest.
        own = [p for p in stored(image.digest) if p.path.endswith(f"/manifests/p{i}")]
        if f"p{i}" in tags:
            assert tags[f"p{i}"] == image.digest
            assert own and not any(own[0].before(d) for d in removed(image.digest)), i
        elif own:
            assert any(not d.before(own[0]) for d in removed(image.digest)), f"p{i} lost"
        assert (f"i{i}" in tags) == bool(stored(index)), i
        assert tags.get(f"i{i}", index) == index
    if "shared" in tags:
        assert stored(tags["shared"]), tags["shared"]
        assert any(p.path.endswith("/manifests/shared") for p in stored(tags["shared"]))
    # What a manifest that resolves references is there, unless it was deleted: deleting a
    # blob or manifest something uses is allowed, as in distribution; that one then dangles.
    present = manifests | blobs
    for digest, exists in manifests.items():
        if exists:
            for ref in references[digest]:
                assert present[ref] or removed(ref), f"{digest} lost {ref}"
    assert any(p.status == 201 for p in puts)
    assert any(c.method == "DELETE" and c.status == 202 for c in race.calls)
    cluster.assert_clean()


def state_of(
    http: httpx.Client,
    name: str,
    documents: dict[str, bytes],
    blob_data: dict[str, bytes],
    *,
    read: bool,
) -> tuple[dict[str, bool], dict[str, str], dict[str, bool]]:
    """What one connection sees: which manifests resolve, the tags and where they point,
    which blobs are there (`read`: checking their bytes)."""
    manifests: dict[str, bool] = {}
    for digest, body in documents.items():
        r = http.get(f"/v2/{name}/manifests/{digest}", headers={"Accept": "*/*"})
        if r.status_code == 200:
            assert r.content == body
        else:
            assert_error(r, 404, "MANIFEST_UNKNOWN")
        manifests[digest] = r.status_code == 200
    blobs: dict[str, bool] = {}
    for digest, blob in blob_data.items():
        r = http.request("GET" if read else "HEAD", f"/v2/{name}/blobs/{digest}")
        if r.status_code == 200:
            assert not read or r.content == blob
        else:
            assert r.status_code == 404, (r.status_code, r.text)
        blobs[digest] = r.status_code == 200
    tags: dict[str, str] = {}
    for tag in expect(http.get(f"/v2/{name}/tags/list"), 200).json()["tags"]:
        r = expect(http.head(f"/v2/{name}/manifests/{tag}", headers={"Accept": "*/*"}), 200)
        tags[tag] = r.headers["Docker-Content-Digest"]
    return manifests, tags, blobs


# -- 5. mounting from a repository while it is deleted -----------------------------------------
MOUNT_TARGETS = 9
SELF_MOUNTERS = CLIENTS // (MOUNT_TARGETS + 1)  # every tenth client mounts into the source


def test_mounting_from_a_repository_while_it_is_deleted(cluster: Cluster) -> None:
    """45 clients copy an image into 9 repositories by mounting its blobs from the source
    (falling back to uploading them when a mount is refused) while 3 more clients delete the
    source's tag, manifest and blobs part-way through. 5 clients keep mounting the blobs from
    the source into the source itself (and cancel the upload when refused) until the deletes
    are done: a mount that found the blob before its delete must not bring it back after."""
    source = repository()
    image = make_image(json_blob(kind="config"), [os.urandom(4096) for _ in range(2)])
    digests = [digest_of(b) for b in image.blobs]
    targets = [f"{source}-copy{t}" for t in range(MOUNT_TARGETS)]
    with cluster.connect(0) as http:
        for blob in image.blobs:
            push_blob(http, source, blob)
        push_manifest(http, source, "v1", image.body)

    def self_mounter(i: int, client: Client) -> None:
        race.wait_for_progress(30)  # shortly before the first delete
        for n in itertools.count():
            if all(race.signalled(f"deleted {k}") for k in range(len(digests))) or n == 200:
                return
            digest = digests[(i + n) % len(digests)]
            r = client.request(
                "POST",
                f"/v2/{source}/blobs/uploads/",
                params={"mount": digest, "from": source},
                about=digest,
            )
            if r.status_code == 202:  # gone: give up rather than upload it again
                expect(client.request("DELETE", location_url(r.headers["Location"])), 204)
            else:
                assert expect(r, 201).headers["Docker-Content-Digest"] == digest

    def mounter(i: int, client: Client) -> None:
        if i % (MOUNT_TARGETS + 1) == MOUNT_TARGETS:
            self_mounter(i, client)
            return
        target = targets[i % (MOUNT_TARGETS + 1)]
        for n in range(len(digests)):
            blob = image.blobs[(i + n) % len(digests)]
            digest = digest_of(blob)
            r = client.request(
                "POST",
                f"/v2/{target}/blobs/uploads/",
                params={"mount": digest, "from": source},
                about=digest,
            )
            race.progressed()
            if r.status_code == 201:
                assert r.headers["Docker-Content-Digest"] == digest
                assert location_url(r.headers["Location"]) == f"/v2/{target}/blobs/{digest}"
            else:  # refused: an upload session to push the bytes instead
                expect(r, 202)
                assert r.headers["Docker-Upload-UUID"]
                location = with_query(r.headers["Location"], digest=digest)
                r = client.request("PUT", location, content=blob, headers=OCTET_STREAM, hop=True)
                expect(r, 201)
            # Linked at once, as seen from another instance.
            head = client.request("HEAD", f"/v2/{target}/blobs/{digest}", hop=True)
            assert expect(head, 200).headers["Content-Length"] == str(len(blob))
        r = client.request(
            "PUT", f"/v2/{target}/manifests/v1", content=image.body, headers=MANIFEST_TYPE
        )
        expect(r, 201)

    def deleter(k: int, client: Client) -> None:
        # Part-way: after 40, 60 and 80 of the copiers' 135 mounts.
        race.wait_for_progress(40 + 20 * k)
        if k == 0:
            expect(client.request("DELETE", f"/v2/{source}/manifests/v1"), 202)
            expect(client.request("DELETE", f"/v2/{source}/manifests/{image.digest}"), 202)
        r = client.request("DELETE", f"/v2/{source}/blobs/{digests[k]}", about=digests[k])
        expect(r, 202)
        race.signal(f"deleted {k}")

    race = Race(cluster, CLIENTS + len(digests))
    race.run(lambda n, c: mounter(n, c) if n < CLIENTS else deleter(n - CLIENTS, c))

    mounts = [c for c in race.calls if c.method == "POST"]
    for digest in digests:
        (removal,) = race.select("DELETE", f"/v2/{source}/blobs/{digest}", 202)
        for mount in (m for m in mounts if m.about == digest):
            if removal.before(mount):  # the source no longer had it
                assert mount.status == 202, f"mounted {digest} after it left {source}"
            if mount.before(removal):
                assert mount.status == 201, f"{digest} not mounted while {source} had it"
    statuses = {m.status for m in mounts}
    assert statuses == {201, 202}, statuses  # both sides of the race happened

    with cluster.views() as views:
        for n, http in enumerate(views):
            for target in targets:
                r = expect(http.get(f"/v2/{target}/manifests/v1", headers=ACCEPT), 200)
                assert r.content == image.body
                for blob in image.blobs:
                    assert_blob(http, target, blob, read=n == 0)
            for digest in digests:  # deleted for good
                r = http.get(f"/v2/{source}/blobs/{digest}")
                assert r.status_code == 404, f"{source} has {digest} again"
                assert_error(r, 404, "BLOB_UNKNOWN")
            assert_error(
                http.get(f"/v2/{source}/manifests/{image.digest}", headers=ACCEPT),
                404,
                "MANIFEST_UNKNOWN",
            )
            assert expect(http.get(f"/v2/{source}/tags/list"), 200).json()["tags"] == []
    for digest in digests:
        assert cluster.stored_blobs(digest) == [digest]
        assert cluster.count("repository_blobs", "digest", digest) == len(targets)
    cluster.assert_clean()
