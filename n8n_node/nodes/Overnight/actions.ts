/**
 * What each operation does with the input items. Errors are per item: with "Continue On Fail"
 * an item's error becomes an output item (`{error, details}`, routed to the error output when
 * that is on); otherwise the node fails with a NodeApiError / NodeOperationError naming the item.
 */
import type {
	IDataObject,
	IExecuteFunctions,
	INodeExecutionData,
	IWebhookFunctions,
} from 'n8n-workflow';
import { NodeApiError, NodeOperationError, WAIT_INDEFINITELY } from 'n8n-workflow';

import type { OvernightErrorInfo } from './shared/errors';
import { itemIdempotencyKey, requestIdempotencyKey } from './shared/idempotency';
import {
	buildJobBody,
	jobOutput,
	n8nMetadata,
	orderByItem,
	RequestBuildError,
	TERMINAL_STATES,
	type JobLike,
	type JobOptions,
	type JobParameters,
} from './shared/requests';
import { errorInfoOf, overnightNodeError, overnightRequest } from './shared/transport';

const JOB_PAGE = 1000;

// -- per-item error handling -----------------------------------------------------------------

/** The error to fail the node with: always a NodeApiError or NodeOperationError naming the item. */
export function itemError(
	context: IExecuteFunctions,
	error: unknown,
	itemIndex: number,
): NodeApiError | NodeOperationError {
	if (error instanceof NodeApiError || error instanceof NodeOperationError) {
		if (error.context.itemIndex === undefined) error.context.itemIndex = itemIndex;
		return error;
	}
	if (error instanceof RequestBuildError) {
		return new NodeOperationError(context.getNode(), error.message, {
			itemIndex,
			description: `Parameter: ${error.param}`,
			failure: { cause: 'configuration-invalid' },
		});
	}
	return new NodeOperationError(context.getNode(), error as Error, { itemIndex });
}

function infoOf(error: unknown): OvernightErrorInfo {
	if (error instanceof RequestBuildError) {
		return {
			kind: 'InvalidRequestError',
			code: 'invalid_request',
			message: error.message,
			param: error.param,
			status: 0,
			retryable: false,
			retryAfter: null,
		};
	}
	return errorInfoOf(error);
}

/** The output item for a failed item under "Continue On Fail". */
export function errorItem(error: unknown, itemIndex: number): INodeExecutionData {
	const info = infoOf(error);
	return {
		json: { error: info.message, details: { ...info } as unknown as IDataObject },
		pairedItem: { item: itemIndex },
	};
}

function jobItem(job: JobLike, itemIndex: number): INodeExecutionData {
	return { json: jobOutput(job) as IDataObject, pairedItem: { item: itemIndex } };
}

// -- reading the parameters ------------------------------------------------------------------

interface RawOptions {
	callbackUrl?: string;
	completionWindow?: string;
	idempotencyKey?: string;
	maxAttempts?: number;
	maxTokens?: number;
	metadata?: { entry?: Array<{ key: string; value: string }> };
	priority?: JobOptions['priority'];
	responseFormat?: JobOptions['responseFormat'];
	seed?: number;
	stop?: string[] | string;
	temperature?: number;
	topP?: number;
}

/** The node's request parameters for one item, as `buildJobBody` takes them. */
export function readJobParameters(
	context: IExecuteFunctions,
	itemIndex: number,
): { parameters: JobParameters; idempotencyKey: string } {
	const input = context.getNodeParameter('input', itemIndex) as JobParameters['input'];
	const raw = context.getNodeParameter('options', itemIndex, {}) as RawOptions;
	const metadata: Record<string, string> = {};
	for (const entry of raw.metadata?.entry ?? []) {
		if (entry.key) metadata[entry.key] = String(entry.value ?? '');
	}
	const parameters: JobParameters = {
		model: context.getNodeParameter('model', itemIndex) as string,
		input,
		options: {
			maxTokens: raw.maxTokens,
			temperature: raw.temperature,
			topP: raw.topP,
			stop: raw.stop,
			seed: raw.seed,
			responseFormat: raw.responseFormat,
			metadata,
			priority: raw.priority,
			callbackUrl: raw.callbackUrl,
			completionWindow: raw.completionWindow,
			maxAttempts: raw.maxAttempts,
		},
	};
	if (input === 'messages') {
		const collection = context.getNodeParameter('messages', itemIndex, {}) as {
			message?: Array<{ role: string; content: string }>;
		};
		parameters.messages = collection.message ?? [];
	} else if (input === 'prompt') {
		parameters.prompt = context.getNodeParameter('prompt', itemIndex, '') as string;
	} else {
		parameters.messagesJson = context.getNodeParameter('messagesJson', itemIndex);
	}
	return { parameters, idempotencyKey: raw.idempotencyKey ?? '' };
}

