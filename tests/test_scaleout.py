"""Three cargobay instances on one PostgreSQL database and one S3 bucket (SeaweedFS): any
instance serves any request, including the middle of an upload, and they always agree."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.helpers import (
    OCI_MANIFEST,
    canonical,
    digest_of,
    image_manifest,
    location_url,
    push_blob,
    push_manifest,
    with_query,
)
from tests.conftest import scaleout_config
from tests.server import RegistryProcess
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import SeaweedFS

Cluster = list[httpx.Client]


@pytest.fixture
def instances(
    start_registry: Callable[..., RegistryProcess],
    seaweedfs: SeaweedFS,
    postgres: PostgresServer,
) -> list[RegistryProcess]:
    name = f"cluster{uuid.uuid4().hex[:8]}"
    config = scaleout_config(seaweedfs, postgres.create_database(name), name)
    return [start_registry(workers=1, config=config) for _ in range(3)]


@pytest.fixture
def cluster(instances: list[RegistryProcess]) -> Iterator[Cluster]:
    clients = [httpx.Client(base_url=i.url, timeout=60, follow_redirects=True) for i in instances]
    yield clients
    for c in clients:
        c.close()


def push_image(client: httpx.Client, name: str, tag: str) -> str:
    config, _ = push_blob(client, name, json.dumps({"id": uuid.uuid4().hex}).encode())
    layer, _ = push_blob(client, name)
    body = canonical(image_manifest(config, [layer]))
    push_manifest(client, name, tag, body)
    return digest_of(body)


def test_chunked_upload_through_three_instances_then_pull_through_each(cluster: Cluster) -> None:
    a, b, c = cluster
    name = "team/app"
    data = [b"first chunk " * 1000, b"second " * 3000, b"end"]
    whole = b"".join(data)
    digest = digest_of(whole)

    location = a.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
    offset = 0
    for instance, chunk in zip((b, c), data[:2], strict=True):
        r = instance.patch(
            location_url(location),
            content=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            },
        )
        assert r.status_code == 202, r.text
        offset += len(chunk)
        location = r.headers["Location"]
    status = a.get(location_url(location))
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{offset - 1}"
    r = a.put(with_query(location, digest=digest), content=data[2])
    assert r.status_code == 201, r.text

    for instance in cluster:
        got = instance.get(f"/v2/{name}/blobs/{digest}")
        assert got.status_code == 200
        assert got.content == whole
        assert instance.head(f"/v2/{name}/blobs/{digest}").headers["Content-Length"] == str(
            len(whole)
        )


def test_blob_get_redirects_to_the_object_store(instances: list[RegistryProcess]) -> None:
    with httpx.Client(base_url=instances[0].url, timeout=60) as client:
        data, digest = push_blob(client, "redirect/me")
        r = client.get(f"/v2/redirect/me/blobs/{digest}")
        assert r.status_code == 307
        assert r.headers["Docker-Content-Digest"] == digest
        assert not r.headers["Location"].startswith(instances[0].url)
        assert httpx.get(r.headers["Location"], timeout=60).content == data


def test_streams_blobs_with_ranges_when_redirects_are_off(
    start_registry: Callable[..., RegistryProcess],
    seaweedfs: SeaweedFS,
    postgres: PostgresServer,
) -> None:
    name = f"stream{uuid.uuid4().hex[:8]}"
    config = scaleout_config(seaweedfs, postgres.create_database(name), name, redirect=False)
    server = start_registry(workers=1, config=config)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        data, digest = push_blob(client, "s/t", bytes(range(256)) * 4096)
        whole = client.get(f"/v2/s/t/blobs/{digest}")
        assert whole.status_code == 200 and whole.content == data
        part = client.get(f"/v2/s/t/blobs/{digest}", headers={"Range": "bytes=100-299"})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes 100-299/{len(data)}"
        assert part.content == data[100:300]
        tail = client.get(f"/v2/s/t/blobs/{digest}", headers={"Range": "bytes=-10"})
        assert tail.content == data[-10:]
        beyond = client.get(f"/v2/s/t/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416
        assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"


def test_manifest_pushed_on_one_instance_is_pulled_from_the_others(cluster: Cluster) -> None:
    digest = push_image(cluster[0], "shared/img", "v1")
    for instance in cluster:
        r = instance.get("/v2/shared/img/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == digest
        assert instance.get("/v2/shared/img/tags/list").json()["tags"] == ["v1"]


def test_two_instances_racing_to_move_one_tag_agree_on_a_winner(cluster: Cluster) -> None:
    name = "race/tag"
    bodies: list[bytes] = []
    config, _ = push_blob(cluster[0], name, b'{"race":1}')
    for _ in range(6):
        layer, _ = push_blob(cluster[0], name)
        bodies.append(canonical(image_manifest(config, [layer])))
    for body in bodies:  # by digest first, so the race is about the tag only
        push_manifest(cluster[0], name, digest_of(body), body)

    start = threading.Barrier(len(bodies))

    def move(index: int) -> int:
        start.wait()
        client = cluster[index % 2]
        return push_manifest(client, name, "latest", bodies[index], expect=None).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        statuses = list(pool.map(move, range(len(bodies))))
    assert statuses == [201] * len(bodies)
    winners = {
        c.get(f"/v2/{name}/manifests/latest", headers={"Accept": OCI_MANIFEST}).headers[
            "Docker-Content-Digest"
        ]
        for c in cluster
    }
    assert len(winners) == 1
    assert winners <= {digest_of(b) for b in bodies}


def race_delete_and_repush(cluster: Cluster, name: str, digest: str, body: bytes) -> None:
    start = threading.Barrier(2)

    def delete() -> int:
        start.wait()
        return cluster[1].delete(f"/v2/{name}/manifests/{digest}").status_code

    def repush() -> int:
        start.wait()
        return push_manifest(cluster[2], name, "v1", body, expect=None).status_code

    with ThreadPoolExecutor(2) as pool:
        deleted, pushed = pool.submit(delete), pool.submit(repush)
        assert deleted.result() in (202, 404)
        assert pushed.result() == 201


def test_delete_racing_a_repush_leaves_one_valid_outcome(cluster: Cluster) -> None:
    name = "race/delete"
    for _ in range(5):
        digest = push_image(cluster[0], name, "v1")
        body = cluster[0].get(f"/v2/{name}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
        race_delete_and_repush(cluster, name, digest, body.content)
        views = set()
        for c in cluster:
            by_digest = c.get(f"/v2/{name}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
            by_tag = c.get(f"/v2/{name}/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert by_digest.status_code in (200, 404)
            # A tag never points at a missing manifest.
            assert by_tag.status_code == by_digest.status_code
            views.add((by_digest.status_code, by_tag.status_code))
        assert len(views) == 1, views


def test_upload_survives_kill_9_of_the_instance_that_was_receiving_it(
    instances: list[RegistryProcess],
) -> None:
    a, b = instances[0], instances[1]
    name = "crash/upload"
    first = b"x" * (2 << 20)
    rest = b"y" * (3 << 20)
    with httpx.Client(base_url=a.url, timeout=60) as client:
        location = client.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
        r = client.patch(
            location_url(location),
            content=first,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 202
        location = r.headers["Location"]

    # A second PATCH is mid-body when instance A dies: the server has read some of it.
    sent = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"z" * (1 << 20)
        sent.set()
        threading.Event().wait(30)  # never finishes on its own; the kill ends the request
        yield b"z"

    def doomed_patch() -> None:
        with (
            httpx.Client(base_url=a.url, timeout=60) as client,
            contextlib.suppress(httpx.HTTPError),
        ):
            client.patch(location_url(location), content=slow_body())

    worker = threading.Thread(target=doomed_patch, daemon=True)
    worker.start()
    assert sent.wait(30)
    a.kill()

    with httpx.Client(base_url=b.url, timeout=60, follow_redirects=True) as client:
        status = client.get(location_url(location))
        assert status.status_code == 204, status.text
        assert status.headers["Range"] == f"0-{len(first) - 1}"  # the cut-off chunk is gone
        whole = first + rest
        r = client.put(
            with_query(location, digest="sha256:" + hashlib.sha256(whole).hexdigest()),
            content=rest,
            headers={"Content-Range": f"{len(first)}-{len(whole) - 1}"},
        )
        assert r.status_code == 201, r.text
        got = client.get(r.headers["Location"])
        assert got.content == whole


def wait_until_ok(request: Callable[[], httpx.Response], ok: int, attempts: int = 200) -> None:
    """Poll (the service is coming back) until the registry answers `ok` again."""
    last = None
    for _ in range(attempts):
        last = request()
        if last.status_code == ok:
            return
        threading.Event().wait(0.1)
    raise AssertionError(f"still {last.status_code if last else None}: {last.text if last else ''}")


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "Retry-After" in response.headers


def test_postgres_outage_is_a_503_and_the_instance_recovers(
    start_registry: Callable[..., RegistryProcess], seaweedfs: SeaweedFS
) -> None:
    database = PostgresServer().start()
    try:
        config = scaleout_config(seaweedfs, database.create_database("outage"), "pgoutage")
        server = start_registry(workers=1, config=config)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            digest = push_image(client, "down/pg", "v1")
            database.stop()
            r = client.get("/v2/down/pg/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert_unavailable(r)
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["storage"] == "ok" and ready.json()["metadata"] != "ok"
            assert_unavailable(client.post("/v2/down/pg/blobs/uploads/"))
            database.start()
            wait_until_ok(
                lambda: client.get("/v2/down/pg/manifests/v1", headers={"Accept": OCI_MANIFEST}),
                200,
            )
            r = client.get(f"/v2/down/pg/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200
            push_image(client, "down/pg", "v2")
        assert "Traceback" not in server.log()
    finally:
        database.stop()


def test_object_store_outage_is_a_503_and_the_instance_recovers(
    start_registry: Callable[..., RegistryProcess],
    postgres: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    store = SeaweedFS(tmp_path_factory.mktemp("seaweedfs-outage")).start()
    try:
        config = scaleout_config(store, postgres.create_database("s3outage"), "s3outage")
        server = start_registry(workers=1, config=config)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            push_image(client, "down/s3", "v1")
            location = client.post("/v2/down/s3/blobs/uploads/").headers["Location"]
            store.stop()
            data = b"blob while the store is down"
            r = client.put(with_query(location, digest=digest_of(data)), content=data)
            assert_unavailable(r)
            assert_unavailable(client.post("/v2/down/s3/blobs/uploads/"))
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["metadata"] == "ok" and ready.json()["storage"] != "ok"
            # Manifests and tags need only PostgreSQL.
            r = client.get("/v2/down/s3/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200
            store.start()
            wait_until_ok(lambda: client.post("/v2/down/s3/blobs/uploads/"), 202)
            push_blob(client, "down/s3", data)
            push_image(client, "down/s3", "v2")
        assert "Traceback" not in server.log()
    finally:
        store.stop()
