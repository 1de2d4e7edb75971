"""Crash safety: SIGKILL the registry at random moments, at least CRASH_KILLS (200) times with a
request in flight, on both setups, and after each restart on the same data check that

- every push that got its 201 is fully readable, with the right digest;
- nothing half-written is ever served: every blob the registry answers 200 for (acknowledged or
  not) hashes to its digest and has its size;
- an operation whose response the kill took happened entirely or not at all (a manifest PUT
  with several tags moved all of them or none), and acknowledged deletes stay done;
- no tag points to a missing manifest, no manifest to a missing blob;
- upload sessions are resumable at an offset consistent with what was acknowledged (the test
  then finishes them from the reported offset), or, only when their final PUT was lost, cleanly
  unknown (404 BLOB_UPLOAD_UNKNOWN); never a 500;
- the server log has no traceback.

The workload and the ledger are in crashkit.py. Every random choice comes from CRASH_SEED
(printed; random when unset): a failing run prints the seed, and CRASH_SEED=<seed> replays the
same choices (what a kill interrupts still depends on timing).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from cargobay.errors import BlobUploadUnknown
from cargobay.metadata.base import MetadataStore
from cargobay.metadata.postgres import PostgresMetadataStore
from cargobay.metadata.sqlite import SQLiteMetadataStore
from cargobay.registry.digest import Digest
from cargobay.registry.uploads import Uploads
from cargobay.server import MALLOC_TUNABLES
from cargobay.storage.base import BlobStore
from cargobay.storage.filesystem import FilesystemBlobStore
from cargobay.storage.s3 import S3BlobStore
from tests.conftest import scaleout_config
from tests.reliability.crashkit import (
    MIB,
    REQUESTS,
    TIMEOUT,
    Actor,
    Checker,
    KillSwitch,
    Repo,
)
from tests.server import RegistryProcess

KILLS = int(os.environ.get("CRASH_KILLS", "200"))
ACTORS = 3
MAX_KILL_DELAY = 0.4  # seconds of workload before the kill, uniform from 0
TWO_WORKERS = 0.25  # share of runs with two worker processes (else one)
STARTUP_KILLS = 0.05  # share of restarts that are themselves killed, before or as they listen
STARTUP_KILL_DELAY = 0.7
RESUME_AT_CHECK = 0.3  # share of open upload sessions the checker finishes (actors do others)


class Log:
    """The server's log, read as it grows: no traceback, ever."""

    def __init__(self, server: RegistryProcess) -> None:
        self.server = server
        self.offset = 0

    def check(self) -> None:
        path = self.server.log_path
        if not path.exists():
            return
        with path.open(errors="replace") as f:
            f.seek(self.offset)
            new = f.read()
            self.offset = f.tell()
        assert "Traceback" not in new, f"the server logged a traceback:\n{new[-6000:]}"

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.server.log().splitlines()[-lines:])


def kill_while_starting(server: RegistryProcess, delay: float) -> bool:
    """A restart killed too: SIGKILL `delay` seconds after the process is spawned, which may be
    before it listens (opening the database, migrations) or just after. True: before."""
    server.workers = 1  # one process: the kill cannot leave an orphaned worker

    def shoot() -> None:
        process = server.process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

    timer = threading.Timer(delay, shoot)
    timer.start()
    try:
        server.start()
        early = False
    except RuntimeError:  # killed before it said it listens
        early = True
    timer.join()
    server.kill()
    return early


def check(
    server: RegistryProcess,
    repos: list[Repo],
    rng: random.Random,
    *,
    full: bool,
    resume: float = RESUME_AT_CHECK,
    read: bool = True,
) -> Checker:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, follow_redirects=True) as client:
        checker = Checker(client, rng, read=read)
        for repo in repos:
            checker.settle(repo)
            for session in list(repo.sessions):
                checker.check_session(repo, session)
            for session in list(repo.sessions):
                if rng.random() < resume:
                    checker.resume(repo, session)
            checker.check_repo(repo, full=full)
        if full:
            catalog = client.get("/v2/_catalog")
            assert catalog.status_code == 200, catalog.text
            listed = set(catalog.json()["repositories"])
            for repo in repos:
                if repo.present_blobs() or repo.present_manifests():
                    assert repo.name in listed, f"{repo.name} missing from the catalog: {listed}"
    return checker


