// Unit tests of the node's pure parts (run on the build: `npm run build && npm test`).
// Vectors marked "from Python" were computed with overnight._hashing / overnight._webhooks;
// tests/n8n/test_node_package.py also compares both implementations on many more inputs.
const { test } = require('node:test');
const assert = require('node:assert/strict');

const {
	deriveIdempotencyKey,
	itemIdempotencyKey,
	requestIdempotencyKey,
} = require('../dist/nodes/Overnight/shared/idempotency');
const {
	signWebhook,
	verifyWebhook,
	secretKey,
} = require('../dist/nodes/Overnight/shared/webhooks');
const {
	buildJobBody,
	jobOutput,
	jobText,
	n8nMetadata,
	orderByItem,
	RequestBuildError,
} = require('../dist/nodes/Overnight/shared/requests');
const {
	errorFromResponse,
	failureFor,
	parseRetryAfter,
	transportError,
} = require('../dist/nodes/Overnight/shared/errors');

test('idempotency keys match the Python derivation (vectors from Python)', () => {
	assert.equal(
		itemIdempotencyKey('1', 'Overnight', 0, 0),
		'n8n:55ebee18dd48dcf1eb4668bde0e071431f5e0e38',
	);
	assert.equal(
		deriveIdempotencyKey('n8n', '42', 'Ask "one" ü 😀', 1, 3),
		'n8n:5892215a9e0731389ba8cbba0a228bfff555adc2',
	);
	assert.equal(
		requestIdempotencyKey('7', 'node', 0),
		'n8n:5e2d0195a69b51e4db3440e023ac6df023ba5a69',
	);
});

test('idempotency keys differ per execution, node, run and item', () => {
	const base = itemIdempotencyKey('1', 'A', 0, 0);
	assert.match(base, /^n8n:[0-9a-f]{40}$/);
	for (const other of [
		itemIdempotencyKey('2', 'A', 0, 0),
		itemIdempotencyKey('1', 'B', 0, 0),
		itemIdempotencyKey('1', 'A', 1, 0),
		itemIdempotencyKey('1', 'A', 0, 1),
	]) {
		assert.notEqual(other, base);
	}
	// parts are joined as a JSON list, so moving a separator does not collide
	assert.notEqual(deriveIdempotencyKey('n8n', 'a,b', 'c'), deriveIdempotencyKey('n8n', 'a', 'b,c'));
});

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const OTHER = 'whsec_' + Buffer.from('another secret of 24+ bytes!!').toString('base64');
const BODY =
	'{"data":{"id":"job_1","metadata":{},"state":"succeeded"},"timestamp":"2026-01-01T00:00:00Z","type":"job.succeeded"}';

function headersFor(secrets, { id = 'msg_1', ts = 1_700_000_000, body = BODY } = {}) {
	return {
		'webhook-id': id,
		'webhook-timestamp': String(ts),
		'webhook-signature': secrets.map((s) => signWebhook(s, id, ts, body)).join(' '),
	};
}

test('a Standard Webhooks signature verifies and yields the event', () => {
	// the Standard Webhooks reference vector for this secret, id, timestamp and body
	assert.equal(
		signWebhook(SECRET, 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}'),
		'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
	);
	const result = verifyWebhook(BODY, headersFor([SECRET]), [SECRET], { nowSeconds: 1_700_000_010 });
	assert.equal(result.ok, true);
	assert.equal(result.event.type, 'job.succeeded');
	assert.equal(result.webhookId, 'msg_1');
});

