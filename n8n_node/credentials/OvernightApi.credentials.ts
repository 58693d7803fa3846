import type {
	IAuthenticateGeneric,
	Icon,
	ICredentialTestRequest,
	ICredentialType,
	INodeProperties,
} from 'n8n-workflow';

/**
 * An Overnight tenant: the service's base URL and an API key from `overnight keys create`.
 * The credential test calls `GET /v1/whoami`, which answers 401 for a wrong key.
 */
export class OvernightApi implements ICredentialType {
	name = 'overnightApi';

	displayName = 'Overnight API';

	icon: Icon = { light: 'file:../icons/overnight.svg', dark: 'file:../icons/overnight.dark.svg' };

	documentationUrl = 'https://www.npmjs.com/package/n8n-nodes-overnight#credentials';

	properties: INodeProperties[] = [
		{
			displayName: 'Base URL',
			name: 'baseUrl',
			type: 'string',
			default: 'http://127.0.0.1:8000',
			placeholder: 'https://overnight.example.com',
			description: 'Where `overnight serve` listens, without a trailing /v1',
		},
		{
			displayName: 'API Key',
			name: 'apiKey',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'A tenant key (ovn_...) printed by `overnight keys create`',
		},
		{
			displayName: 'Webhook Secret',
			name: 'webhookSecret',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description:
				"The tenant's webhook secret (whsec_...), used by Submit and Wait to verify the signed callback. Leave empty to fetch the current secrets from GET /v1/webhook-secrets.",
		},
	];

	authenticate: IAuthenticateGeneric = {
		type: 'generic',
		properties: {
			headers: {
				Authorization: '=Bearer {{$credentials.apiKey}}',
			},
		},
	};

	test: ICredentialTestRequest = {
		request: {
			baseURL: '={{$credentials.baseUrl.replace(/\\/+$/, "")}}',
			url: '/v1/whoami',
			method: 'GET',
		},
	};
}
