"""Online garbage collection over HTTP on both setups: what is kept, what is reclaimed, the
races an expert would try, crashes in the middle, and bytes nobody knows.

`live` registries collect by themselves every second with a 2-second grace delay; `manual`
ones do not collect on their own, and the tests run `cargobay gc` at the moment they need.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    canonical,
    digest_of,
    image_manifest,
    push_artifact,
    push_blob,
    push_image,
    push_manifest,
    random_blob,
    start_upload,
    with_query,
)
from tests.conftest import BACKENDS
from tests.lifecycle.gc_setup import GCSetup, index_of, pull_exact, start_gc_setup, wait_until

DELAY = 2
RACE_SECONDS = float(os.environ.get("GC_RACE_SECONDS", "20"))


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GCSetup]:
    root = tmp_path_factory.mktemp("gc-live")
    setup = start_gc_setup(
        request.param, root, request, {"interval_seconds": 1, "delay_seconds": DELAY}
    )
    yield setup
    setup.server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def manual(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GCSetup]:
    root = tmp_path_factory.mktemp("gc-manual")
    setup = start_gc_setup(request.param, root, request, {"enabled": False, "delay_seconds": DELAY})
    yield setup
    setup.server.stop()


def blobs_of(body: bytes) -> list[str]:
    document = json.loads(body)
    return [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]


def name() -> str:
    return f"gc/{uuid.uuid4().hex[:8]}"


def test_what_is_referenced_stays_and_the_rest_is_reclaimed(live: GCSetup) -> None:
    repo, other = name(), name()
    with live.client() as client:
        shared, shared_digest = push_blob(client, repo, random_blob(2048))

        def image(repository: str, tag: str | None, extra_layers: int = 1) -> tuple[bytes, str]:
            config, _ = push_blob(client, repository, json.dumps({"n": tag}).encode())
            layers = [push_blob(client, repository)[0] for _ in range(extra_layers)]
            body = canonical(image_manifest(config, [shared, *layers]))
            digest = digest_of(body)
            push_manifest(client, repository, tag or digest, body)
            return body, digest

        a = image(repo, "a")
        b = image(repo, "b", extra_layers=0)
        # A tagged index with untagged children; an index three levels deep.
        children = [image(repo, None) for _ in range(2)]
        push_manifest(client, repo, "multi", index_of(children), OCI_INDEX)
        leaf = image(repo, None)
        middle = index_of([leaf])
        push_manifest(client, repo, digest_of(middle), middle, OCI_INDEX)
        top = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {"mediaType": OCI_INDEX, "digest": digest_of(middle), "size": len(middle)}
                ],
            }
        )
        push_manifest(client, repo, "nested", top, OCI_INDEX)
        # A referrer of a, which stays after a goes (manifests are only deleted by policy).
        referrer, referrer_digest, _ = push_artifact(client, repo, a)
        # The shared layer in another repository, by mount.
        r = client.post(
            f"/v2/{other}/blobs/uploads/", params={"mount": shared_digest, "from": repo}
        )
        assert r.status_code == 201, r.text
        d = image(other, "d", extra_layers=0)

        only_a = [x for x in blobs_of(a[0]) if x != shared_digest]
        only_b = [x for x in blobs_of(b[0]) if x != shared_digest]
        assert client.delete(f"/v2/{repo}/manifests/{a[1]}").status_code == 202
        assert client.delete(f"/v2/{repo}/manifests/{b[1]}").status_code == 202
        wait_until(
            lambda: not any(live.stored(x) for x in only_a + only_b),
            "the blobs of the deleted images are reclaimed",
        )
        for digest in only_a:
            assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
        # The shared layer is still referenced in `repo` (by the index children) and `other`.
        assert client.head(f"/v2/{repo}/blobs/{shared_digest}").status_code == 200
        assert live.stored(shared_digest)
        for reference in ("multi", "nested"):
            r = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_INDEX})
            assert r.status_code == 200
            pull_exact(client, repo, digest_of(r.content))
        pull_exact(client, repo, referrer_digest)
        pull_exact(client, other, d[1])
        for digest in blobs_of(referrer):
            assert live.stored(digest)


def test_pushers_and_deleters_race_the_collector(live: GCSetup) -> None:
    """Pushers reuse a pool of layers (HEAD, else mount, else upload) while another client
    deletes their images; the collector runs every second with a 2-second delay. No request
    may fail, and every image not deleted pulls bit-exact at the end."""
    base = name()
    with live.client() as client:
        pool = [random_blob(random.randint(1024, 65536)) for _ in range(6)]
        config, _ = push_blob(client, base, b'{"base": true}')
        for layer in pool:
            push_blob(client, base, layer)
        push_manifest(client, base, "keep", canonical(image_manifest(config, pool)))
    pushed: dict[tuple[str, str], None] = {}
    lock = threading.Lock()
    errors: list[str] = []
    slow: list[float] = []
    stop = time.monotonic() + RACE_SECONDS

    def push_layer(client: httpx.Client, repo: str, layer: bytes) -> float:
        digest = digest_of(layer)
        seen = time.monotonic()
        if client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return seen
        r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": base})
        if r.status_code == 201:
            return time.monotonic()
        assert r.status_code == 202, r.text
        r = client.put(with_query(r.headers["Location"], digest=digest), content=layer)
        assert r.status_code == 201, r.text
        return time.monotonic()

    def pusher(index: int) -> None:
        repo = f"{base}-p{index % 3}"
        with live.client() as client:
            count = 0
            while time.monotonic() < stop and not errors:
                count += 1
                try:
                    layers = random.sample(pool, 2)
                    oldest = min(push_layer(client, repo, layer) for layer in layers)
                    config, _ = push_blob(client, repo, f'{{"p": "{index}-{count}"}}'.encode())
                    body = canonical(image_manifest(config, layers))
                    r = push_manifest(client, repo, f"t{index}-{count}", body, expect=None)
                    if r.status_code == 400 and time.monotonic() - oldest > DELAY:
                        slow.append(time.monotonic() - oldest)  # slower than the grace delay
                        continue
                    assert r.status_code == 201, (r.status_code, r.text)
                    with lock:
                        pushed[(repo, digest_of(body))] = None
                except Exception as exc:  # a timeout or an odd answer counts too
                    errors.append(f"pusher {index}: {type(exc).__name__}: {exc}")

    def deleter() -> None:
        with live.client() as client:
            while time.monotonic() < stop and not errors:
                with lock:
                    candidates = list(pushed)
                    victim = random.choice(candidates) if len(candidates) > 4 else None
                    if victim is not None:
                        del pushed[victim]
                if victim is None:
                    time.sleep(0.05)
                    continue
                try:
                    r = client.delete(f"/v2/{victim[0]}/manifests/{victim[1]}")
                except Exception as exc:  # a timeout counts too
                    errors.append(f"deleter: {type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 202:
                    errors.append(f"deleter: {r.status_code} {r.text}")

    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(6)]
    threads.append(threading.Thread(target=deleter))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:5]
    assert len(slow) <= 3, slow  # an overloaded machine may be slower than the delay, rarely
    with live.client() as client:
        for repo, digest in pushed:
            pull_exact(client, repo, digest)
    log = live.server.log_path.read_text()
    assert "Traceback" not in log and "ERROR" not in log
    assert "garbage collection:" in log  # it did collect meanwhile


def test_a_head_keeps_a_blob_across_a_collection(manual: GCSetup) -> None:
    """The race Quay's soak found: a client HEADs a blob that has been unreferenced for longer
    than the delay, skips uploading it, and pushes a manifest referencing it."""
    repo = name()
    with manual.client() as client:
        kept, kept_digest = push_blob(client, repo)
        _, lost_digest = push_blob(client, repo)
        config, _ = push_blob(client, repo, b'{"head": "then put"}')
        time.sleep(DELAY + 0.2)  # both are now due for collection
        assert client.head(f"/v2/{repo}/blobs/{kept_digest}").status_code == 200
        assert client.head(f"/v2/{repo}/blobs/{digest_of(config)}").status_code == 200
        manual.gc()
        assert client.head(f"/v2/{repo}/blobs/{lost_digest}").status_code == 404
        assert not manual.stored(lost_digest)
        push_manifest(client, repo, "t", canonical(image_manifest(config, [kept])))
        pull_exact(client, repo, digest_of(canonical(image_manifest(config, [kept]))))


def test_dry_run_lists_and_deletes_nothing(manual: GCSetup) -> None:
    repo = name()
    with manual.client() as client:
        body, digest = push_image(client, repo, "x")
        assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    time.sleep(DELAY + 0.2)
    blobs = blobs_of(body)
    dry = manual.gc("--dry-run").stdout
    for blob in blobs:
        assert f"link {repo}@{blob}" in dry and f"blob {blob}" in dry
        assert manual.stored(blob)
    assert "would be removed" in dry
    result = manual.gc().stdout
    assert "removed" in result
    for blob in blobs:
        assert not manual.stored(blob)


def test_bytes_nobody_knows_are_swept(manual: GCSetup) -> None:
    orphan = manual.put_orphan(random_blob(4096))
    with manual.client() as client:
        kept = name()
        _, digest = push_image(client, kept, "kept")
    time.sleep(DELAY + 0.2)
    manual.gc()  # the sweep queues the orphan: it has its grace delay too
    assert manual.stored(orphan)
    time.sleep(DELAY + 0.2)
    manual.gc()
    assert not manual.stored(orphan)
    with manual.client() as client:
        pull_exact(client, kept, digest)


def test_killed_collections_leave_nothing_dangling(manual: GCSetup, tmp_path: Path) -> None:
    """SIGKILL `cargobay gc` at random moments (between deciding and deleting bytes, and the
    other way round): no kept image ever loses a blob, and a last collection reclaims every
    blob of the deleted images."""
    repo = name()
    kept, deleted = [], []
    with manual.client() as client:
        for i in range(30):
            body, digest = push_image(client, repo, f"t{i}", layers=2)
            (kept if i % 3 == 0 else deleted).append((body, digest))
        for _, digest in deleted:
            assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    env = {**os.environ, "CARGOBAY_GC__DELAY_SECONDS": "0"}
    command = [sys.executable, "-m", "cargobay", "gc", "--no-sweep", "--config",
               str(manual.config_file), "--data-dir", str(manual.server.data_dir)]  # fmt: skip
    rng = random.Random(os.environ.get("GC_CRASH_SEED", "1"))
    for _ in range(8):
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            process.wait(timeout=rng.uniform(0.6, 1.6))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        with manual.client() as client:
            for _, digest in kept:
                pull_exact(client, repo, digest)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with manual.client() as client:
        for _, digest in kept:
            pull_exact(client, repo, digest)
    for body, _ in deleted:
        for blob in blobs_of(body):
            assert not manual.stored(blob), blob
    verify = subprocess.run(
        [sys.executable, "-m", "cargobay", "verify", "--config", str(manual.config_file),
         "--data-dir", str(manual.server.data_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_gc_config_is_checked() -> None:
    from cargobay.config import ConfigError, load_config

    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"gc.delay_seconds": -1, "gc.interval_seconds": 0})
    assert "gc.delay_seconds must not be negative" in caught.value.problems
    assert "gc.interval_seconds must be at least 1" in caught.value.problems


_ = (OCI_MANIFEST, start_upload)