function runIndexOf(context: IExecuteFunctions): number {
	const index = context.getWorkflowDataProxy(0).$thisRunIndex;
	return typeof index === 'number' ? index : 0;
}

/** The body of item `itemIndex` with n8n's metadata, and its idempotency key. */
export function prepareJob(
	context: IExecuteFunctions,
	itemIndex: number,
): { body: IDataObject; key: string } {
	const executionId = context.getExecutionId();
	const nodeName = context.getNode().name;
	const { parameters, idempotencyKey } = readJobParameters(context, itemIndex);
	const body = buildJobBody(parameters) as IDataObject;
	body.metadata = {
		...((body.metadata as IDataObject | undefined) ?? {}),
		...n8nMetadata(executionId, nodeName, itemIndex),
	};
	const key =
		idempotencyKey || itemIdempotencyKey(executionId, nodeName, runIndexOf(context), itemIndex);
	return { body, key };
}

// -- operations ------------------------------------------------------------------------------

async function perItem(
	context: IExecuteFunctions,
	run: (itemIndex: number) => Promise<JobLike>,
): Promise<INodeExecutionData[][]> {
	const out: INodeExecutionData[] = [];
	const items = context.getInputData();
	for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
		try {
			out.push(jobItem(await run(itemIndex), itemIndex));
		} catch (error) {
			if (!context.continueOnFail()) throw itemError(context, error, itemIndex);
			out.push(errorItem(error, itemIndex));
		}
	}
	return [out];
}

/** Submit Job: one `POST /v1/jobs` per item. */
export async function submit(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
	return await perItem(this, async (itemIndex) => {
		const { body, key } = prepareJob(this, itemIndex);
		return (await overnightRequest.call(
			this,
			'POST',
			'/v1/jobs',
			{ body, headers: { 'Idempotency-Key': key } },
			itemIndex,
		)) as unknown as JobLike;
	});
}

/** Get Job, optionally long-polling `GET /v1/jobs/{id}/wait` until the job ends. */
export async function get(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
	return await perItem(this, async (itemIndex) => {
		const jobId = encodeURIComponent(this.getNodeParameter('jobId', itemIndex) as string);
		const wait = this.getNodeParameter('waitForCompletion', itemIndex, false) as boolean;
		if (!wait) {
			return (await overnightRequest.call(
				this,
				'GET',
				`/v1/jobs/${jobId}`,
				{},
				itemIndex,
			)) as unknown as JobLike;
		}
		const timeout = this.getNodeParameter('waitTimeout', itemIndex, 60) as number;
		const deadline = Date.now() + timeout * 1000;
		for (;;) {
			const remaining = Math.max(0, (deadline - Date.now()) / 1000);
			const job = (await overnightRequest.call(
				this,
				'GET',
				`/v1/jobs/${jobId}/wait`,
				{ qs: { timeout: Math.min(remaining, 60) } },
				itemIndex,
			)) as unknown as JobLike;
			if (TERMINAL_STATES.has(job.state) || remaining <= 0) return job;
		}
	});
}

/** Cancel Job: `POST /v1/jobs/{id}/cancel`. */
export async function cancel(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
	return await perItem(this, async (itemIndex) => {
		const jobId = encodeURIComponent(this.getNodeParameter('jobId', itemIndex) as string);
		return (await overnightRequest.call(
			this,
			'POST',
			`/v1/jobs/${jobId}/cancel`,
			{},
			itemIndex,
		)) as unknown as JobLike;
	});
}

interface BulkItem {
	index: number;
	job?: JobLike | null;
	error?: { code: string; message: string; param?: string | null } | null;
}

interface Prepared {
	itemIndex: number;
	body: IDataObject;
}

/**
 * Build every item's job; items whose parameters are wrong become errors (thrown at once
 * unless "Continue On Fail").
 */
