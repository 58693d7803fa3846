/**
 * Request bodies and output items, free of n8n's runtime so they test on their own:
 *
 *     buildJobBody({ model: 'smollm2-135m', input: 'messages',
 *                    messages: [{ role: 'user', content: 'Hi' }], options: { maxTokens: 32 } })
 *     // { model: 'smollm2-135m', messages: [...], max_tokens: 32 }
 *
 * The body is what `POST /v1/jobs` takes (one item of `POST /v1/jobs/bulk`): an OpenAI-shaped
 * chat or completion request plus metadata, priority, callback_url and the other queue options.
 */

export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

export interface ChatMessage {
	role: ChatRole | string;
	content: string;
}

export interface JobOptions {
	maxTokens?: number;
	temperature?: number;
	topP?: number;
	stop?: string[] | string;
	seed?: number;
	responseFormat?: 'text' | 'json_object';
	metadata?: Record<string, string>;
	priority?: 'interactive' | 'standard' | 'batch';
	callbackUrl?: string;
	completionWindow?: string;
	maxAttempts?: number;
}

export interface JobParameters {
	model: string;
	/** `messages` (a chat), `prompt` (raw completion, no chat template) or `messagesJson`. */
	input: 'messages' | 'prompt' | 'messagesJson';
	messages?: ChatMessage[];
	prompt?: string;
	/** An array of `{role, content}`, as JSON text or already parsed (from an expression). */
	messagesJson?: unknown;
	options?: JobOptions;
}

export class RequestBuildError extends Error {
	constructor(
		message: string,
		readonly param: string,
	) {
		super(message);
		this.name = 'RequestBuildError';
	}
}

const INVALID = Symbol('invalid JSON');

function parseJson(text: string): unknown {
	try {
		return JSON.parse(text);
	} catch {
		return INVALID;
	}
}

function parseMessages(value: unknown): ChatMessage[] {
	let parsed: unknown = value;
	if (typeof value === 'string') {
		parsed = parseJson(value);
		if (parsed === INVALID) {
			throw new RequestBuildError('Messages (JSON) is not valid JSON', 'messagesJson');
		}
	}
	if (!Array.isArray(parsed)) {
		throw new RequestBuildError(
			'Messages (JSON) must be an array of {"role", "content"} objects',
			'messagesJson',
		);
	}
	return parsed.map((message, index) => {
		if (!message || typeof message !== 'object' || typeof message.role !== 'string') {
			throw new RequestBuildError(
				`Message ${index} needs a "role" and a "content"`,
				`messagesJson[${index}]`,
			);
		}
		return { role: message.role, content: String(message.content ?? '') };
	});
}

function stopList(stop: string[] | string | undefined): string[] | undefined {
	if (stop === undefined) return undefined;
	const list = (Array.isArray(stop) ? stop : [stop]).filter((s) => s !== '');
	return list.length ? list : undefined;
}

/** The JSON body of one job. Absent options are left out, so the service's defaults apply. */
export function buildJobBody(parameters: JobParameters): Record<string, unknown> {
	const body: Record<string, unknown> = { model: parameters.model };
	if (parameters.input === 'prompt') {
		body.prompt = parameters.prompt ?? '';
	} else if (parameters.input === 'messagesJson') {
		body.messages = parseMessages(parameters.messagesJson);
	} else {
		body.messages = (parameters.messages ?? []).map((m) => ({ role: m.role, content: m.content }));
	}
	const options = parameters.options ?? {};
	if (options.maxTokens !== undefined) body.max_tokens = options.maxTokens;
	if (options.temperature !== undefined) body.temperature = options.temperature;
	if (options.topP !== undefined) body.top_p = options.topP;
	const stop = stopList(options.stop);
	if (stop !== undefined) body.stop = stop;
	if (options.seed !== undefined) body.seed = options.seed;
	if (options.responseFormat === 'json_object') body.response_format = { type: 'json_object' };
	if (options.metadata && Object.keys(options.metadata).length)
		body.metadata = { ...options.metadata };
	if (options.priority !== undefined) body.priority = options.priority;
	if (options.callbackUrl) body.callback_url = options.callbackUrl;
	if (options.completionWindow) body.completion_window = options.completionWindow;
	if (options.maxAttempts !== undefined) body.max_attempts = options.maxAttempts;
	return body;
}

/** Metadata that ties a job to the n8n run that submitted it (the service filters on it). */
export function n8nMetadata(
	executionId: string,
	nodeName: string,
	itemIndex?: number,
): Record<string, string> {
	const metadata: Record<string, string> = {
		n8n_execution: executionId,
		n8n_node: nodeName.slice(0, 512),
	};
	if (itemIndex !== undefined) metadata.n8n_item = String(itemIndex);
	return metadata;
}

export const TERMINAL_STATES = new Set(['succeeded', 'failed', 'cancelled', 'expired']);

export interface JobLike {
	id: string;
	state: string;
	metadata?: Record<string, string>;
	result?: { choices?: Array<{ message?: { content?: string | null }; text?: string }> } | null;
	[key: string]: unknown;
}

/** The first choice's text (chat or completion), or null. */
export function jobText(job: JobLike): string | null {
	const choice = job.result?.choices?.[0];
	if (!choice) return null;
	if (choice.message && typeof choice.message.content === 'string') return choice.message.content;
	return typeof choice.text === 'string' ? choice.text : null;
}

/** What the node outputs for a job: the Job JSON, plus `text` for the model's answer. */
export function jobOutput(job: JobLike): Record<string, unknown> {
	return { ...job, text: jobText(job) };
}

/** Order a batch's jobs by the item index they were submitted for (metadata `n8n_item`). */
export function orderByItem(jobs: JobLike[]): JobLike[] {
	const index = (job: JobLike) => Number(job.metadata?.n8n_item ?? Number.MAX_SAFE_INTEGER);
	return [...jobs].sort((a, b) => index(a) - index(b));
}
