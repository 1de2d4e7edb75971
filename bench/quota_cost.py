"""What quotas cost, on both metadata stores, with N blobs charged to one quota.

    python -m bench.quota_cost [--blobs N]

Fills the metadata (in bulk, with SQL) with N blobs in 100 repositories of team/*, every blob
referenced by a manifest (10 per manifest, one tag each), then times:
- setting up a quota over them (what a new quota costs at start: its usage computed from the
  links);
- computing the usage by query at every push instead (distinct linked, referenced blobs);
- reading the maintained usage (the sum of the shards) and counting the quota's tags;
- a manifest push with and without the quota check (median of 200).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg

from cargobay.auth.policy import repository_matches
from cargobay.metadata.base import ManifestRecord, MetadataStore, QuotaCheck
from cargobay.metadata.postgres import PostgresMetadataStore
from cargobay.metadata.sqlite import SQLiteMetadataStore
from tests.services.postgres import PostgresServer

KEY = "team/*"
REPOSITORIES = 100
PER_MANIFEST = 10
BY_QUERY = """
    SELECT coalesce(sum(size), 0) FROM (SELECT DISTINCT rb.digest, b.size
    FROM repositories r JOIN repository_blobs rb ON rb.repository_id = r.id
    JOIN blobs b ON b.digest = rb.digest
    WHERE r.name LIKE 'team/%' AND EXISTS (SELECT 1 FROM manifest_references mr
        WHERE mr.repository_id = rb.repository_id AND mr.digest = rb.digest)) AS charged"""


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def rows(blobs: int) -> dict[str, list[tuple[Any, ...]]]:
    now = time.time()
    data: dict[str, list[tuple[Any, ...]]] = {
        "repositories": [(i + 1, f"team/r{i}", now) for i in range(REPOSITORIES)],
        "blobs": [],
        "repository_blobs": [],
        "manifests": [],
        "manifest_references": [],
        "tags": [],
    }
    for i in range(blobs):
        repo_id = 1 + i % REPOSITORIES
        data["blobs"].append((digest(f"b{i}"), 1000 + i % 997, now))
        data["repository_blobs"].append((repo_id, digest(f"b{i}"), now))
    for m in range(blobs // PER_MANIFEST):
        repo_id = 1 + m % REPOSITORIES
        manifest = digest(f"m{m}")
        data["manifests"].append((repo_id, manifest, "application/json", b"{}", now))
        data["tags"].append((repo_id, f"t{m}", manifest, now))
        for k in range(PER_MANIFEST):
            i = m + k * (blobs // PER_MANIFEST)  # blob i lives in repository i % 100
            if i % REPOSITORIES == m % REPOSITORIES:
                data["manifest_references"].append((repo_id, manifest, digest(f"b{i}"), "blob"))
    return data


COLUMNS = {
    "repositories": "id, name, created_at",
    "blobs": "digest, size, created_at",
    "repository_blobs": "repository_id, digest, created_at",
    "manifests": "repository_id, digest, media_type, content, created_at",
    "manifest_references": "repository_id, manifest_digest, digest, kind",
    "tags": "repository_id, name, digest, updated_at",
}


def covers() -> dict[str, Callable[[str], bool]]:
    return {KEY: partial(lambda name, patterns: repository_matches(name, patterns), patterns=[KEY])}


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def pushes(meta: MetadataStore, checks: list[QuotaCheck], start: int) -> float:
    times = []
    for i in range(start, start + 200):
        await meta.link_blob("team/r0", digest(f"new{i}"), 1000)
        record = ManifestRecord(
            digest(f"pushed{i}"), "application/json", b"{}", blob_references=(digest(f"new{i}"),)
        )
        times.append(
            await timed(
                partial(meta.put_manifest, "team/r0", record, [f"p{i}"], quota_checks=checks)
            )
        )
    return statistics.median(times)


async def measure(name: str, meta: MetadataStore, query: Callable[[str], Awaitable[Any]]) -> None:
    setup = await timed(lambda: meta.set_up_quotas(covers()))
    await query("ANALYZE")  # as autovacuum would: the quota tables were just filled
    (usage,) = await meta.quota_usage([KEY])
    by_query = await timed(lambda: query(BY_QUERY))
    read = await timed(lambda: meta.quota_usage([KEY]))
    plain = await pushes(meta, [], 0)
    checked = await pushes(meta, [QuotaCheck(KEY, max_bytes=1 << 50, max_tags=1 << 30)], 1000)
    print(
        f"{name}: {usage.bytes:,} bytes in {usage.tags:,} tags charged;"
        f" set-up {setup * 1000:.0f} ms; usage by query {by_query * 1000:.1f} ms;"
        f" maintained usage + tag count {read * 1000:.1f} ms;"
        f" push {plain * 1000:.2f} ms, with the quota check {checked * 1000:.2f} ms"
    )


async def sqlite(blobs: int) -> None:
    import sqlite3

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metadata.db"
        meta = SQLiteMetadataStore(path, synchronous="FULL")
        meta.migrate()
        db = sqlite3.connect(path)
        for table, values in rows(blobs).items():
            marks = ",".join("?" * len(values[0]))
            db.executemany(f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({marks})", values)
        db.commit()
        db.close()

        async def query(sql: str) -> Any:
            return meta._db.execute(sql).fetchall()

        await measure("files + SQLite", meta, query)
        await meta.close()


async def postgres(blobs: int) -> None:
    server = PostgresServer().start()
    try:
        url = server.create_database("quotacost")
        meta = PostgresMetadataStore(url)
        meta.migrate()
        conn = await asyncpg.connect(url)
        for table, values in rows(blobs).items():
            columns = COLUMNS[table].split(", ")
            if table == "repositories":
                await conn.execute(
                    "INSERT INTO repositories (id, name, created_at) OVERRIDING SYSTEM VALUE"
                    " SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[])",
                    *zip(*values, strict=True),
                )
                continue
            await conn.copy_records_to_table(table, records=values, columns=columns)
        await conn.execute("ANALYZE")

        async def query(sql: str) -> Any:
            return await conn.fetchval(sql)

        await measure("PostgreSQL", meta, query)
        await conn.close()
        await meta.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blobs", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(sqlite(args.blobs))
    asyncio.run(postgres(args.blobs))


if __name__ == "__main__":
    main()
