/**
 * The node's parameters. Operations: Submit Job, Submit Jobs in Bulk, Submit and Wait,
 * Get Job, Cancel Job. The submit operations share the request fields below.
 */
import type { INodeProperties } from 'n8n-workflow';

const SUBMIT_OPERATIONS = ['submit', 'submitBulk', 'submitAndWait'];

export const operationProperty: INodeProperties = {
	displayName: 'Operation',
	name: 'operation',
	type: 'options',
	noDataExpression: true,
	options: [
		{
			name: 'Cancel Job',
			value: 'cancel',
			action: 'Cancel a job',
			description: 'Stop a queued or running job',
		},
		{
			name: 'Get Job',
			value: 'get',
			action: 'Get a job',
			description: 'Read a job, optionally waiting until it ends',
		},
		{
			name: 'Submit and Wait',
			value: 'submitAndWait',
			action: 'Submit a job and wait for its result',
			description:
				'Submit the input items as jobs and pause the execution until Overnight calls back with the signed result',
		},
		{
			name: 'Submit Job',
			value: 'submit',
			action: 'Submit a job',
			description: 'Queue one job per input item and continue at once with the job IDs',
		},
		{
			name: 'Submit Jobs in Bulk',
			value: 'submitBulk',
			action: 'Submit jobs in bulk',
			description: 'Queue one job per input item in a single request',
		},
	],
	default: 'submit',
};

export const jobIdProperties: INodeProperties[] = [
	{
		displayName: 'Job ID',
		name: 'jobId',
		type: 'string',
		required: true,
		default: '',
		placeholder: 'job_...',
		description: 'The ID of the job, as returned by a submit operation',
		displayOptions: { show: { operation: ['get', 'cancel'] } },
	},
	{
		displayName: 'Wait for Completion',
		name: 'waitForCompletion',
		type: 'boolean',
		default: false,
		description:
			'Whether to long-poll the job until it ends (or the timeout passes) instead of returning its current state',
		displayOptions: { show: { operation: ['get'] } },
	},
	{
		displayName: 'Wait Timeout (Seconds)',
		name: 'waitTimeout',
		type: 'number',
		default: 60,
		typeOptions: { minValue: 1 },
		description: 'How long to wait for the job to end before returning its current state',
		displayOptions: { show: { operation: ['get'], waitForCompletion: [true] } },
	},
];

