/**
 * Standard Webhooks verification, as Overnight signs its callbacks:
 *
 *     const result = verifyWebhook(rawBody, headers, ['whsec_...']);
 *     if (result.ok) result.event.type; // 'job.succeeded', 'batch.completed', ...
 *
 * `webhook-signature` holds one or more `v1,<base64 HMAC-SHA256>` of `id.timestamp.body`,
 * keyed by the base64-decoded part of a `whsec_` secret. Any secret may match (rotation);
 * timestamps more than five minutes away from now are refused (replays).
 */
import { createHmac, timingSafeEqual } from 'crypto';

export const DEFAULT_TOLERANCE_SECONDS = 300;
const SECRET_PREFIX = 'whsec_';

export interface OvernightWebhookEvent {
	type: string;
	timestamp: string;
	data: Record<string, unknown>;
}

export type WebhookVerification =
	| { ok: true; event: OvernightWebhookEvent; webhookId: string }
	| { ok: false; code: string; message: string };

export type HeaderBag = Record<string, string | string[] | undefined>;

function header(headers: HeaderBag, name: string): string {
	for (const [key, value] of Object.entries(headers)) {
		if (key.toLowerCase() === name) {
			return (Array.isArray(value) ? value[0] : value) ?? '';
		}
	}
	return '';
}

/** The HMAC key of a `whsec_` secret (the prefix is optional), or null when it is not base64. */
export function secretKey(secret: string): Buffer | null {
	const encoded = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
	if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) return null;
	const key = Buffer.from(encoded, 'base64');
	return key.length > 0 ? key : null;
}

/** `v1,<signature>` of `id.timestamp.body` under one secret. */
export function signWebhook(
	secret: string,
	webhookId: string,
	timestamp: number,
	body: Buffer | string,
): string {
	const key = secretKey(secret);
	if (key === null) throw new TypeError('webhook secret must be whsec_ followed by base64');
	const mac = createHmac('sha256', key);
	mac.update(`${webhookId}.${timestamp}.`);
	mac.update(typeof body === 'string' ? Buffer.from(body, 'utf8') : body);
	return `v1,${mac.digest('base64')}`;
}

function sameSignature(expected: string, offered: string): boolean {
	const a = Buffer.from(expected);
	const b = Buffer.from(offered);
	return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Check a delivery against the raw request body, byte for byte. Never throws: a refusal says
 * why in `code` (missing_signature, invalid_timestamp, timestamp_out_of_tolerance,
 * invalid_signature, invalid_webhook_payload, no_secret).
 */
export function verifyWebhook(
	rawBody: Buffer | string,
	headers: HeaderBag,
	secrets: string[],
	options: { nowSeconds?: number; toleranceSeconds?: number } = {},
): WebhookVerification {
	const body = typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : rawBody;
	const webhookId = header(headers, 'webhook-id');
	const rawTimestamp = header(headers, 'webhook-timestamp').trim();
	const signatures = header(headers, 'webhook-signature');
	if (!webhookId || !rawTimestamp || !signatures) {
		return {
			ok: false,
			code: 'missing_signature',
			message:
				'missing webhook-id, webhook-timestamp or webhook-signature: not a Standard Webhooks delivery',
		};
	}
	if (!/^\d+$/.test(rawTimestamp)) {
		return {
			ok: false,
			code: 'invalid_timestamp',
			message: 'webhook-timestamp must be integer unix seconds',
		};
	}
	const timestamp = Number(rawTimestamp);
	const now = options.nowSeconds ?? Date.now() / 1000;
	const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
	if (Math.abs(now - timestamp) > tolerance) {
		return {
			ok: false,
			code: 'timestamp_out_of_tolerance',
			message: `webhook timestamp is ${Math.round(now - timestamp)}s away from now (tolerance ${tolerance}s)`,
		};
	}
	const usable = secrets.filter((secret) => secret && secretKey(secret) !== null);
	if (usable.length === 0) {
		return { ok: false, code: 'no_secret', message: 'no valid whsec_ secret to verify with' };
	}
	const offered = signatures.split(' ').filter((part) => part.startsWith('v1,'));
	const expected = usable.map((secret) => signWebhook(secret, webhookId, timestamp, body));
	if (!expected.some((e) => offered.some((o) => sameSignature(e, o)))) {
		return {
			ok: false,
			code: 'invalid_signature',
			message:
				"no webhook signature matches: the body was changed, or the secret is not this tenant's",
		};
	}
	let event: unknown;
	try {
		event = JSON.parse(body.toString('utf8'));
	} catch {
		event = undefined;
	}
	const candidate = event as Partial<OvernightWebhookEvent> | undefined;
	if (
		!candidate ||
		typeof candidate.type !== 'string' ||
		typeof candidate.data !== 'object' ||
		candidate.data === null
	) {
		return {
			ok: false,
			code: 'invalid_webhook_payload',
			message: 'signature is valid but the body is not an Overnight webhook event',
		};
	}
	return { ok: true, event: candidate as OvernightWebhookEvent, webhookId };
}
