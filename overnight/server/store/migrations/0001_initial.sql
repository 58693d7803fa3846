-- 0001: tenants, API keys, jobs, attempts, batches, webhook outbox.
-- Times are UNIX epoch seconds (REAL). JSON columns hold the wire models.

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    webhook_secrets TEXT NOT NULL,          -- JSON list, newest first
    created_at      REAL NOT NULL
);

CREATE TABLE api_keys (
    key_sha256  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    prefix      TEXT NOT NULL,              -- first characters, to tell keys apart
    created_at  REAL NOT NULL,
    revoked_at  REAL
);

CREATE TABLE batches (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    callback_url TEXT,
    metadata     TEXT NOT NULL,
    created_at   REAL NOT NULL,
    completed_at REAL
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    model            TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority_rank    INTEGER NOT NULL,
    request          TEXT NOT NULL,
    request_sha256   TEXT NOT NULL,
    idempotency_key  TEXT,
    batch_id         TEXT REFERENCES batches(id),
    callback_url     TEXT,
    metadata         TEXT NOT NULL,
    max_attempts     INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,  -- fencing token of the current lease
    lease_owner      TEXT,
    lease_expires_at REAL,
    available_at     REAL NOT NULL,               -- not claimable before (retry backoff)
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    expires_at       REAL NOT NULL,
    result           TEXT,
    error            TEXT,
    usage            TEXT,
    engine_seconds   REAL NOT NULL DEFAULT 0,
    queued_seconds   REAL,
    receipt          TEXT
);
-- rowid is the insertion order: FIFO within a priority, and the list cursor.
CREATE UNIQUE INDEX jobs_idempotency ON jobs(tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_claimable ON jobs(model, priority_rank DESC)
    WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs(lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_deadline ON jobs(expires_at) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_tenant ON jobs(tenant_id);
CREATE INDEX jobs_batch ON jobs(batch_id, state) WHERE batch_id IS NOT NULL;

CREATE TABLE attempts (
    job_id     TEXT NOT NULL REFERENCES jobs(id),
    number     INTEGER NOT NULL,
    worker     TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL,
    error      TEXT,
    PRIMARY KEY (job_id, number)
);

CREATE TABLE webhook_outbox (
    id               TEXT PRIMARY KEY,      -- the stable webhook-id
    tenant_id        TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL,          -- pending | delivered | gave_up
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    delivered_at     REAL
);
CREATE INDEX outbox_due ON webhook_outbox(next_attempt_at) WHERE state = 'pending';
