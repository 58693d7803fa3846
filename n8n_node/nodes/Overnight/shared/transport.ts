/**
 * The one place that talks HTTP to Overnight, through n8n's authenticated request helper:
 *
 *     const job = await overnightRequest.call(this, 'POST', '/v1/jobs', { body, headers }, itemIndex);
 *
 * Every non-2xx answer becomes a NodeApiError carrying the mapped error (`context.overnight`),
 * its HTTP status and n8n's `failure` cause, so "Retry On Fail" and error outputs see why.
 */
import type {
	IDataObject,
	IExecuteFunctions,
	IHttpRequestMethods,
	IHttpRequestOptions,
	IN8nHttpFullResponse,
	IWebhookFunctions,
	JsonObject,
} from 'n8n-workflow';
import { NodeApiError } from 'n8n-workflow';

import {
	describeError,
	errorFromResponse,
	failureFor,
	parseRetryAfter,
	transportError,
	type OvernightErrorInfo,
} from './errors';

export const CREDENTIAL_TYPE = 'overnightApi';

export type OvernightContext = IExecuteFunctions | IWebhookFunctions;

export interface RequestParts {
	body?: IDataObject | IDataObject[];
	qs?: IDataObject;
	headers?: IDataObject;
}

/** The NodeApiError for a mapped Overnight error, with the details kept for error outputs. */
export function overnightNodeError(
	context: OvernightContext,
	info: OvernightErrorInfo,
	itemIndex?: number,
): NodeApiError {
	const error = new NodeApiError(context.getNode(), info as unknown as JsonObject, {
		message: info.message,
		description: describeError(info),
		httpCode: info.status ? String(info.status) : undefined,
		itemIndex,
		failure: failureFor(info),
	});
	error.context.overnight = info as unknown as IDataObject;
	return error;
}

/** The mapped details of an error thrown by this node (or a transport error for anything else). */
export function errorInfoOf(error: unknown): OvernightErrorInfo {
	const context = (error as { context?: IDataObject } | undefined)?.context;
	if (context && typeof context.overnight === 'object' && context.overnight !== null) {
		return context.overnight as unknown as OvernightErrorInfo;
	}
	const message = error instanceof Error ? error.message : String(error);
	return { ...transportError(message), kind: 'NodeError', code: 'node_error', retryable: false };
}

export async function baseUrl(context: OvernightContext): Promise<string> {
	const credentials = await context.getCredentials<{ baseUrl: string }>(CREDENTIAL_TYPE);
	return String(credentials.baseUrl ?? '').replace(/\/+$/, '');
}

/** Send one request; resolve with the decoded JSON body of a 2xx answer. */
export async function overnightRequest(
	this: OvernightContext,
	method: IHttpRequestMethods,
	path: string,
	parts: RequestParts = {},
	itemIndex?: number,
): Promise<IDataObject> {
	const base = await baseUrl(this);
	const options: IHttpRequestOptions = {
		method,
		url: `${base}${path}`,
		json: true,
		ignoreHttpStatusErrors: true,
		returnFullResponse: true,
	};
	if (parts.body !== undefined) options.body = parts.body;
	if (parts.qs !== undefined) options.qs = parts.qs;
	if (parts.headers !== undefined) options.headers = parts.headers;
	let response: IN8nHttpFullResponse;
	try {
		response = (await this.helpers.httpRequestWithAuthentication.call(
			this,
			CREDENTIAL_TYPE,
			options,
		)) as IN8nHttpFullResponse;
	} catch (error) {
		const reason = error instanceof Error ? error.message : String(error);
		throw overnightNodeError(
			this,
			transportError(`Could not reach Overnight at ${base}: ${reason}`),
			itemIndex,
		);
	}
	if (response.statusCode >= 400) {
		const retryAfter = parseRetryAfter(response.headers?.['retry-after']);
		throw overnightNodeError(
			this,
			errorFromResponse(response.statusCode, response.body, retryAfter),
			itemIndex,
		);
	}
	return (response.body ?? {}) as IDataObject;
}
