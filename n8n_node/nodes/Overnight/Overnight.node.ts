import type {
	IExecuteFunctions,
	INodeExecutionData,
	INodeType,
	INodeTypeDescription,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';
import { NodeConnectionTypes, NodeOperationError } from 'n8n-workflow';

import { cancel, get, submit, submitAndWait, submitBulk } from './actions';
import { jobIdProperties, operationProperty, requestProperties } from './descriptions';
import { resumeWebhook, resumeWebhooks } from './resume';

/**
 * Overnight: submit LLM jobs to an Overnight service, read or cancel them, or submit and let
 * the execution wait until Overnight's signed webhook brings the result back.
 */
export class Overnight implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Overnight',
		name: 'overnight',
		icon: { light: 'file:../../icons/overnight.svg', dark: 'file:../../icons/overnight.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{$parameter["operation"]}}',
		description: 'Run batch LLM jobs on Overnight and resume when they finish',
		defaults: {
			name: 'Overnight',
		},
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'overnightApi', required: true }],
		webhooks: resumeWebhooks,
		properties: [operationProperty, ...jobIdProperties, ...requestProperties],
	};

	async webhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
		return await resumeWebhook.call(this);
	}

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const operation = this.getNodeParameter('operation', 0) as string;
		switch (operation) {
			case 'submit':
				return await submit.call(this);
			case 'submitBulk':
				return await submitBulk.call(this);
			case 'submitAndWait':
				return await submitAndWait.call(this);
			case 'get':
				return await get.call(this);
			case 'cancel':
				return await cancel.call(this);
			default:
				throw new NodeOperationError(this.getNode(), `Unknown operation "${operation}"`);
		}
	}
}
