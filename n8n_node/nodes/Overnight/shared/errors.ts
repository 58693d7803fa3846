/**
 * Error mapping, mirroring `overnight._exceptions.error_from_response`: each error says whether
 * retrying can help, and n8n hears it as the error's `failure` cause.
 *
 *     errorFromResponse(429, {error: {code: 'rate_limited', message: '...'}}, 2)
 *     // {kind: 'RateLimitError', retryable: true, status: 429, retryAfter: 2, ...}
 */
import type { Failure } from 'n8n-workflow';

export interface OvernightErrorInfo {
	/** The Python SDK's class name: InvalidRequestError, RateLimitError, TransportError, ... */
	kind: string;
	code: string;
	message: string;
	param: string | null;
	/** HTTP status; 0 when the service could not be reached. */
	status: number;
	retryable: boolean;
	retryAfter: number | null;
}

const KINDS: Record<number, [string, string]> = {
	400: ['InvalidRequestError', 'invalid_request'],
	401: ['AuthenticationError', 'unauthorized'],
	403: ['AuthenticationError', 'unauthorized'],
	404: ['NotFoundError', 'not_found'],
	409: ['ConflictError', 'conflict'],
	413: ['PayloadTooLargeError', 'payload_too_large'],
	422: ['InvalidRequestError', 'invalid_request'],
	429: ['RateLimitError', 'rate_limited'],
};

const RETRYABLE_KINDS = new Set(['RateLimitError', 'ServiceError', 'TransportError']);

function kindFor(status: number): [string, string] {
	return KINDS[status] ?? (status >= 500 ? ['ServiceError', 'service_error'] : KINDS[400]);
}

/** The error an HTTP status and decoded body stand for. */
export function errorFromResponse(
	status: number,
	body: unknown,
	retryAfter: number | null = null,
): OvernightErrorInfo {
	const [kind, defaultCode] = kindFor(status);
	const wrapper = body && typeof body === 'object' ? (body as Record<string, unknown>) : null;
	const detail =
		wrapper && wrapper.error && typeof wrapper.error === 'object' && !Array.isArray(wrapper.error)
			? (wrapper.error as Record<string, unknown>)
			: null;
	let message: string;
	let code = defaultCode;
	let param: string | null = null;
	if (detail) {
		message = detail.message ? String(detail.message) : `HTTP ${status}`;
		if (detail.code) code = String(detail.code);
		param = detail.param === undefined || detail.param === null ? null : String(detail.param);
	} else {
		const text = typeof body === 'string' ? body : body === undefined ? '' : JSON.stringify(body);
		message = text.slice(0, 500) || `HTTP ${status}`;
	}
	return { kind, code, message, param, status, retryable: RETRYABLE_KINDS.has(kind), retryAfter };
}

/** The service could not be reached (connection refused, DNS, timeout): worth retrying. */
export function transportError(message: string): OvernightErrorInfo {
	return {
		kind: 'TransportError',
		code: 'transport_error',
		message,
		param: null,
		status: 0,
		retryable: true,
		retryAfter: null,
	};
}

/** `Retry-After` in seconds (delta form), or null. */
export function parseRetryAfter(value: unknown): number | null {
	const text = Array.isArray(value) ? value[0] : value;
	if (typeof text !== 'string' && typeof text !== 'number') return null;
	const seconds = Number(text);
	return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** n8n's reading of the same error: a wait helps, or someone has to change something. */
export function failureFor(info: OvernightErrorInfo): Failure {
	if (info.kind === 'RateLimitError') {
		return info.retryAfter === null
			? { cause: 'rate-limited' }
			: { cause: 'rate-limited', retryAfterMs: Math.round(info.retryAfter * 1000) };
	}
	if (info.retryable) return { cause: 'temporarily-unavailable' };
	if (info.kind === 'AuthenticationError') return { cause: 'credential-invalid' };
	return { cause: 'configuration-invalid' };
}

/** A one-line summary for the node's error description. */
export function describeError(info: OvernightErrorInfo): string {
	const where = info.param ? ` (parameter: ${info.param})` : '';
	const retry = info.retryable
		? 'Retrying may help: the failure is transient.'
		: 'Retrying will not help until the request or the credential changes.';
	return `[${info.code}]${where} ${retry}`;
}
