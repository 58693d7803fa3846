// Stand-ins for the n8n contexts the node runs in, with real HTTP to a live Overnight server.
//
//   const ctx = executeContext({ operation: 'submit', items: [{}], params: {...}, credentials });
//   const output = await new Overnight().execute.call(ctx);
//
// `httpRequestWithAuthentication` does what n8n's does for the options the node uses: applies the
// credential's `authenticate` header (Bearer API key), sends JSON, and with `ignoreHttpStatusErrors`
// + `returnFullResponse` answers `{statusCode, headers, body}` whatever the status. Connection
// failures reject, as in n8n.
const http = require('node:http');

async function httpRequestWithAuthentication(credentials, type, options) {
	if (type !== 'overnightApi') throw new Error(`unexpected credential type ${type}`);
	if (!options.ignoreHttpStatusErrors || !options.returnFullResponse || !options.json) {
		throw new Error(
			'the stand-in only supports json + ignoreHttpStatusErrors + returnFullResponse',
		);
	}
	const url = new URL(options.url);
	for (const [key, value] of Object.entries(options.qs ?? {}))
		url.searchParams.set(key, String(value));
	const headers = {
		Accept: 'application/json',
		...(options.headers ?? {}),
		Authorization: `Bearer ${credentials.apiKey}`,
	};
	const init = { method: options.method ?? 'GET', headers };
	if (options.body !== undefined) {
		init.body = JSON.stringify(options.body);
		headers['Content-Type'] = 'application/json';
	}
	const response = await fetch(url, init);
	const text = await response.text();
	let body = text;
	try {
		body = text ? JSON.parse(text) : undefined;
	} catch {
		body = text;
	}
	return {
		statusCode: response.status,
		statusMessage: response.statusText,
		headers: Object.fromEntries(response.headers.entries()),
		body,
	};
}

function node(name) {
	return {
		id: 'node-1',
		name,
		type: 'CUSTOM.overnight',
		typeVersion: 1,
		position: [0, 0],
		parameters: {},
	};
}

/** IExecuteFunctions for one node run. `params` values may be functions of the item index. */
function executeContext({
	params,
	items = [{}],
	credentials,
	continueOnFail = false,
	executionId = `exec-${Date.now()}-${Math.random().toString(16).slice(2)}`,
	nodeName = 'Overnight',
	runIndex = 0,
	resumeUrl = 'http://127.0.0.1:9/unused',
}) {
	const waits = [];
	const warnings = [];
	const context = {
		waits,
		warnings,
		executionId,
		logger: { warn: (message) => warnings.push(message), debug() {}, info() {}, error() {} },
		getInputData: () => items.map((json) => ({ json })),
		getNodeParameter(name, itemIndex, fallback) {
			let value = params[name];
			if (typeof value === 'function') value = value(itemIndex);
			if (value === undefined) {
				if (arguments.length >= 3) return fallback;
				throw new Error(`Could not get parameter "${name}"`);
			}
			return value;
		},
		getNode: () => node(nodeName),
		getExecutionId: () => executionId,
		getWorkflowDataProxy: () => ({ $thisRunIndex: runIndex }),
		continueOnFail: () => continueOnFail,
		isToolExecution: () => false,
		evaluateExpression(expression) {
			if (expression === '{{ $execution.resumeUrl }}') return resumeUrl;
			throw new Error(`unexpected expression ${expression}`);
		},
		async putExecutionToWait(date) {
			waits.push(date);
		},
		getCredentials: async () => credentials,
		helpers: {
			httpRequestWithAuthentication: (type, options) =>
				httpRequestWithAuthentication(credentials, type, options),
		},
	};
	return context;
}

/** IWebhookFunctions for one resume request, with an Express-like response that records. */
function webhookContext({ rawBody, headers, credentials, executionId, nodeName = 'Overnight' }) {
	const response = {
		statusCode: 200,
		body: undefined,
		status(code) {
			this.statusCode = code;
			return this;
		},
		json(body) {
			this.body = body;
			return this;
		},
	};
	return {
		response,
		getRequestObject: () => ({ headers, rawBody: Buffer.from(rawBody) }),
		getResponseObject: () => response,
		getBodyData: () => JSON.parse(rawBody),
		getExecutionId: () => executionId,
		getNode: () => node(nodeName),
		getCredentials: async () => credentials,
		helpers: {
			httpRequestWithAuthentication: (type, options) =>
				httpRequestWithAuthentication(credentials, type, options),
		},
	};
}

/** A local endpoint standing in for n8n's resume URL: resolves each POST's raw body and headers. */
async function callbackReceiver() {
	const waiting = [];
	const received = [];
	const server = http.createServer((request, response) => {
		const chunks = [];
		request.on('data', (chunk) => chunks.push(chunk));
		request.on('end', () => {
			const delivery = {
				rawBody: Buffer.concat(chunks).toString('utf8'),
				headers: request.headers,
			};
			response.writeHead(200).end();
			const next = waiting.shift();
			if (next) next(delivery);
			else received.push(delivery);
		});
	});
	await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
	return {
		url: `http://127.0.0.1:${server.address().port}/webhook-waiting/1?signature=test`,
		/** The next delivery; fails after `timeoutMs` so a missing webhook cannot hang the run. */
		next(timeoutMs = 300_000) {
			if (received.length) return Promise.resolve(received.shift());
			return new Promise((resolve, reject) => {
				const timer = setTimeout(
					() => reject(new Error(`no webhook within ${timeoutMs} ms`)),
					timeoutMs,
				);
				waiting.push((delivery) => {
					clearTimeout(timer);
					resolve(delivery);
				});
			});
		},
		close: () => new Promise((resolve) => server.close(resolve)),
	};
}

module.exports = { executeContext, webhookContext, callbackReceiver };
