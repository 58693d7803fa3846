/**
 * Idempotency keys for n8n, the same derivation as `overnight._hashing.derive_idempotency_key`:
 *
 *     deriveIdempotencyKey('n8n', executionId, nodeName, runIndex, itemIndex)
 *     // 'n8n:' + sha256(canonical JSON of the parts as strings)[:40]
 *
 * A re-run inside the same execution (Retry On Fail, a worker crash that n8n recovers) derives
 * the same key, so the service returns the job it already accepted instead of running it again.
 */
import { createHash } from 'crypto';

export const N8N_NAMESPACE = 'n8n';

/**
 * `JSON.stringify` of a list of strings is Python's `json.dumps(parts, sort_keys=True,
 * separators=(",", ":"), ensure_ascii=False)`: both escape only `"`, `\` and control
 * characters, the same way. Parts are strings or integers (`String(3) === str(3)`).
 */
export function deriveIdempotencyKey(namespace: string, ...parts: Array<string | number>): string {
	const canonical = JSON.stringify(parts.map((part) => String(part)));
	const digest = createHash('sha256').update(canonical, 'utf8').digest('hex');
	return `${namespace}:${digest.slice(0, 40)}`;
}

/** The key of one item of one run of a node in one execution. */
export function itemIdempotencyKey(
	executionId: string,
	nodeName: string,
	runIndex: number,
	itemIndex: number,
): string {
	return deriveIdempotencyKey(N8N_NAMESPACE, executionId, nodeName, runIndex, itemIndex);
}

/** The key of a whole bulk request; the service derives each job's key from it and the index. */
export function requestIdempotencyKey(
	executionId: string,
	nodeName: string,
	runIndex: number,
): string {
	return deriveIdempotencyKey(N8N_NAMESPACE, executionId, nodeName, runIndex);
}
