-- 0002: OpenAI Files and Batches, and a per-tenant webhook endpoint for batch events.

ALTER TABLE tenants ADD COLUMN webhook_url TEXT;

CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    purpose     TEXT NOT NULL,
    filename    TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    path        TEXT NOT NULL,               -- where the content lives on disk
    created_at  REAL NOT NULL,
    deleted_at  REAL
);
CREATE INDEX files_tenant ON files(tenant_id, created_at DESC);

CREATE TABLE openai_batches (
    id                TEXT PRIMARY KEY REFERENCES batches(id),
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    endpoint          TEXT NOT NULL,
    input_file_id     TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status            TEXT NOT NULL,         -- validating | in_progress | finalizing | completed
                                             -- | failed | expired | cancelling | cancelled
    output_file_id    TEXT,
    error_file_id     TEXT,
    errors            TEXT NOT NULL,         -- JSON list of {code, message, line, param}
    metadata          TEXT NOT NULL,
    created_at        REAL NOT NULL,
    expires_at        REAL NOT NULL,
    in_progress_at    REAL,
    finalizing_at     REAL,
    completed_at      REAL,
    failed_at         REAL,
    expired_at        REAL,
    cancelling_at     REAL,
    cancelled_at      REAL
);
CREATE INDEX openai_batches_open ON openai_batches(status)
    WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');
