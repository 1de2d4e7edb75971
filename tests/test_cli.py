from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import yaml

from cargobay.metadata.base import QuotaCheck
from cargobay.metadata.sqlite import SQLiteMetadataStore
from cargobay.registry.digest import Digest
from cargobay.storage.filesystem import FilesystemBlobStore
from tests.metadata.test_contract import d, manifest


def cargobay(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cargobay", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_add_passwd_remove(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    config = tmp_path / "c.yml"
    config.write_text("auth: {htpasswd: htpasswd}\n")  # relative to the config file
    assert cargobay("user", "add", "alice", "--config", str(config), stdin="pw1\n").returncode == 0
    hashed = htpasswd.read_text().strip().split(":", 1)[1].encode()
    assert bcrypt.checkpw(b"pw1", hashed)
    assert cargobay("user", "add", "alice", "--config", str(config), stdin="x\n").returncode != 0
    assert (
        cargobay("user", "passwd", "alice", "--config", str(config), stdin="pw2\n").returncode == 0
    )
    hashed = htpasswd.read_text().strip().split(":", 1)[1].encode()
    assert bcrypt.checkpw(b"pw2", hashed)
    cargobay("user", "add", "bob", "--htpasswd", str(htpasswd), stdin="pw\n")
    listed = cargobay("user", "list", "--htpasswd", str(htpasswd))
    assert listed.stdout.split() == ["alice", "bob"]
    assert cargobay("user", "remove", "alice", "--htpasswd", str(htpasswd)).returncode == 0
    assert cargobay("user", "list", "--htpasswd", str(htpasswd)).stdout.split() == ["bob"]
    assert htpasswd.stat().st_mode & 0o077 == 0


def test_serve_refuses_a_non_bcrypt_htpasswd(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    config = tmp_path / "c.yml"
    config.write_text("auth: {htpasswd: htpasswd}\n")
    result = cargobay(
        "serve", "--config", str(config), "--listen", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    assert result.returncode != 0
    assert "bcrypt" in result.stderr


def test_config_check_lists_every_problem_with_its_key_path(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(
        "workers: many\n"
        "registry: {nope: 1, delete_enabled: maybe}\n"
        "storage: {driver: s3}\n"
        "secret: ${CARGOBAY_TEST_UNSET}\n"
        "auth: {htpasswd: h, access: [{users: [x], repositories: ['*'], actions: [fly]}]}\n"
    )
    result = cargobay("config", "check", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "cargobay: secret: environment variable CARGOBAY_TEST_UNSET is not set",
        "cargobay: workers must be int, not 'many'",
        "cargobay: unknown setting registry.nope",
        "cargobay: registry.delete_enabled must be bool, not 'maybe'",
        "cargobay: storage.s3.bucket is required with the s3 driver",
        "cargobay: auth.access[0].actions: unknown action 'fly'",
    ]
    config.write_text("workers: 2\n")
    ok = cargobay("config", "check", str(config))
    assert (ok.returncode, ok.stdout) == (0, f"{config}: OK\n")
    missing = cargobay("config", "check", str(tmp_path / "nowhere.yml"))
    assert missing.returncode == 2
    assert "cannot read config file" in missing.stderr


def test_config_dump_shows_the_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(
        "secret: hunter2\n"
        "metadata: {driver: postgres, url: 'postgresql://reg:pa55word@db:5432/reg'}\n"
        "storage: {driver: s3, s3: {bucket: b, secret_access_key: s3cr3t, access_key_id: AK}}\n"
    )
    env_run = subprocess.run(
        [sys.executable, "-m", "cargobay", "config", "dump", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"CARGOBAY_WORKERS": "7", "PATH": "/usr/bin:/bin"},
    )
    assert env_run.returncode == 0, env_run.stderr
    dumped = yaml.safe_load(env_run.stdout)
    assert dumped["workers"] == 7  # the environment wins over the file
    assert dumped["secret"] == "***"
    assert dumped["storage"]["s3"]["secret_access_key"] == "***"
    assert dumped["storage"]["s3"]["access_key_id"] == "AK"
    assert dumped["metadata"]["url"] == "postgresql://reg:***@db:5432/reg"
    for secret in ("hunter2", "pa55word", "s3cr3t"):
        assert secret not in env_run.stdout


async def stored_blob(root: Path, data: bytes) -> Digest:
    """A blob committed to a filesystem store and recorded in the SQLite metadata, as a push
    would leave it."""
    blobs = FilesystemBlobStore(root)
    meta = SQLiteMetadataStore(root / "metadata.db")
    meta.migrate()
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    await blobs.start_upload(digest.encoded)

    async def body() -> AsyncIterator[bytes]:
        yield data

    size = await blobs.append_upload(digest.encoded, 0, body())
    await blobs.commit_upload(digest.encoded, size, digest)
    await meta.link_blob("r/x", str(digest), size)
    await meta.close()
    return digest


def test_verify_reports_missing_and_corrupt_blobs(tmp_path: Path) -> None:
    good, gone, bad = (asyncio.run(stored_blob(tmp_path, d)) for d in (b"good", b"gone", b"bad!"))
    ok = cargobay("verify", "--data-dir", str(tmp_path), "--digests")
    assert ok.returncode == 0, ok.stderr
    assert "checked 3 blobs, 12 bytes" in ok.stdout and "all good" in ok.stdout

    def path(digest: Digest) -> Path:
        return tmp_path / "blobs" / digest.algorithm / digest.encoded[:2] / digest.encoded

    path(gone).unlink()
    path(bad).write_bytes(b"bad?")  # same size, other bytes
    quick = cargobay("verify", "--data-dir", str(tmp_path))
    assert quick.returncode == 1
    assert f"1 blobs missing from the blob store:\n  {gone}" in quick.stdout
    assert str(bad) not in quick.stdout  # sizes match: only --digests reads the bytes
    full = cargobay("verify", "--data-dir", str(tmp_path), "--digests")
    assert full.returncode == 1
    assert f"1 blobs with the wrong digest:\n  {bad}" in full.stdout
    assert str(good) not in full.stdout


async def quota_usage(root: Path, *keys: str) -> list[tuple[str, int, int, int]]:
    meta = SQLiteMetadataStore(root / "metadata.db")
    try:
        return [(u.key, u.bytes, u.tags, u.repositories) for u in await meta.quota_usage(keys)]
    finally:
        await meta.close()


async def charged_quotas(root: Path) -> None:
    """Quotas team/* and old/* set up, as running instances leave them, with a push charged."""
    meta = SQLiteMetadataStore(root / "metadata.db")
    meta.migrate()
    keys = {"team/*": lambda name: name.startswith("team/"), "old/*": lambda name: False}
    await meta.set_up_quotas(keys)
    await meta.link_blob("team/a", d("layer"), 100)
    record = manifest("m1", blob_references=(d("layer"),))
    await meta.put_manifest("team/a", record, ["v1"], quota_checks=[QuotaCheck("team/*")])
    await meta.close()


def test_quota_reads_only(tmp_path: Path) -> None:
    """`cargobay quota` neither drops the quotas its configuration lacks nor sets up those the
    metadata does not know."""
    asyncio.run(charged_quotas(tmp_path))
    config = tmp_path / "c.yml"
    config.write_text(
        "quotas:\n"
        "  - {repositories: ['team/*'], max_bytes: 1000}\n"
        "  - {repositories: ['new/*'], max_tags: 5}\n"
    )
    shown = cargobay("quota", "--config", str(config), "--data-dir", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    team = next(line for line in shown.stdout.splitlines() if "team/*" in line)
    assert "100 B" in team and "1000 B" in team, shown.stdout
    new = next(line for line in shown.stdout.splitlines() if "new/*" in line)
    assert "not set up" in new, shown.stdout
    config.write_text("quotas: []\n")
    assert cargobay("quota", "--config", str(config), "--data-dir", str(tmp_path)).returncode == 0
    assert asyncio.run(quota_usage(tmp_path, "team/*", "old/*", "new/*")) == [
        ("team/*", 100, 1, 1),
        ("old/*", 0, 0, 0),
    ]