export const requestProperties: INodeProperties[] = [
	{
		displayName: 'Model',
		name: 'model',
		type: 'string',
		required: true,
		default: 'smollm2-135m',
		description: "A model name from the service's registry",
		displayOptions: { show: { operation: SUBMIT_OPERATIONS } },
	},
	{
		displayName: 'Input',
		name: 'input',
		type: 'options',
		options: [
			{
				name: 'Chat Messages',
				value: 'messages',
				description: "A conversation; the model's chat template applies",
			},
			{
				name: 'Messages (JSON)',
				value: 'messagesJson',
				description: 'An array of {"role", "content"} objects, e.g. from an expression',
			},
			{
				name: 'Prompt',
				value: 'prompt',
				description: 'Raw text completion, without a chat template',
			},
		],
		default: 'messages',
		displayOptions: { show: { operation: SUBMIT_OPERATIONS } },
	},
	{
		displayName: 'Messages',
		name: 'messages',
		type: 'fixedCollection',
		typeOptions: { multipleValues: true, sortable: true },
		default: { message: [{ role: 'user', content: '' }] },
		placeholder: 'Add Message',
		displayOptions: { show: { operation: SUBMIT_OPERATIONS, input: ['messages'] } },
		options: [
			{
				displayName: 'Message',
				name: 'message',
				values: [
					{
						displayName: 'Role',
						name: 'role',
						type: 'options',
						options: [
							{ name: 'Assistant', value: 'assistant' },
							{ name: 'System', value: 'system' },
							{ name: 'User', value: 'user' },
						],
						default: 'user',
					},
					{
						displayName: 'Content',
						name: 'content',
						type: 'string',
						typeOptions: { rows: 4 },
						default: '',
					},
				],
			},
		],
	},
	{
		displayName: 'Messages (JSON)',
		name: 'messagesJson',
		type: 'json',
		default: '[{"role": "user", "content": "Hello"}]',
		description: 'An array of {"role", "content"} objects',
		displayOptions: { show: { operation: SUBMIT_OPERATIONS, input: ['messagesJson'] } },
	},
	{
		displayName: 'Prompt',
		name: 'prompt',
		type: 'string',
		typeOptions: { rows: 4 },
		default: '',
		displayOptions: { show: { operation: SUBMIT_OPERATIONS, input: ['prompt'] } },
	},
	{
		displayName: 'Limit Wait Time',
		name: 'limitWaitTime',
		type: 'boolean',
		default: false,
		description:
			'Whether to resume after a time limit even if no result arrived; the node then passes its input items through unchanged',
		displayOptions: { show: { operation: ['submitAndWait'] } },
	},
	{
		displayName: 'Amount',
		name: 'resumeAmount',
		type: 'number',
		typeOptions: { minValue: 0, numberPrecision: 2 },
		default: 1,
		description: 'How long to wait at most',
		displayOptions: { show: { operation: ['submitAndWait'], limitWaitTime: [true] } },
	},
	{
		displayName: 'Unit',
		name: 'resumeUnit',
		type: 'options',
		options: [
			{ name: 'Days', value: 'days' },
			{ name: 'Hours', value: 'hours' },
			{ name: 'Minutes', value: 'minutes' },
			{ name: 'Seconds', value: 'seconds' },
		],
		default: 'hours',
		description: 'The unit of the amount',
		displayOptions: { show: { operation: ['submitAndWait'], limitWaitTime: [true] } },
	},
	{
		displayName: 'Options',
		name: 'options',
		type: 'collection',
		placeholder: 'Add Option',
		default: {},
		displayOptions: { show: { operation: SUBMIT_OPERATIONS } },
		options: [
			{
				displayName: 'Callback URL',
				name: 'callbackUrl',
				type: 'string',
				default: '',
				placeholder: 'https://example.com/hooks/overnight',
				displayOptions: { hide: { '/operation': ['submitAndWait'] } },
				description:
					"Where Overnight POSTs the signed job.succeeded / job.failed webhook when the job ends (Submit and Wait sets it to the execution's resume URL)",
			},
			{
				displayName: 'Completion Window',
				name: 'completionWindow',
				type: 'string',
				default: '24h',
				description: 'Deadline after which a job that has not run expires, e.g. 1h or 24h',
			},
			{
				displayName: 'Idempotency Key',
				name: 'idempotencyKey',
				type: 'string',
				default: '',
				description:
					'Overrides the key derived from the execution ID, node name and item index. Use a value from your data to make re-runs of the whole workflow attach to the jobs already submitted.',
			},
			{
				displayName: 'Max Attempts',
				name: 'maxAttempts',
				type: 'number',
				typeOptions: { minValue: 1, maxValue: 20 },
				default: 3,
				description: 'How often the service may run the job before it gives up',
			},
			{
				displayName: 'Max Tokens',
				name: 'maxTokens',
				type: 'number',
				typeOptions: { minValue: 1 },
				default: 256,
				description: 'The most tokens the model may generate',
			},
			{
				displayName: 'Metadata',
				name: 'metadata',
				type: 'fixedCollection',
				typeOptions: { multipleValues: true },
				default: {},
				placeholder: 'Add Metadata',
				description: 'String pairs stored with the job; list jobs by them later',
				options: [
					{
						displayName: 'Entry',
						name: 'entry',
						values: [
							{ displayName: 'Key', name: 'key', type: 'string', default: '' },
							{ displayName: 'Value', name: 'value', type: 'string', default: '' },
						],
					},
				],
			},
			{
				displayName: 'Priority',
				name: 'priority',
				type: 'options',
				options: [
					{ name: 'Batch', value: 'batch', description: 'Runs when nothing more urgent waits' },
					{ name: 'Interactive', value: 'interactive', description: 'Runs first' },
					{ name: 'Standard', value: 'standard' },
				],
				default: 'standard',
				description: 'Which jobs the dispatcher feeds the engines first',
			},
			{
				displayName: 'Response Format',
				name: 'responseFormat',
				type: 'options',
				options: [
					{ name: 'Text', value: 'text' },
					{ name: 'JSON Object', value: 'json_object' },
				],
				default: 'text',
				description: 'Whether the model must answer with a JSON object',
			},
			{
				displayName: 'Seed',
				name: 'seed',
				type: 'number',
				default: 0,
				description: 'A sampling seed, for repeatable answers',
			},
			{
				displayName: 'Stop Sequences',
				name: 'stop',
				type: 'string',
				typeOptions: { multipleValues: true },
				default: [],
				description: 'Generation stops before any of these strings',
			},
			{
				displayName: 'Temperature',
				name: 'temperature',
				type: 'number',
				typeOptions: { minValue: 0, maxValue: 2, numberPrecision: 2 },
				default: 1,
				description: 'Higher values give more varied answers',
			},
			{
				displayName: 'Top P',
				name: 'topP',
				type: 'number',
				typeOptions: { minValue: 0, maxValue: 1, numberPrecision: 2 },
				default: 1,
				description:
					'Nucleus sampling: only the most likely tokens whose probabilities add up to this',
			},
		],
	},
];