function prepareAll(
	context: IExecuteFunctions,
	failed: Map<number, unknown>,
	perJobCallbacks = true,
): Prepared[] {
	const prepared: Prepared[] = [];
	const items = context.getInputData();
	for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
		try {
			const { body, key } = prepareJob(context, itemIndex);
			if (!perJobCallbacks) delete body.callback_url;
			prepared.push({ itemIndex, body: { ...body, idempotency_key: key } });
		} catch (error) {
			if (!context.continueOnFail()) throw itemError(context, error, itemIndex);
			failed.set(itemIndex, error);
		}
	}
	return prepared;
}

/** `POST /v1/jobs/bulk` for the prepared items: the jobs accepted, and the items refused. */
async function postBulk(
	context: IExecuteFunctions,
	prepared: Prepared[],
	callbackUrl: string | undefined,
	failed: Map<number, unknown>,
): Promise<{ batchId: string; accepted: Map<number, JobLike> }> {
	const executionId = context.getExecutionId();
	const nodeName = context.getNode().name;
	const body: IDataObject = {
		jobs: prepared.map((p) => p.body),
		metadata: n8nMetadata(executionId, nodeName),
	};
	if (callbackUrl) body.callback_url = callbackUrl;
	const key = requestIdempotencyKey(executionId, nodeName, runIndexOf(context));
	const response = (await overnightRequest.call(
		context,
		'POST',
		'/v1/jobs/bulk',
		{ body, headers: { 'Idempotency-Key': key } },
		prepared[0]?.itemIndex,
	)) as unknown as { batch_id: string; data: BulkItem[] };
	const accepted = new Map<number, JobLike>();
	for (const result of response.data) {
		const itemIndex = prepared[result.index].itemIndex;
		if (result.job) {
			accepted.set(itemIndex, result.job);
		} else {
			const detail = result.error ?? { code: 'invalid_request', message: 'refused' };
			const info: OvernightErrorInfo = {
				kind: 'InvalidRequestError',
				code: detail.code,
				message: detail.message,
				param: detail.param ?? null,
				status: 422,
				retryable: false,
				retryAfter: null,
			};
			failed.set(itemIndex, overnightNodeError(context, info, itemIndex));
		}
	}
	return { batchId: response.batch_id, accepted };
}

/** Fail on the first failed item, unless "Continue On Fail". */
function throwFirst(context: IExecuteFunctions, failed: Map<number, unknown>): void {
	if (failed.size === 0 || context.continueOnFail()) return;
	const [itemIndex, error] = [...failed.entries()].sort((a, b) => a[0] - b[0])[0];
	throw itemError(context, error, itemIndex);
}

/** Submit Jobs in Bulk: every item in one `POST /v1/jobs/bulk`, one output per item. */
export async function submitBulk(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
	const items = this.getInputData();
	const failed = new Map<number, unknown>();
	const prepared = prepareAll(this, failed);
	let accepted = new Map<number, JobLike>();
	if (prepared.length) {
		try {
			accepted = (await postBulk(this, prepared, undefined, failed)).accepted;
		} catch (error) {
			if (!this.continueOnFail()) throw itemError(this, error, prepared[0].itemIndex);
			for (const p of prepared) failed.set(p.itemIndex, error);
		}
	}
	throwFirst(this, failed);
	const out = items.map((_, itemIndex) => {
		const job = accepted.get(itemIndex);
		return job ? jobItem(job, itemIndex) : errorItem(failed.get(itemIndex), itemIndex);
	});
	return [out];
}

// -- Submit and Wait -------------------------------------------------------------------------

const UNIT_SECONDS: Record<string, number> = { seconds: 1, minutes: 60, hours: 3600, days: 86400 };

/** When the execution resumes by itself if no result arrived. */
export function waitTill(context: IExecuteFunctions, now: number = Date.now()): Date {
	if (!(context.getNodeParameter('limitWaitTime', 0, false) as boolean)) return WAIT_INDEFINITELY;
	const amount = context.getNodeParameter('resumeAmount', 0, 1) as number;
	const unit = context.getNodeParameter('resumeUnit', 0, 'hours') as string;
	return new Date(now + amount * (UNIT_SECONDS[unit] ?? 3600) * 1000);
}