test('verification refuses what was not signed by a trusted secret', () => {
	const now = { nowSeconds: 1_700_000_000 };
	const cases = [
		[verifyWebhook(BODY, {}, [SECRET], now), 'missing_signature'],
		[verifyWebhook(BODY, headersFor([OTHER]), [SECRET], now), 'invalid_signature'],
		[
			verifyWebhook(BODY.replace('succeeded', 'failed'), headersFor([SECRET]), [SECRET], now),
			'invalid_signature',
		],
		[
			verifyWebhook(BODY, { ...headersFor([SECRET]), 'webhook-id': 'msg_2' }, [SECRET], now),
			'invalid_signature',
		],
		[
			verifyWebhook(BODY, { ...headersFor([SECRET]), 'webhook-timestamp': 'soon' }, [SECRET], now),
			'invalid_timestamp',
		],
		[
			verifyWebhook(BODY, headersFor([SECRET]), [SECRET], { nowSeconds: 1_700_000_301 }),
			'timestamp_out_of_tolerance',
		],
		[
			verifyWebhook(BODY, headersFor([SECRET]), [SECRET], { nowSeconds: 1_699_999_699 }),
			'timestamp_out_of_tolerance',
		],
		[verifyWebhook(BODY, headersFor([SECRET]), ['', 'not base64!'], now), 'no_secret'],
		[
			verifyWebhook('not json', headersFor([SECRET], { body: 'not json' }), [SECRET], now),
			'invalid_webhook_payload',
		],
	];
	for (const [result, code] of cases) {
		assert.equal(result.ok, false);
		assert.equal(result.code, code, result.message);
	}
});

test('rotation: any offered signature under any trusted secret verifies', () => {
	const now = { nowSeconds: 1_700_000_000 };
	assert.equal(verifyWebhook(BODY, headersFor([OTHER, SECRET]), [SECRET], now).ok, true);
	assert.equal(verifyWebhook(BODY, headersFor([SECRET]), [OTHER, SECRET], now).ok, true);
	// header names are matched case-insensitively, raw bytes are what is signed
	const upper = Object.fromEntries(
		Object.entries(headersFor([SECRET])).map(([k, v]) => [k.toUpperCase(), v]),
	);
	assert.equal(verifyWebhook(Buffer.from(BODY), upper, [SECRET], now).ok, true);
	assert.equal(secretKey('whsec_'), null);
});

test('buildJobBody maps chat messages and every option to the API fields', () => {
	const body = buildJobBody({
		model: 'smollm2-135m',
		input: 'messages',
		messages: [
			{ role: 'system', content: 'Be brief.' },
			{ role: 'user', content: 'Hi' },
		],
		options: {
			maxTokens: 32,
			temperature: 0,
			topP: 0.9,
			stop: ['\n\n', ''],
			seed: 7,
			responseFormat: 'json_object',
			metadata: { customer: 'acme' },
			priority: 'batch',
			callbackUrl: 'https://example.com/hook',
			completionWindow: '1h',
			maxAttempts: 2,
		},
	});
	assert.deepEqual(body, {
		model: 'smollm2-135m',
		messages: [
			{ role: 'system', content: 'Be brief.' },
			{ role: 'user', content: 'Hi' },
		],
		max_tokens: 32,
		temperature: 0,
		top_p: 0.9,
		stop: ['\n\n'],
		seed: 7,
		response_format: { type: 'json_object' },
		metadata: { customer: 'acme' },
		priority: 'batch',
		callback_url: 'https://example.com/hook',
		completion_window: '1h',
		max_attempts: 2,
	});
});

test('buildJobBody leaves unset options to the service and takes prompts and JSON messages', () => {
	assert.deepEqual(
		buildJobBody({
			model: 'm',
			input: 'prompt',
			prompt: 'Once upon',
			options: { responseFormat: 'text', stop: [] },
		}),
		{
			model: 'm',
			prompt: 'Once upon',
		},
	);
	assert.deepEqual(
		buildJobBody({
			model: 'm',
			input: 'messagesJson',
			messagesJson: '[{"role":"user","content":"x"}]',
		}),
		{
			model: 'm',
			messages: [{ role: 'user', content: 'x' }],
		},
	);
	assert.deepEqual(
		buildJobBody({
			model: 'm',
			input: 'messagesJson',
			messagesJson: [{ role: 'user', content: 5 }],
		}).messages,
		[{ role: 'user', content: '5' }],
	);
	for (const [value, param] of [
		['{not json', 'messagesJson'],
		['{"role":"user"}', 'messagesJson'],
		['[{"content":"no role"}]', 'messagesJson[0]'],
	]) {
		assert.throws(
			() => buildJobBody({ model: 'm', input: 'messagesJson', messagesJson: value }),
			(error) => error instanceof RequestBuildError && error.param === param,
		);
	}
});

