"""The workload, the ledger and the checks of the crash-safety test (test_crash.py).

Actors (one thread each) push blobs (monolithic and chunked), manifests with several tags,
and delete tags and manifests, each in a repository of its own: an actor's requests are ordered,
so everything it got a success status for happened, and only the request in flight when the
server was killed has an unknown outcome. The ledger records what was acknowledged, and that
one unknown per repository.

After the restart the checker observes each unknown outcome, which must be the state before the
request or the state after it, never a mix of the two (a manifest PUT with several tags moves
all of them or none), and adopts it: from then on the ledger is exact again, and the registry
must match it.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from tests.api.helpers import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    digest_of,
    error_codes,
    location_url,
    with_query,
)

KIB = 1 << 10
MIB = 1 << 20
TAGS = tuple(f"t{i}" for i in range(6))
ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}"
OCTET = {"Content-Type": "application/octet-stream"}
TIMEOUT = 30.0

# What an actor does, with weights. Manifest operations fall back to a blob push while the
# repository has no blob, deletes to a manifest push while it has no manifest.
OPERATIONS = {
    "blob-post-put": 16,  # POST, then PUT ?digest= with the whole body
    "blob-post": 12,  # a single POST ?digest= with the whole body
    "chunked": 24,  # POST (or an open session), PATCHes with Content-Range, PUT ?digest=
    "manifest": 26,  # a new image manifest, by tag or digest, with up to 4 tags
    "retag": 8,  # an existing manifest again, under other tags
    "untag": 10,  # DELETE a tag
    "delete": 7,  # DELETE a manifest by digest (its tags go with it)
}

# The requests whose response a kill can lose; the test wants each of them hit.
REQUESTS = (
    "POST upload",
    "PUT monolithic",
    "POST monolithic",
    "PATCH chunk",
    "PUT final chunk",
    "PUT manifest",
    "DELETE tag",
    "DELETE manifest",
)


def blob_bytes(seed: int, size: int) -> bytes:
    """A blob's content, made again from its seed whenever needed (never kept in memory): a
    random block of up to 64 KiB, repeated (fast: the actors should be waiting on the server,
    where the kill lands, rather than computing)."""
    block = random.Random(seed).randbytes(min(size, 64 * KIB))
    return (block * -(-size // len(block)))[:size] if block else b""


def blob_size(rng: random.Random, largest: int) -> int:
    """Mostly small, many medium, some large enough for a kill to land in the middle."""
    roll = rng.random()
    if roll < 0.05:
        return rng.randint(0, 16)
    if roll < 0.40:
        return rng.randint(17, 8 * KIB)
    if roll < 0.80:
        return rng.randint(8 * KIB, 512 * KIB)
    return rng.randint(512 * KIB, largest)


# -- the ledger --------------------------------------------------------------------------------


@dataclass(eq=False)
class Blob:
    seed: int
    size: int
    digest: str
    present: bool = False  # linked to the repository, for certain

    def data(self) -> bytes:
        return blob_bytes(self.seed, self.size)


@dataclass(eq=False)
class Manifest:
    digest: str
    content: bytes
    present: bool = False


@dataclass(eq=False)
class Session:
    """An upload session whose POST was acknowledged (its Location is known)."""

    location: str
    blob: Blob
    offset: int = 0  # bytes acknowledged
    lost: str | None = None  # "patch" or "put": the request in flight at the kill
    lost_offset: int = 0  # where the lost PATCH would have taken the session
    history: list[str] = field(default_factory=list)  # what happened to it, for messages


@dataclass(eq=False)
class Unknown:
    """An operation whose response was lost to a kill."""

    kind: str  # "blob", "manifest-put", "tag-delete", "manifest-delete"
    blob: Blob | None = None
    manifest: Manifest | None = None
    tags: tuple[str, ...] = ()


@dataclass(eq=False)
class Repo:
    name: str
    blobs: dict[str, Blob] = field(default_factory=dict)  # every blob ever tried
    manifests: dict[str, Manifest] = field(default_factory=dict)  # every manifest ever tried
    tags: dict[str, str] = field(default_factory=dict)
    sessions: list[Session] = field(default_factory=list)
    unknown: list[Unknown] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # digests touched since the last check
    touched_tags: set[str] = field(default_factory=set)

    def present_blobs(self) -> list[Blob]:
        return [b for b in self.blobs.values() if b.present]

    def present_manifests(self) -> list[Manifest]:
        return [m for m in self.manifests.values() if m.present]


# -- the workload ------------------------------------------------------------------------------


class KillSwitch:
    """Tells actors the kill is coming, and the test whether a request is in flight."""

    def __init__(self) -> None:
        self.at = math.inf
        self.event = threading.Event()
        self._sending = threading.Condition()
        self._in_flight = 0

    def sending(self, change: int) -> None:
        with self._sending:
            self._in_flight += change
            self._sending.notify_all()

    def wait_for_a_request(self, timeout: float) -> bool:
        """Returns once an actor has a request in flight (rarely all are between requests)."""
        with self._sending:
            return self._sending.wait_for(lambda: self._in_flight > 0, timeout)

    def fire(self) -> None:
        self.at = time.monotonic()
        self.event.set()


class Stop(Exception):
    """The server is gone: this actor's iteration is over."""