/** All jobs of a batch, in item order (`GET /v1/jobs?batch_id=...`, every page). */
export async function batchJobs(
	this: IExecuteFunctions | IWebhookFunctions,
	batchId: string,
): Promise<JobLike[]> {
	const jobs: JobLike[] = [];
	let after: string | undefined;
	for (;;) {
		const qs: IDataObject = { batch_id: batchId, limit: JOB_PAGE };
		if (after) qs.after = after;
		const page = (await overnightRequest.call(this, 'GET', '/v1/jobs', { qs })) as unknown as {
			data: JobLike[];
			next_cursor?: string | null;
			has_more?: boolean;
		};
		jobs.push(...page.data);
		if (!page.has_more || !page.next_cursor) return orderByItem(jobs);
		after = page.next_cursor;
	}
}

/** Cancel jobs that must not run after all (another item of their batch was refused). */
async function cancelAll(context: IExecuteFunctions, jobs: Map<number, JobLike>): Promise<void> {
	for (const [itemIndex, job] of jobs) {
		try {
			await overnightRequest.call(
				context,
				'POST',
				`/v1/jobs/${encodeURIComponent(job.id)}/cancel`,
				{},
				itemIndex,
			);
		} catch (error) {
			// A job that already ended cannot be cancelled (409 job_finished): say so and go on.
			context.logger.warn(
				`Overnight: could not cancel job ${job.id}: ${errorInfoOf(error).message}`,
			);
		}
	}
}

/**
 * Submit and Wait: submit with the execution's resume URL as the callback, then put the
 * execution to wait. One item is one `POST /v1/jobs` (resumed by `job.*`); several items are one
 * bulk request (resumed by `batch.completed`). The node's webhook verifies the signature and
 * outputs the finished jobs. A batch waits only when every item was accepted: otherwise the
 * accepted jobs are cancelled and the items fail (or, with "Continue On Fail", are output as
 * errors without waiting).
 */
export async function submitAndWait(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
	if (this.isToolExecution()) {
		throw new NodeOperationError(this.getNode(), 'Submit and Wait cannot run as an AI tool', {
			description: 'Use Submit Job, then Get Job with "Wait for Completion", as tools.',
		});
	}
	const items = this.getInputData();
	const resumeUrl = String(this.evaluateExpression('{{ $execution.resumeUrl }}', 0));
	const failed = new Map<number, unknown>();

	if (items.length === 1) {
		let job: JobLike;
		try {
			const { body, key } = prepareJob(this, 0);
			body.callback_url = resumeUrl;
			job = (await overnightRequest.call(
				this,
				'POST',
				'/v1/jobs',
				{ body, headers: { 'Idempotency-Key': key } },
				0,
			)) as unknown as JobLike;
		} catch (error) {
			if (!this.continueOnFail()) throw itemError(this, error, 0);
			return [[errorItem(error, 0)]];
		}
		// A re-run that attached to a job which already ended: its callback was sent before.
		if (TERMINAL_STATES.has(job.state)) return [[jobItem(job, 0)]];
		await this.putExecutionToWait(waitTill(this));
		return [items];
	}

	// the batch's callback resumes the execution; no job of it calls back on its own
	const prepared = prepareAll(this, failed, false);
	let batch: { batchId: string; accepted: Map<number, JobLike> } | undefined;
	if (prepared.length) {
		try {
			batch = await postBulk(this, prepared, resumeUrl, failed);
		} catch (error) {
			if (!this.continueOnFail()) throw itemError(this, error, prepared[0].itemIndex);
			for (const p of prepared) failed.set(p.itemIndex, error);
		}
	}
	const accepted = batch?.accepted ?? new Map<number, JobLike>();
	if (failed.size > 0) {
		await cancelAll(this, accepted);
		throwFirst(this, failed);
		const cancelled = new NodeOperationError(
			this.getNode(),
			'Not run: another item of this batch was refused, so the batch was cancelled',
		);
		return [items.map((_, i) => errorItem(failed.get(i) ?? cancelled, i))];
	}
	if (batch && [...accepted.values()].every((job) => TERMINAL_STATES.has(job.state))) {
		const jobs = await batchJobs.call(this, batch.batchId);
		return [jobs.map((job) => jobItem(job, Number(job.metadata?.n8n_item ?? 0)))];
	}
	await this.putExecutionToWait(waitTill(this));
	return [items];
}
