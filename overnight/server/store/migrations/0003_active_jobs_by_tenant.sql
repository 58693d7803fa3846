-- 0003: count a tenant's unfinished jobs cheaply (queue admission control, 429).
CREATE INDEX jobs_tenant_active ON jobs(tenant_id) WHERE state IN ('queued', 'running');