def _seconds(spent: Mapping[str, float]) -> str:
    return ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in spent.items())


@contextlib.contextmanager
def reproducible(setup: str, seed: int, iteration: int, log: Log) -> Iterator[None]:
    failure = None
    try:
        yield
    except AssertionError as exc:
        failure = str(exc)
    if failure is not None:
        pytest.fail(
            f"[{setup}] iteration {iteration}: {failure}\n\nreproduce with CRASH_SEED={seed}"
            f" CRASH_KILLS={KILLS}\n\nserver log (end):\n{log.tail()}",
            pytrace=False,
        )


@pytest.mark.timeout(2400)  # ~5-10 min per setup on 2 busy cores
@pytest.mark.parametrize("setup", ["embedded", "s3+postgres"])
def test_sigkill_at_random_moments(
    setup: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    seed_text = os.environ.get("CRASH_SEED")
    seed = int(seed_text) if seed_text else random.SystemRandom().randrange(1 << 32)
    print(f"[{setup}] CRASH_SEED={seed} CRASH_KILLS={KILLS}", flush=True)
    config = None
    largest_blob = 4 * MIB
    if setup == "s3+postgres":
        seaweedfs = request.getfixturevalue("seaweedfs")
        postgres = request.getfixturevalue("postgres")
        config = scaleout_config(seaweedfs, postgres.create_database("crash"), "crash")
        largest_blob = 3 * MIB
    # GLIBC_TUNABLES set: the server does not re-execute itself to set them (faster restarts).
    env = {"GLIBC_TUNABLES": MALLOC_TUNABLES}
    server = RegistryProcess(tmp_path / "data", workers=1, config=config, env=env)
    log = Log(server)
    repos = [Repo(f"crash/r{i}") for i in range(ACTORS)]

    began = time.monotonic()
    kills = startup_kills = before_listening = iteration = 0
    lost: Counter[str] = Counter()
    resumed = unknown_sessions = operations = 0
    spent: defaultdict[str, float] = defaultdict(float)  # seconds, by phase
    most = KILLS + KILLS // 2 + 20
    try:
        while kills < KILLS and iteration < most:
            rng = random.Random(f"{seed}/{setup}/{iteration}")
            with reproducible(setup, seed, iteration, log):
                if iteration and rng.random() < STARTUP_KILLS:
                    early = kill_while_starting(server, rng.uniform(0, STARTUP_KILL_DELAY))
                    startup_kills += 1
                    before_listening += early
                server.workers = 2 if rng.random() < TWO_WORKERS else 1
                mark = time.monotonic()
                server.start()
                spent["start"] += time.monotonic() - mark
                mark = time.monotonic()
                checker = check(
                    server, repos, random.Random(f"{seed}/check/{iteration}"), full=False
                )
                spent["check"] += time.monotonic() - mark
                resumed += checker.resumed
                unknown_sessions += checker.unknown_sessions
                log.check()

                switch = KillSwitch()
                actors = [
                    Actor(repo, random.Random(f"{seed}/{setup}/{iteration}/{n}"), server.url,
                          switch, largest_blob)
                    for n, repo in enumerate(repos)
                ]  # fmt: skip
                for actor in actors:
                    actor.start()
                time.sleep(rng.uniform(0, MAX_KILL_DELAY))  # the random moment
                switch.wait_for_a_request(timeout=TIMEOUT)
                switch.fire()
                server.kill()
                for actor in actors:
                    actor.join()
                spent["kill"] += time.monotonic() - switch.at
                errors = [a.error for a in actors if a.error]
                assert not errors, "\n".join(errors)
                operations += sum(a.operations for a in actors)
                hit = [a.lost for a in actors if a.lost is not None]
                lost.update(hit)
                kills += bool(hit)
            iteration += 1
            if iteration % 25 == 0:
                print(
                    f"[{setup}] {iteration} runs, {kills} kills with requests in flight,"
                    f" {time.monotonic() - began:.0f} s ({_seconds(spent)})",
                    flush=True,
                )

        # The end: settle the last kill, finish every open upload, check everything (reading
        # every blob); then again after a graceful restart (blobs by HEAD only).
        for final in range(2):
            with reproducible(setup, seed, iteration + final, log):
                server.workers = 2
                server.start()
                rng = random.Random(f"{seed}/final/{final}")
                checker = check(server, repos, rng, full=True, resume=1.0, read=final == 0)
                resumed += checker.resumed
                unknown_sessions += checker.unknown_sessions
                assert all(not r.sessions for r in repos)
                server.stop()
                log.check()
    finally:
        server.kill()

    elapsed = time.monotonic() - began
    blobs = sum(len(r.present_blobs()) for r in repos)
    manifests = sum(len(r.present_manifests()) for r in repos)
    print(
        f"[{setup}] seed {seed}: {iteration} runs in {elapsed:.0f} s, {kills} kills with"
        f" requests in flight, {startup_kills} during start-up ({before_listening} before it"
        f" listened); {operations} operations"
        f" acknowledged; requests lost to kills: {dict(sorted(lost.items()))}; {resumed}"
        f" uploads resumed, {unknown_sessions} unknown after a lost final PUT; in the end"
        f" {blobs} blobs and {manifests} manifests; time by phase: {_seconds(spent)}",
        flush=True,
    )
    assert kills >= KILLS, (
        f"only {kills} of {iteration} kills hit a request in flight (seed {seed})"
    )
    if KILLS >= 100:  # enough kills that every kind of request was hit
        missed = [r for r in REQUESTS if lost[r] == 0]
        assert not missed, f"no kill hit these requests: {missed} (seed {seed})"


# -- found by the test above -------------------------------------------------------------------


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize("setup", ["embedded", "s3+postgres"])
async def test_a_commit_cut_short_leaves_no_session_that_cannot_resume(
    setup: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Completing an upload commits its bytes as the blob (dropping the staging object), then
    records the blob and drops the session in the metadata. A kill between the two left a
    session that answered 204 to a status request, whose every PATCH and PUT then failed with
    404: neither resumable nor cleanly unknown. Now it is unknown (404) from the first request,
    and pushing the blob again works."""
    blobs: BlobStore
    metadata: MetadataStore
    if setup == "embedded":
        blobs = FilesystemBlobStore(tmp_path)
        metadata = SQLiteMetadataStore(tmp_path / "metadata.db")
    else:
        seaweedfs = request.getfixturevalue("seaweedfs")
        blobs = S3BlobStore(
            seaweedfs.bucket,
            endpoint=seaweedfs.endpoint_url,
            region=seaweedfs.region,
            path_style=True,
            access_key_id=seaweedfs.access_key,
            secret_access_key=seaweedfs.secret_key,
            prefix=f"crash-commit/{uuid.uuid4()}",
        )
        metadata = PostgresMetadataStore(request.getfixturevalue("postgres").create_database())
    metadata.migrate()
    uploads = Uploads(blobs, metadata)
    name = "crash/commit"
    try:
        # Staged as two chunks (S3 commits by concatenating) or one (S3 copies it).
        for chunks in (2, 1):
            data = random.Random(chunks).randbytes(100_000)
            digest = Digest("sha256", hashlib.sha256(data).hexdigest())
            upload = await uploads.start(name)
            async with uploads.session(name, upload.id) as session:
                for part in (data[:40_000], data[40_000:]) if chunks == 2 else (data,):
                    session = await uploads.append(session, _chunks(part), None, None)
            assert (await uploads.status(name, upload.id)).size == len(data)
            # The first half of Uploads.complete, and then the kill.
            await blobs.commit_upload(upload.id, len(data), digest)

            with pytest.raises(BlobUploadUnknown):
                await uploads.status(name, upload.id)
            with pytest.raises(BlobUploadUnknown):
                async with uploads.session(name, upload.id) as session:
                    await uploads.append(session, _chunks(b"more"), None, None)
            assert await metadata.get_upload(upload.id) is None  # gone for good
            assert await metadata.linked_blob_size(name, str(digest)) is None

            again = await uploads.start(name)
            pushed = await uploads.complete(again, str(digest), _chunks(data), None, None)
            assert pushed == (digest, len(data))
            assert await metadata.linked_blob_size(name, str(digest)) == len(data)
    finally:
        await metadata.close()
        await blobs.close()
