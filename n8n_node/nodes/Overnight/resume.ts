/**
 * The resume webhook of Submit and Wait. Overnight POSTs the signed event to the execution's
 * resume URL; this checks the Standard Webhooks signature against the tenant's secrets and
 * that the event belongs to this execution and node, then resumes with the finished jobs.
 *
 * Anything else answers an error and leaves the execution waiting: 401 for a bad signature,
 * 409 for an event about other jobs, 503 when the secrets or the batch's jobs cannot be read
 * (Overnight delivers again later).
 */
import type {
	IDataObject,
	INodeExecutionData,
	IWebhookDescription,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';

import { batchJobs } from './actions';
import { jobOutput, type JobLike } from './shared/requests';
import { CREDENTIAL_TYPE, errorInfoOf, overnightRequest } from './shared/transport';
import { verifyWebhook, type HeaderBag } from './shared/webhooks';

/** n8n's resume endpoint for a waiting execution: POST to `$execution.resumeUrl`. */
export const resumeWebhooks: IWebhookDescription[] = [
	{
		name: 'default',
		httpMethod: 'POST',
		responseMode: 'onReceived',
		responseData: '',
		path: '',
		restartWebhook: true,
	},
];

interface RequestWithRawBody {
	headers: HeaderBag;
	rawBody?: Buffer;
	readRawBody?: () => Promise<void>;
}

function refuse(
	context: IWebhookFunctions,
	status: number,
	code: string,
	message: string,
): IWebhookResponseData {
	context.getResponseObject().status(status).json({ error: { code, message } });
	return { noWebhookResponse: true };
}

async function rawBodyOf(context: IWebhookFunctions): Promise<Buffer> {
	const request = context.getRequestObject() as unknown as RequestWithRawBody;
	if (!request.rawBody && request.readRawBody) await request.readRawBody();
	return request.rawBody ?? Buffer.from(JSON.stringify(context.getBodyData()), 'utf8');
}

/** The credential's secret when set, else the tenant's current secrets from the service. */
async function webhookSecrets(context: IWebhookFunctions): Promise<string[]> {
	const credentials = await context.getCredentials<{ webhookSecret?: string }>(CREDENTIAL_TYPE);
	if (credentials.webhookSecret) return [credentials.webhookSecret];
	const answer = (await overnightRequest.call(context, 'GET', '/v1/webhook-secrets')) as {
		secrets?: string[];
	};
	return answer.secrets ?? [];
}

export async function resumeWebhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
	const rawBody = await rawBodyOf(this);
	let secrets: string[];
	try {
		secrets = await webhookSecrets(this);
	} catch (error) {
		return refuse(this, 503, 'secrets_unavailable', errorInfoOf(error).message);
	}
	const headers = (this.getRequestObject() as unknown as RequestWithRawBody).headers;
	const verdict = verifyWebhook(rawBody, headers, secrets);
	if (!verdict.ok) return refuse(this, 401, verdict.code, verdict.message);

	const { event } = verdict;
	const metadata = (event.data.metadata ?? {}) as Record<string, string>;
	if (
		metadata.n8n_execution !== this.getExecutionId() ||
		metadata.n8n_node !== this.getNode().name
	) {
		return refuse(
			this,
			409,
			'not_this_execution',
			'the event is about jobs this node did not submit',
		);
	}

	let items: INodeExecutionData[];
	if (event.type === 'batch.completed') {
		let jobs: JobLike[];
		try {
			jobs = await batchJobs.call(this, String(event.data.id));
		} catch (error) {
			return refuse(this, 503, 'jobs_unavailable', errorInfoOf(error).message);
		}
		items = jobs.map((job) => ({
			json: jobOutput(job) as IDataObject,
			pairedItem: { item: Number(job.metadata?.n8n_item ?? 0) },
		}));
	} else if (event.type.startsWith('job.')) {
		const job = event.data as unknown as JobLike;
		items = [
			{ json: jobOutput(job) as IDataObject, pairedItem: { item: Number(metadata.n8n_item ?? 0) } },
		];
	} else {
		return refuse(this, 400, 'unexpected_event', `cannot resume on a ${event.type} event`);
	}
	return { workflowData: [items] };
}