test('job output adds the first choice text; batches come back in item order', () => {
	const chat = {
		id: 'j',
		state: 'succeeded',
		result: { choices: [{ message: { content: 'Paris.' } }] },
	};
	assert.equal(jobText(chat), 'Paris.');
	assert.equal(
		jobText({ id: 'j', state: 'succeeded', result: { choices: [{ text: 'upon a time' }] } }),
		'upon a time',
	);
	assert.equal(jobText({ id: 'j', state: 'failed', result: null }), null);
	assert.deepEqual(jobOutput(chat), { ...chat, text: 'Paris.' });
	const jobs = [2, 10, 0, 1].map((i) => ({
		id: `j${i}`,
		state: 'succeeded',
		metadata: { n8n_item: String(i) },
	}));
	assert.deepEqual(
		orderByItem(jobs).map((j) => j.id),
		['j0', 'j1', 'j2', 'j10'],
	);
	assert.deepEqual(n8nMetadata('5', 'Ask', 3), {
		n8n_execution: '5',
		n8n_node: 'Ask',
		n8n_item: '3',
	});
	assert.deepEqual(n8nMetadata('5', 'Ask'), { n8n_execution: '5', n8n_node: 'Ask' });
});

test('errors map like the Python SDK and tell n8n whether a wait helps', () => {
	const body = (code, message, param = null) => ({ error: { code, message, param } });
	const table = [
		[
			400,
			body('model_not_found', 'Unknown model', 'model'),
			'InvalidRequestError',
			false,
			'configuration-invalid',
		],
		[401, body('invalid_api_key', 'bad key'), 'AuthenticationError', false, 'credential-invalid'],
		[403, body('forbidden', 'no'), 'AuthenticationError', false, 'credential-invalid'],
		[404, body('not_found', 'no job'), 'NotFoundError', false, 'configuration-invalid'],
		[
			409,
			body('idempotency_conflict', 'other body'),
			'ConflictError',
			false,
			'configuration-invalid',
		],
		[413, body('payload_too_large', 'big'), 'PayloadTooLargeError', false, 'configuration-invalid'],
		[
			422,
			body('invalid_request', 'temperature: too high', 'temperature'),
			'InvalidRequestError',
			false,
			'configuration-invalid',
		],
		[429, body('rate_limited', 'slow down'), 'RateLimitError', true, 'rate-limited'],
		[503, body('unavailable', 'later'), 'ServiceError', true, 'temporarily-unavailable'],
		[418, 'teapot', 'InvalidRequestError', false, 'configuration-invalid'],
	];
	for (const [status, payload, kind, retryable, cause] of table) {
		const info = errorFromResponse(status, payload);
		assert.equal(info.kind, kind, String(status));
		assert.equal(info.retryable, retryable, String(status));
		assert.equal(info.status, status);
		assert.equal(failureFor(info).cause, cause, String(status));
	}
	const detailed = errorFromResponse(
		422,
		body('invalid_request', 'temperature: too high', 'temperature'),
	);
	assert.deepEqual(
		[detailed.code, detailed.message, detailed.param],
		['invalid_request', 'temperature: too high', 'temperature'],
	);
	assert.deepEqual(
		[errorFromResponse(502, undefined).code, errorFromResponse(502, undefined).message],
		['service_error', 'HTTP 502'],
	);
	assert.deepEqual(
		failureFor(errorFromResponse(429, body('rate_limited', 'x'), parseRetryAfter('2'))),
		{ cause: 'rate-limited', retryAfterMs: 2000 },
	);
	assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT'), null);
	assert.deepEqual(
		[transportError('down').kind, transportError('down').retryable],
		['TransportError', true],
	);
});
