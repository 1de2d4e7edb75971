"""SQLite schema migrations: append a new list of statements; never edit a released one."""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE repositories (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE blobs (
            digest TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            created_at REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE repository_blobs (
            repository_id INTEGER NOT NULL REFERENCES repositories (id),
            digest TEXT NOT NULL REFERENCES blobs (digest),
            created_at REAL NOT NULL,
            PRIMARY KEY (repository_id, digest)
        ) WITHOUT ROWID""",
        "CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest)",
        """CREATE TABLE manifests (
            repository_id INTEGER NOT NULL REFERENCES repositories (id),
            digest TEXT NOT NULL,
            media_type TEXT NOT NULL,
            artifact_type TEXT,
            subject TEXT,
            annotations TEXT,
            content BLOB NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (repository_id, digest)
        )""",
        """CREATE INDEX manifests_by_subject ON manifests (repository_id, subject, digest)
            WHERE subject IS NOT NULL""",
        """CREATE TABLE manifest_references (
            repository_id INTEGER NOT NULL,
            manifest_digest TEXT NOT NULL,
            digest TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
            PRIMARY KEY (repository_id, manifest_digest, digest, kind),
            FOREIGN KEY (repository_id, manifest_digest)
                REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
        ) WITHOUT ROWID""",
        "CREATE INDEX manifest_references_by_target ON manifest_references (repository_id, digest)",
        """CREATE TABLE tags (
            repository_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (repository_id, name),
            FOREIGN KEY (repository_id, digest)
                REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
        ) WITHOUT ROWID""",
        "CREATE INDEX tags_by_digest ON tags (repository_id, digest)",
        """CREATE TABLE uploads (
            id TEXT PRIMARY KEY,
            repository TEXT NOT NULL,
            algorithm TEXT NOT NULL,
            size INTEGER NOT NULL,
            hash_state BLOB,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX uploads_by_age ON uploads (updated_at)",
    ],
    [
        """CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash BLOB NOT NULL,
            scopes TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        ) WITHOUT ROWID""",
    ],
    [
        # Refresh tokens of the token server live beside robot tokens.
        "ALTER TABLE api_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'robot'",
    ],
    [
        # Garbage collection review queues (cargobay.lifecycle.gc) and tombstones: blobs
        # decided deleted whose bytes may still be in the blob store.
        """CREATE TABLE gc_link_reviews (
            repository_id INTEGER NOT NULL,
            digest TEXT NOT NULL,
            since REAL NOT NULL,
            PRIMARY KEY (repository_id, digest)
        ) WITHOUT ROWID""",
        "CREATE INDEX gc_link_reviews_by_since ON gc_link_reviews (since)",
        """CREATE TABLE gc_blob_reviews (
            digest TEXT PRIMARY KEY,
            since REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX gc_blob_reviews_by_since ON gc_blob_reviews (since)",
        # A blob any manifest references is kept, even where its link was deleted.
        """CREATE INDEX manifest_references_by_blob ON manifest_references (digest)
            WHERE kind = 'blob'""",
        """CREATE TABLE gc_tombstones (
            digest TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            decided_at REAL NOT NULL
        ) WITHOUT ROWID""",
        # What earlier versions left behind (unreferenced links, unlinked blobs) is reviewed
        # from the upgrade on.
        """INSERT INTO gc_link_reviews (repository_id, digest, since)
            SELECT rb.repository_id, rb.digest, CAST(strftime('%s', 'now') AS REAL)
            FROM repository_blobs rb WHERE NOT EXISTS (
                SELECT 1 FROM manifest_references mr WHERE mr.repository_id = rb.repository_id
                AND mr.digest = rb.digest AND mr.kind = 'blob')""",
        """INSERT INTO gc_blob_reviews (digest, since)
            SELECT b.digest, CAST(strftime('%s', 'now') AS REAL) FROM blobs b
            WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)""",
    ],
    # Retention policies (cargobay.lifecycle.retention).
    [
        # When the manifest was last pulled (GET), recorded in batches (lifecycle.pull_times).
        "ALTER TABLE manifests ADD COLUMN pulled_at REAL",
    ],
    # Quotas (cargobay.lifecycle.quota; see metadata/sqlite_quota.py): a quota's repositories,
    # the blobs charged to it (each once), and its charged bytes in shards (shard 0 is added
    # to by pushes, the others subtracted from by unlinks).
    [
        """CREATE TABLE quota_repositories (
            quota TEXT NOT NULL,
            repository_id INTEGER NOT NULL,
            PRIMARY KEY (quota, repository_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX quota_repositories_by_repository ON quota_repositories (repository_id)",
        """CREATE TABLE quota_blobs (
            quota TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (quota, digest)
        ) WITHOUT ROWID""",
        """CREATE TABLE quota_usage (
            quota TEXT NOT NULL,
            shard INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            PRIMARY KEY (quota, shard)
        ) WITHOUT ROWID""",
    ],
]
