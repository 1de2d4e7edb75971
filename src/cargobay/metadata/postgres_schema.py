"""PostgreSQL schema migrations: append a new list of statements; never edit a released one.

Version 1 is SQLite's migrations 1-3 in PostgreSQL types: bigint sizes, bytea for bytes, jsonb
for scopes, JSON text for annotations (jsonb refuses the NUL a manifest may carry), timestamps as
double precision epoch seconds (the Python interface's floats). Names, tags and digests use
COLLATE "C": byte order, as the spec's pagination and the SQLite store expect, and memcmp
comparisons in every index.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE repositories (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text COLLATE "C" NOT NULL UNIQUE,
            created_at double precision NOT NULL
        )""",
        """CREATE TABLE blobs (
            digest text COLLATE "C" PRIMARY KEY,
            size bigint NOT NULL,
            created_at double precision NOT NULL
        )""",
        """CREATE TABLE repository_blobs (
            repository_id bigint NOT NULL REFERENCES repositories (id),
            digest text COLLATE "C" NOT NULL REFERENCES blobs (digest),
            created_at double precision NOT NULL,
            PRIMARY KEY (repository_id, digest)
        )""",
        "CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest)",
        """CREATE TABLE manifests (
            repository_id bigint NOT NULL REFERENCES repositories (id),
            digest text COLLATE "C" NOT NULL,
            media_type text NOT NULL,
            artifact_type text,
            subject text COLLATE "C",
            annotations text,
            content bytea NOT NULL,
            created_at double precision NOT NULL,
            PRIMARY KEY (repository_id, digest)
        )""",
        """CREATE INDEX manifests_by_subject ON manifests (repository_id, subject, digest)
            WHERE subject IS NOT NULL""",
        """CREATE TABLE manifest_references (
            repository_id bigint NOT NULL,
            manifest_digest text COLLATE "C" NOT NULL,
            digest text COLLATE "C" NOT NULL,
            kind text NOT NULL CHECK (kind IN ('blob', 'manifest')),
            PRIMARY KEY (repository_id, manifest_digest, digest, kind),
            FOREIGN KEY (repository_id, manifest_digest)
                REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
        )""",
        "CREATE INDEX manifest_references_by_target ON manifest_references (repository_id, digest)",
        """CREATE TABLE tags (
            repository_id bigint NOT NULL,
            name text COLLATE "C" NOT NULL,
            digest text COLLATE "C" NOT NULL,
            updated_at double precision NOT NULL,
            PRIMARY KEY (repository_id, name),
            FOREIGN KEY (repository_id, digest)
                REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
        )""",
        "CREATE INDEX tags_by_digest ON tags (repository_id, digest)",
        """CREATE TABLE uploads (
            id text COLLATE "C" PRIMARY KEY,
            repository text NOT NULL,
            algorithm text NOT NULL,
            size bigint NOT NULL,
            hash_state bytea,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL
        )""",
        "CREATE INDEX uploads_by_age ON uploads (updated_at)",
        """CREATE TABLE api_tokens (
            id text COLLATE "C" PRIMARY KEY,
            name text NOT NULL,
            secret_hash bytea NOT NULL,
            scopes jsonb NOT NULL,
            created_at double precision NOT NULL,
            revoked_at double precision,
            kind text NOT NULL DEFAULT 'robot'
        )""",
    ],
    [
        # Garbage collection review queues (cargobay.lifecycle.gc) and tombstones: blobs
        # decided deleted whose bytes may still be in the blob store.
        """CREATE TABLE gc_link_reviews (
            repository_id bigint NOT NULL,
            digest text COLLATE "C" NOT NULL,
            since double precision NOT NULL,
            PRIMARY KEY (repository_id, digest)
        )""",
        "CREATE INDEX gc_link_reviews_by_since ON gc_link_reviews (since)",
        """CREATE TABLE gc_blob_reviews (
            digest text COLLATE "C" PRIMARY KEY,
            since double precision NOT NULL
        )""",
        "CREATE INDEX gc_blob_reviews_by_since ON gc_blob_reviews (since)",
        # A blob any manifest references is kept, even where its link was deleted.
        """CREATE INDEX manifest_references_by_blob ON manifest_references (digest)
            WHERE kind = 'blob'""",
        """CREATE TABLE gc_tombstones (
            digest text COLLATE "C" PRIMARY KEY,
            size bigint NOT NULL,
            decided_at double precision NOT NULL
        )""",
        # What earlier versions left behind (unreferenced links, unlinked blobs) is reviewed
        # from the upgrade on.
        """INSERT INTO gc_link_reviews (repository_id, digest, since)
            SELECT rb.repository_id, rb.digest, extract(epoch FROM now())
            FROM repository_blobs rb WHERE NOT EXISTS (
                SELECT FROM manifest_references mr WHERE mr.repository_id = rb.repository_id
                AND mr.digest = rb.digest AND mr.kind = 'blob')""",
        """INSERT INTO gc_blob_reviews (digest, since)
            SELECT b.digest, extract(epoch FROM now()) FROM blobs b
            WHERE NOT EXISTS (SELECT FROM repository_blobs rb WHERE rb.digest = b.digest)""",
    ],
    # Retention policies (cargobay.lifecycle.retention).
    [
        # When the manifest was last pulled (GET), recorded in batches (lifecycle.pull_times).
        "ALTER TABLE manifests ADD COLUMN pulled_at double precision",
    ],
    # Quotas (cargobay.lifecycle.quota; see metadata/postgres_quota.py): a quota's
    # repositories, the blobs charged to it (each once), and its charged bytes in shards
    # (shard 0 is locked and added to by pushes, the others subtracted from by unlinks).
    [
        """CREATE TABLE quota_repositories (
            quota text COLLATE "C" NOT NULL,
            repository_id bigint NOT NULL,
            PRIMARY KEY (quota, repository_id)
        )""",
        "CREATE INDEX quota_repositories_by_repository ON quota_repositories (repository_id)",
        """CREATE TABLE quota_blobs (
            quota text COLLATE "C" NOT NULL,
            digest text COLLATE "C" NOT NULL,
            size bigint NOT NULL,
            PRIMARY KEY (quota, digest)
        )""",
        """CREATE TABLE quota_usage (
            quota text COLLATE "C" NOT NULL,
            shard integer NOT NULL,
            bytes bigint NOT NULL,
            PRIMARY KEY (quota, shard)
        )""",
    ],
]