class Actor:
    """Drives one repository with random operations until the server is killed."""

    def __init__(
        self,
        repo: Repo,
        rng: random.Random,
        url: str,
        kill: KillSwitch,
        largest_blob: int,
    ) -> None:
        self.repo = repo
        self.rng = rng
        self.url = url
        self.kill = kill
        self.largest_blob = largest_blob
        self.lost: str | None = None  # the request whose response the kill lost
        self.error: str | None = None
        self.operations = 0
        self.thread = threading.Thread(target=self._run, name=f"actor-{repo.name}", daemon=True)
        self.client = httpx.Client(base_url=url, timeout=TIMEOUT, follow_redirects=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join(TIMEOUT * 2)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop after the kill"

    def _run(self) -> None:
        try:
            while True:
                self.step()
                self.operations += 1
        except Stop:
            pass
        except Exception as exc:
            self.error = f"{self.repo.name}: {exc}\n{traceback.format_exc()}"
        finally:
            self.client.close()

    # -- requests -------------------------------------------------------------------------
    def request(
        self,
        label: str,
        method: str,
        url: str,
        *,
        lost: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request; when the kill takes its response, call `lost` (to record the
        unknown outcome) and stop."""
        if self.kill.event.is_set():
            raise Stop
        started = time.monotonic()
        self.kill.sending(+1)
        try:
            return self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if not self.kill.event.is_set():
                raise AssertionError(f"{label} {url}: {exc!r} while the server was up") from exc
            if started < self.kill.at:
                self.lost = label
                if lost is not None:
                    lost()
            raise Stop from None
        finally:
            self.kill.sending(-1)

    @staticmethod
    def expect(response: httpx.Response, status: int, what: str) -> None:
        assert response.status_code == status, (
            f"{what}: {response.request.method} {response.request.url} answered"
            f" {response.status_code}, expected {status}: {response.text[:500]}"
        )

    # -- operations -----------------------------------------------------------------------
    def step(self) -> None:
        names = list(OPERATIONS)
        operation = self.rng.choices(names, weights=[OPERATIONS[n] for n in names])[0]
        repo = self.repo
        if operation in ("delete", "retag") and not repo.present_manifests():
            operation = "manifest"
        if operation == "manifest" and not repo.present_blobs():
            operation = "blob-post-put"
        if operation == "untag" and not repo.tags and self.rng.random() < 0.8:
            operation = "manifest" if repo.present_blobs() else "chunked"
        if operation == "blob-post-put":
            self.push_post_put()
        elif operation == "blob-post":
            self.push_single_post()
        elif operation == "chunked":
            self.push_chunked()
        elif operation in ("manifest", "retag"):
            self.put_manifest(retag=operation == "retag")
        elif operation == "untag":
            self.delete_tag()
        else:
            self.delete_manifest()

    def pick_blob(self, *, least: int = 0) -> Blob:
        """Mostly a new blob; sometimes one pushed (or tried) before, pushed again."""
        repo = self.repo
        if self.rng.random() < 0.12:
            again = [b for b in repo.blobs.values() if b.size >= least]
            if again:
                return self.rng.choice(again)
        seed = self.rng.getrandbits(63)
        size = max(blob_size(self.rng, self.largest_blob), least)
        digest = digest_of(blob_bytes(seed, size))
        # Tiny blobs repeat (there are 256 of one byte): the same digest is the same blob.
        return repo.blobs.setdefault(digest, Blob(seed, size, digest))

    def pushed(self, blob: Blob, response: httpx.Response) -> None:
        digest = response.headers.get("Docker-Content-Digest")
        assert digest == blob.digest, f"blob pushed as {blob.digest}, acknowledged as {digest}"
        blob.present = True
        self.repo.touched.add(blob.digest)

    def lose_blob(self, blob: Blob) -> None:
        self.repo.unknown.append(Unknown("blob", blob=blob))
        self.repo.touched.add(blob.digest)

    def lose_put(self, session: Session) -> None:
        session.lost = "put"
        session.history.append(f"PUT lost at {session.offset}")
        self.lose_blob(session.blob)

    def lose_patch(self, session: Session, offset: int) -> None:
        session.lost, session.lost_offset = "patch", offset
        session.history.append(f"PATCH {session.offset}->{offset} lost")

    def start_session(self, blob: Blob) -> Session:
        r = self.request("POST upload", "POST", f"/v2/{self.repo.name}/blobs/uploads/")
        self.expect(r, 202, "start an upload")
        session = Session(r.headers["Location"], blob, history=["POST"])
        self.repo.sessions.append(session)
        return session

    def finish_session(self, session: Session, label: str, body: bytes) -> None:
        blob = session.blob
        kwargs: dict[str, Any] = {"content": body, "headers": OCTET} if body else {}
        r = self.request(
            label,
            "PUT",
            with_query(session.location, digest=blob.digest),
            lost=lambda: self.lose_put(session),
            **kwargs,
        )
        self.expect(r, 201, f"finish an upload ({session.history})")
        self.repo.sessions.remove(session)
        self.pushed(blob, r)

    def push_post_put(self) -> None:
        blob = self.pick_blob()
        session = self.start_session(blob)
        self.finish_session(session, "PUT monolithic", blob.data())

    def push_single_post(self) -> None:
        blob = self.pick_blob()
        r = self.request(
            "POST monolithic",
            "POST",
            f"/v2/{self.repo.name}/blobs/uploads/",
            params={"digest": blob.digest},
            content=blob.data(),
            headers=OCTET,
            lost=lambda: self.lose_blob(blob),
        )
        self.expect(r, 201, "single-POST push")
        self.pushed(blob, r)

    def push_chunked(self) -> None:
        rng, repo = self.rng, self.repo
        idle = [s for s in repo.sessions if s.lost is None]
        if idle and rng.random() < 0.5:
            session = rng.choice(idle)  # left open earlier, perhaps before a kill
        else:
            # At least 2 bytes: the first PATCH moves the session to 2 or more, so its
            # Range ("0-0" for both 0 and 1 byte) is never ambiguous.
            session = self.start_session(self.pick_blob(least=2))
        data = session.blob.data()
        # (An open session of a blob under 2 bytes, left by a monolithic push, gets a PUT.)
        while (
            len(data) >= 2
            and session.offset < len(data)
            and (session.offset == 0 or rng.random() < 0.7)
        ):
            start = session.offset
            remaining = len(data) - start
            end = start + (rng.randint(2 if start == 0 else 1, remaining) if remaining > 2 else 2)
            end = min(end, len(data))
            r = self.request(
                "PATCH chunk",
                "PATCH",
                location_url(session.location),
                content=data[start:end],
                headers={**OCTET, "Content-Range": f"{start}-{end - 1}"},
                lost=partial(self.lose_patch, session, end),
            )
            self.expect(r, 202, f"upload a chunk ({session.history})")
            assert r.headers.get("Range") == f"0-{end - 1}", (r.headers, start, end)
            session.location = r.headers["Location"]
            session.offset = end
            session.history.append(f"PATCH {start}->{end}")
        if rng.random() < 0.15:
            return  # leave it open, for later
        self.finish_session(session, "PUT final chunk", data[session.offset :])

    def put_manifest(self, *, retag: bool) -> None:
        rng, repo = self.rng, self.repo
        if retag:
            manifest = rng.choice(repo.present_manifests())
            tags = rng.sample(TAGS, rng.randint(1, 4))
        else:
            blobs = repo.present_blobs()
            config = rng.choice(blobs)
            layers = rng.sample(blobs, min(len(blobs), rng.randint(1, 3)))
            body = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": b.digest, "size": b.size} for b in layers
                ],
                "annotations": {"crash.nonce": str(rng.getrandbits(64))},
            }
            content = json.dumps(body, indent=rng.choice([None, 2])).encode()
            manifest = Manifest(digest_of(content), content)
            repo.manifests[manifest.digest] = manifest
            tags = rng.sample(TAGS, rng.randint(0, 4))
        if tags and rng.random() < 0.5:
            reference, extra = tags[0], tags[1:]
        else:
            reference, extra = manifest.digest, tags

        def lost() -> None:
            repo.unknown.append(Unknown("manifest-put", manifest=manifest, tags=tuple(tags)))

        r = self.request(
            "PUT manifest",
            "PUT",
            f"/v2/{repo.name}/manifests/{reference}",
            params=[("tag", t) for t in extra],
            content=manifest.content,
            headers={"Content-Type": OCI_MANIFEST},
            lost=lost,
        )
        self.expect(r, 201, "push a manifest")
        assert r.headers.get("Docker-Content-Digest") == manifest.digest, r.headers
        assert sorted(r.headers.get_list("OCI-Tag")) == sorted(tags), (r.headers, tags)
        manifest.present = True
        repo.touched.add(manifest.digest)
        for tag in tags:
            repo.tags[tag] = manifest.digest
            repo.touched_tags.add(tag)

    def delete_tag(self) -> None:
        rng, repo = self.rng, self.repo
        tag = rng.choice(sorted(repo.tags)) if repo.tags and rng.random() < 0.85 else None
        tag = tag or rng.choice(TAGS)
        r = self.request(
            "DELETE tag",
            "DELETE",
            f"/v2/{repo.name}/manifests/{tag}",
            lost=lambda: repo.unknown.append(Unknown("tag-delete", tags=(tag,))),
        )
        repo.touched_tags.add(tag)
        if tag in repo.tags:
            self.expect(r, 202, f"delete tag {tag}")
            del repo.tags[tag]
        else:
            self.expect(r, 404, f"delete tag {tag}, which is not there")
            assert set(error_codes(r)) & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}, r.text

    def delete_manifest(self) -> None:
        rng, repo = self.rng, self.repo
        manifest = rng.choice(repo.present_manifests())
        r = self.request(
            "DELETE manifest",
            "DELETE",
            f"/v2/{repo.name}/manifests/{manifest.digest}",
            lost=lambda: repo.unknown.append(Unknown("manifest-delete", manifest=manifest)),
        )
        self.expect(r, 202, "delete a manifest")
        manifest.present = False
        repo.touched.add(manifest.digest)
        for tag, digest in list(repo.tags.items()):
            if digest == manifest.digest:
                del repo.tags[tag]
                repo.touched_tags.add(tag)


# -- the checks ----------------------------------------------------------------------------------


def _range_end(value: str | None, allowed: set[int]) -> int:
    """The size an upload's Range header reports ("0-0" is 0 bytes, or 1)."""
    assert value is not None and value.startswith("0-"), f"bad upload Range {value!r}"
    last = int(value[2:])
    if last == 0:
        return 0 if 0 in allowed else 1
    return last + 1


class Checker:
    """Observes the registry after a restart: settles unknown outcomes, resumes upload
    sessions, and compares the repositories with the ledger."""

    def __init__(self, client: httpx.Client, rng: random.Random, *, read: bool = True) -> None:
        self.client = client
        self.rng = rng
        self.read = read  # False: blobs are checked by HEAD (digest, size) only
        self.verified: set[tuple[str, str]] = set()  # (repository, digest) read in full
        self.resumed = 0
        self.unknown_sessions = 0

    # -- observations ---------------------------------------------------------------------
    def blob_present(self, repo: Repo, blob: Blob) -> bool:
        """HEAD, and when the registry says it has the blob, GET it: never half-written."""
        r = self.client.head(f"/v2/{repo.name}/blobs/{blob.digest}")
        if r.status_code == 404:
            return False
        assert r.status_code == 200, f"HEAD blob {blob.digest}: {r.status_code}"
        assert r.headers.get("Docker-Content-Digest") == blob.digest, r.headers
        assert r.headers.get("Content-Length") == str(blob.size), (
            f"HEAD blob {blob.digest}: Content-Length {r.headers.get('Content-Length')},"
            f" pushed {blob.size} bytes"
        )
        self.read_blob(repo, blob.digest, blob.size)
        return True

    def read_blob(self, repo: Repo, digest: str, size: int) -> None:
        if (repo.name, digest) in self.verified or not self.read:
            return
        r = self.client.get(f"/v2/{repo.name}/blobs/{digest}")
        assert r.status_code == 200, f"GET blob {digest} in {repo.name}: {r.status_code} {r.text}"
        first = r.history[0] if r.history else r  # S3: 307 to a presigned URL
        assert first.headers.get("Docker-Content-Digest") == digest, first.headers
        assert len(r.content) == size, f"blob {digest}: {len(r.content)} bytes served, not {size}"
        assert digest_of(r.content) == digest, f"blob {digest}: served content is different"
        self.verified.add((repo.name, digest))

    def blob_referenced(self, repo: Repo, digest: str, size: int, *, read: bool) -> None:
        r = self.client.head(f"/v2/{repo.name}/blobs/{digest}")
        assert r.status_code == 200, f"a manifest of {repo.name} references missing blob {digest}"
        assert r.headers.get("Content-Length") == str(size), (digest, size, r.headers)
        if read:
            self.read_blob(repo, digest, size)

    def manifest_present(self, repo: Repo, digest: str) -> bool:
        r = self.client.get(f"/v2/{repo.name}/manifests/{digest}", headers={"Accept": ACCEPT})
        if r.status_code == 404:
            assert set(error_codes(r)) & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}, r.text
            return False
        assert r.status_code == 200, f"GET manifest {digest}: {r.status_code} {r.text}"
        assert r.headers.get("Docker-Content-Digest") == digest, r.headers
        assert digest_of(r.content) == digest, f"manifest {digest}: served content is different"
        return True

    def tag_target(self, repo: Repo, tag: str) -> str | None:
        r = self.client.get(f"/v2/{repo.name}/manifests/{tag}", headers={"Accept": ACCEPT})
        if r.status_code == 404:
            assert set(error_codes(r)) & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}, r.text
            return None
        assert r.status_code == 200, f"GET {repo.name}:{tag}: {r.status_code} {r.text}"
        digest: str | None = r.headers.get("Docker-Content-Digest")
        assert digest is not None and digest_of(r.content) == digest, (
            f"{repo.name}:{tag}: served manifest does not hash to {digest}"
        )
        assert digest in repo.manifests, f"{repo.name}:{tag} points to {digest}, never pushed"
        return digest

    # -- unknown outcomes -------------------------------------------------------------------
    def settle(self, repo: Repo) -> None:
        """Each operation whose response was lost either happened or did not, as a whole."""
        for unknown in repo.unknown:
            if unknown.kind == "blob":
                assert unknown.blob is not None
                self.settle_blob(repo, unknown.blob)
                continue
            manifest = unknown.manifest
            State = tuple[bool, dict[str, str | None]]  # manifest present, tag targets
            before: State
            after: State
            if unknown.kind == "manifest-put":
                assert manifest is not None
                tags = unknown.tags
                before = (manifest.present, {t: repo.tags.get(t) for t in tags})
                after = (True, {t: manifest.digest for t in tags})
            elif unknown.kind == "manifest-delete":
                assert manifest is not None
                tags = tuple(t for t, d in repo.tags.items() if d == manifest.digest)
                before = (True, {t: manifest.digest for t in tags})
                after = (False, {t: None for t in tags})
            else:
                assert unknown.kind == "tag-delete"
                tags = unknown.tags
                before = (manifest is not None, {t: repo.tags.get(t) for t in tags})
                after = (manifest is not None, {t: None for t in tags})
            present = manifest is not None and self.manifest_present(repo, manifest.digest)
            seen = (present, {t: self.tag_target(repo, t) for t in tags})
            assert seen in (before, after), (
                f"{repo.name}: {unknown.kind} {manifest.digest if manifest else ''} {tags} lost"
                f" to the kill left (manifest present, tags) = {seen}; only {before} (before)"
                f" or {after} (after) are possible"
            )
            if manifest is not None:
                manifest.present = present
                repo.touched.add(manifest.digest)
            for tag, digest in seen[1].items():
                repo.touched_tags.add(tag)
                if digest is None:
                    repo.tags.pop(tag, None)
                else:
                    repo.tags[tag] = digest
        repo.unknown.clear()

    def settle_blob(self, repo: Repo, blob: Blob) -> None:
        present = self.blob_present(repo, blob)
        assert present or not blob.present, (
            f"{repo.name}: blob {blob.digest} was acknowledged, and is gone after pushing it"
            " again was interrupted"
        )
        blob.present = present
        repo.touched.add(blob.digest)

    # -- upload sessions ------------------------------------------------------------------
    def check_session(self, repo: Repo, session: Session) -> None:
        """Resumable at an offset consistent with what was acknowledged, or (only when the
        final PUT was lost, which may have completed it) cleanly unknown."""
        r = self.client.get(location_url(session.location))
        if r.status_code == 404:
            assert error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"], r.text
            assert session.lost == "put", (
                f"{repo.name}: upload {session.location} ({session.offset} bytes acknowledged,"
                f" lost request: {session.lost}) is gone after a restart; nothing completed it"
            )
            repo.sessions.remove(session)
            self.unknown_sessions += 1
            return
        assert r.status_code == 204, f"upload status {session.location}: {r.status_code} {r.text}"
        allowed = {session.offset}
        if session.lost == "patch":
            allowed.add(session.lost_offset)
        offset = _range_end(r.headers.get("Range"), allowed)
        assert offset in allowed, (
            f"{repo.name}: upload {session.location} reports {offset} bytes"
            f" (Range {r.headers.get('Range')}); acknowledged {session.offset},"
            f" lost request: {session.lost} to {session.lost_offset}"
        )
        session.offset, session.lost = offset, None
        session.history.append(f"restart: 204 at {offset}")

    def resume(self, repo: Repo, session: Session) -> None:
        """Send the rest from the offset the registry reported, then finish."""
        blob = session.blob
        data = blob.data()
        location = session.location
        rest = data[session.offset :]
        if rest and self.rng.random() < 0.5:
            end = len(data)
            r = self.client.patch(
                location_url(location),
                content=rest,
                headers={**OCTET, "Content-Range": f"{session.offset}-{end - 1}"},
            )
            assert r.status_code == 202, (
                f"resume {location} ({session.history}): PATCH {r.status_code} {r.text}"
            )
            assert r.headers.get("Range") == f"0-{end - 1}", r.headers
            location, rest = r.headers["Location"], b""
        kwargs: dict[str, Any] = {"content": rest, "headers": OCTET} if rest else {}
        r = self.client.put(with_query(location, digest=blob.digest), **kwargs)
        assert r.status_code == 201, (
            f"resume {location} ({session.history}): PUT {r.status_code} {r.text}"
        )
        assert r.headers.get("Docker-Content-Digest") == blob.digest, r.headers
        repo.sessions.remove(session)
        blob.present = True
        repo.touched.add(blob.digest)
        self.read_blob(repo, blob.digest, blob.size)
        self.resumed += 1

    # -- the repository as a whole ------------------------------------------------------------
    def check_repo(self, repo: Repo, *, full: bool, sample: int = 1) -> None:
        r = self.client.get(f"/v2/{repo.name}/tags/list")
        if r.status_code == 404:
            assert error_codes(r) == ["NAME_UNKNOWN"], r.text
            listed: list[str] = []
        else:
            assert r.status_code == 200, f"tags/list {repo.name}: {r.status_code} {r.text}"
            listed = r.json().get("tags") or []
        assert sorted(listed) == sorted(repo.tags), (
            f"{repo.name}: tags listed {sorted(listed)}, expected {sorted(repo.tags)}"
        )
        # No tag to a missing manifest, no manifest to a missing blob: every listed tag is
        # read; the blobs of every manifest (in full) or of those touched and a sample.
        manifests_read: set[str] = set()
        blobs_seen: set[str] = set()
        sampled = set(self.rng.sample(listed, min(sample, len(listed))))
        for tag in listed:
            digest = self.tag_target(repo, tag)
            assert digest == repo.tags[tag], (
                f"{repo.name}:{tag} points to {digest}, expected {repo.tags[tag]}"
            )
            if full or tag in repo.touched_tags or tag in sampled:
                manifests_read.add(digest)
        present = repo.present_manifests()
        if full:
            to_read = present
        else:
            touched = [m for m in present if m.digest in repo.touched]
            to_read = touched + self.rng.sample(present, min(sample, len(present)))
        for manifest in to_read:
            assert self.manifest_present(repo, manifest.digest), (
                f"{repo.name}: acknowledged manifest {manifest.digest} is gone"
            )
            manifests_read.add(manifest.digest)
        for digest in manifests_read:
            body = json.loads(repo.manifests[digest].content)
            for descriptor in [body["config"], *body["layers"]]:
                if descriptor["digest"] in blobs_seen:
                    continue
                blobs_seen.add(descriptor["digest"])
                self.blob_referenced(repo, descriptor["digest"], descriptor["size"], read=full)
        for manifest in repo.manifests.values():
            if not manifest.present and (full or manifest.digest in repo.touched):
                assert not self.manifest_present(repo, manifest.digest), (
                    f"{repo.name}: manifest {manifest.digest} deleted (or never acknowledged)"
                    " is served"
                )
        for tag in TAGS:
            if tag not in repo.tags and (full or tag in repo.touched_tags):
                assert self.tag_target(repo, tag) is None, f"{repo.name}:{tag} should be gone"
        # Blobs: every one in full; else those touched and a sample of the others.
        blobs = list(repo.blobs.values())
        if not full:
            older = [b for b in blobs if b.present and b.digest not in repo.touched]
            blobs = [b for b in blobs if b.digest in repo.touched]
            blobs += self.rng.sample(older, min(sample, len(older)))
        for blob in blobs:
            if blob.present:
                assert self.blob_present(repo, blob), (
                    f"{repo.name}: acknowledged blob {blob.digest} ({blob.size} bytes) is gone"
                )
            else:
                assert not self.blob_present(repo, blob), (
                    f"{repo.name}: blob {blob.digest} never acknowledged (or left unknown and"
                    " then found absent) is served"
                )
        repo.touched.clear()
        repo.touched_tags.clear()
