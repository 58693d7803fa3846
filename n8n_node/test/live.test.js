// The node's operations against a live Overnight server (tests/n8n runs this against the real
// engine): request building, idempotency, per-item errors with and without "Continue On Fail",
// error mapping, and Submit and Wait's resume webhook fed by Overnight's own signed deliveries.
//
//   OVERNIGHT_URL=... OVERNIGHT_API_KEY=... node --test test/live.test.js
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { NodeApiError, NodeOperationError, WAIT_INDEFINITELY } = require('n8n-workflow');

const { Overnight } = require('../dist/nodes/Overnight/Overnight.node');
const { itemIdempotencyKey } = require('../dist/nodes/Overnight/shared/idempotency');
const { executeContext, webhookContext, callbackReceiver } = require('./support/context');

const URL_ = process.env.OVERNIGHT_URL;
const API_KEY = process.env.OVERNIGHT_API_KEY;
if (!URL_ || !API_KEY)
	throw new Error('set OVERNIGHT_URL and OVERNIGHT_API_KEY to a live Overnight server');
const CREDENTIALS = { baseUrl: `${URL_}/`, apiKey: API_KEY, webhookSecret: '' };
const MODEL = process.env.OVERNIGHT_MODEL ?? 'smollm2-135m';
const node = new Overnight();

async function api(path, init = {}) {
	const response = await fetch(`${URL_}${path}`, {
		...init,
		headers: { Authorization: `Bearer ${API_KEY}`, ...(init.headers ?? {}) },
	});
	return { status: response.status, body: await response.json() };
}

function chatParams(operation, extra = {}) {
	return {
		operation,
		model: MODEL,
		input: 'messages',
		messages: (i) => ({ message: [{ role: 'user', content: `Say the number ${i + 1}.` }] }),
		options: { maxTokens: 8, temperature: 0 },
		...extra,
	};
}

async function jobsOf(executionId) {
	const { body } = await api(
		`/v1/jobs?limit=100&metadata.n8n_execution=${encodeURIComponent(executionId)}`,
	);
	return body.data;
}

async function waitFor(jobId) {
	for (;;) {
		const { body } = await api(`/v1/jobs/${jobId}/wait?timeout=60`);
		if (['succeeded', 'failed', 'cancelled', 'expired'].includes(body.state)) return body;
	}
}

async function rejection(promise) {
	try {
		await promise;
	} catch (error) {
		return error;
	}
	assert.fail('expected the node to fail');
}

/** Run `body` with a fresh callback endpoint, so no test sees another test's webhooks. */
async function withReceiver(body) {
	const receiver = await callbackReceiver();
	try {
		await body(receiver);
	} finally {
		await receiver.close();
	}
}

test('Submit Job sends one job per item with the derived idempotency key; a re-run attaches to them', async () => {
	const ctx = executeContext({
		params: chatParams('submit'),
		items: [{}, {}],
		credentials: CREDENTIALS,
		nodeName: 'Ask',
	});
	const [out] = await node.execute.call(ctx);
	assert.equal(out.length, 2);
	for (const [i, item] of out.entries()) {
		assert.deepEqual(item.pairedItem, { item: i });
		assert.equal(item.json.object, 'job');
		assert.equal(item.json.idempotency_key, itemIdempotencyKey(ctx.executionId, 'Ask', 0, i));
		assert.deepEqual(item.json.metadata, {
			n8n_execution: ctx.executionId,
			n8n_node: 'Ask',
			n8n_item: String(i),
		});
		assert.deepEqual(
			item.json.request.messages.map(({ role, content }) => ({ role, content })),
			[{ role: 'user', content: `Say the number ${i + 1}.` }],
		);
		assert.equal(item.json.request.max_tokens, 8);
	}
	// the same execution runs the node again (Retry On Fail): the same jobs, nothing new to pay for
	const again = executeContext({
		params: chatParams('submit'),
		items: [{}, {}],
		credentials: CREDENTIALS,
		nodeName: 'Ask',
		executionId: ctx.executionId,
	});
	const [rerun] = await node.execute.call(again);
	assert.deepEqual(
		rerun.map((item) => item.json.id),
		out.map((item) => item.json.id),
	);
	assert.equal((await jobsOf(ctx.executionId)).length, 2);
	// another run index (a loop) is another job
	const loop = executeContext({
		params: chatParams('submit'),
		items: [{}],
		credentials: CREDENTIALS,
		nodeName: 'Ask',
		executionId: ctx.executionId,
		runIndex: 1,
	});
	const [[looped]] = await node.execute.call(loop);
	assert.notEqual(looped.json.id, out[0].json.id);
});

test('Get Job waits for the engine and outputs the text; Cancel Job of a finished job is a conflict', async () => {
	const [[submitted]] = await node.execute.call(
		executeContext({ params: chatParams('submit'), credentials: CREDENTIALS }),
	);
	const ctx = executeContext({
		params: {
			operation: 'get',
			jobId: submitted.json.id,
			waitForCompletion: true,
			waitTimeout: 300,
		},
		credentials: CREDENTIALS,
	});
	const [[done]] = await node.execute.call(ctx);
	assert.equal(done.json.state, 'succeeded');
	assert.equal(typeof done.json.text, 'string');
	assert.ok(done.json.text.length > 0);
	assert.equal(done.json.text, done.json.result.choices[0].message.content);

	const cancel = executeContext({
		params: { operation: 'cancel', jobId: submitted.json.id },
		credentials: CREDENTIALS,
		continueOnFail: true,
	});
	const [[refused]] = await node.execute.call(cancel);
	assert.equal(refused.json.details.kind, 'ConflictError');
	assert.equal(refused.json.details.code, 'job_finished');
	assert.equal(refused.json.details.retryable, false);
});

test('per-item errors: Continue On Fail outputs them in place, otherwise the node fails naming the item', async () => {
	const params = chatParams('submit', { model: (i) => (i === 1 ? 'no-such-model' : MODEL) });
	const [out] = await node.execute.call(
		executeContext({ params, items: [{}, {}, {}], credentials: CREDENTIALS, continueOnFail: true }),
	);
	assert.deepEqual(
		out.map((item) => item.pairedItem.item),
		[0, 1, 2],
	);
	assert.equal(out[0].json.object, 'job');
	assert.equal(out[2].json.object, 'job');
	assert.deepEqual(Object.keys(out[1].json).sort(), ['details', 'error']); // n8n's error-output shape
	assert.equal(out[1].json.details.kind, 'InvalidRequestError');
	assert.equal(out[1].json.details.code, 'model_not_found');
	assert.equal(out[1].json.details.param, 'model');
	assert.equal(out[1].json.details.retryable, false);

	const error = await rejection(
		node.execute.call(executeContext({ params, items: [{}, {}, {}], credentials: CREDENTIALS })),
	);
	assert.ok(error instanceof NodeApiError);
	assert.equal(error.context.itemIndex, 1);
	assert.equal(error.httpCode, '400');
	assert.deepEqual(error.failure, { cause: 'configuration-invalid' });
	assert.match(error.description, /\[model_not_found\] \(parameter: model\)/);

	const invalid = await rejection(
		node.execute.call(
			executeContext({
				params: chatParams('submit', { options: { temperature: 5 } }),
				credentials: CREDENTIALS,
			}),
		),
	);
	assert.equal(invalid.httpCode, '422');
	assert.equal(invalid.context.overnight.param, 'temperature');

	const badJson = await rejection(
		node.execute.call(
			executeContext({
				params: chatParams('submit', { input: 'messagesJson', messagesJson: '[{' }),
				credentials: CREDENTIALS,
			}),
		),
	);
	assert.ok(badJson instanceof NodeOperationError);
	assert.equal(badJson.context.itemIndex, 0);
});

test('credential and transport errors say whether waiting helps', async () => {
	const badKey = await rejection(
		node.execute.call(
			executeContext({
				params: chatParams('submit'),
				credentials: { ...CREDENTIALS, apiKey: 'ovn_wrong' },
			}),
		),
	);
	assert.equal(badKey.httpCode, '401');
	assert.equal(badKey.context.overnight.kind, 'AuthenticationError');
	assert.deepEqual(badKey.failure, { cause: 'credential-invalid' });

	const [[down]] = await node.execute.call(
		executeContext({
			params: chatParams('submit'),
			credentials: { ...CREDENTIALS, baseUrl: 'http://127.0.0.1:9' },
			continueOnFail: true,
		}),
	);
	assert.equal(down.json.details.kind, 'TransportError');
	assert.equal(down.json.details.retryable, true);
	assert.equal(down.json.details.status, 0);

	const missing = await rejection(
		node.execute.call(
			executeContext({
				params: { operation: 'get', jobId: 'job_missing' },
				credentials: CREDENTIALS,
			}),
		),
	);
	assert.equal(missing.httpCode, '404');
	assert.equal(missing.context.overnight.kind, 'NotFoundError');
});

test('Submit Jobs in Bulk sends one request and keeps per-item results in input order', async () => {
	const params = chatParams('submitBulk', { model: (i) => (i === 1 ? 'no-such-model' : MODEL) });
	const ctx = executeContext({
		params,
		items: [{}, {}, {}],
		credentials: CREDENTIALS,
		continueOnFail: true,
	});
	const [out] = await node.execute.call(ctx);
	assert.deepEqual(
		out.map((item) => item.pairedItem.item),
		[0, 1, 2],
	);
	assert.equal(out[1].json.details.code, 'model_not_found');
	assert.equal(out[0].json.batch_id, out[2].json.batch_id);
	assert.ok(out[0].json.batch_id);
	assert.equal(out[2].json.idempotency_key, itemIdempotencyKey(ctx.executionId, 'Overnight', 0, 2));

	const error = await rejection(
		node.execute.call(executeContext({ params, items: [{}, {}, {}], credentials: CREDENTIALS })),
	);
	assert.equal(error.context.itemIndex, 1);
});

test("Submit and Wait: one item waits on job.*, and the resume webhook verifies Overnight's signature", async () =>
	await withReceiver(async (receiver) => {
		const ctx = executeContext({
			params: chatParams('submitAndWait', { limitWaitTime: false }),
			credentials: CREDENTIALS,
			resumeUrl: receiver.url,
			nodeName: 'Ask',
		});
		const [passthrough] = await node.execute.call(ctx);
		assert.deepEqual(ctx.waits, [WAIT_INDEFINITELY]);
		assert.deepEqual(passthrough, [{ json: {} }]);
		const [job] = await jobsOf(ctx.executionId);
		assert.equal(job.callback_url, receiver.url);

		const delivery = await receiver.next(); // Overnight's own signed job.succeeded
		const finished = await waitFor(job.id);
		const hook = webhookContext({
			...delivery,
			credentials: CREDENTIALS,
			executionId: ctx.executionId,
			nodeName: 'Ask',
		});
		const resumed = await node.webhook.call(hook);
		assert.equal(resumed.workflowData[0].length, 1);
		const [item] = resumed.workflowData[0];
		assert.deepEqual(item.pairedItem, { item: 0 });
		assert.equal(item.json.id, job.id);
		assert.equal(item.json.state, 'succeeded');
		assert.equal(item.json.text, finished.result.choices[0].message.content);

		const cases = [
			[
				{ ...delivery, rawBody: delivery.rawBody.replace('"succeeded"', '"failed"') },
				ctx.executionId,
				401,
				'invalid_signature',
			],
			[
				{ ...delivery, headers: { ...delivery.headers, 'webhook-signature': 'v1,AAAA' } },
				ctx.executionId,
				401,
				'invalid_signature',
			],
			[{ rawBody: delivery.rawBody, headers: {} }, ctx.executionId, 401, 'missing_signature'],
			[delivery, 'another-execution', 409, 'not_this_execution'],
		];
		for (const [request, executionId, status, code] of cases) {
			const refused = webhookContext({
				...request,
				credentials: CREDENTIALS,
				executionId,
				nodeName: 'Ask',
			});
			assert.deepEqual(await node.webhook.call(refused), { noWebhookResponse: true });
			assert.equal(refused.response.statusCode, status);
			assert.equal(refused.response.body.error.code, code);
		}
		// the same delivery with a webhook secret the credential does not trust
		const wrong = webhookContext({
			...delivery,
			credentials: {
				...CREDENTIALS,
				webhookSecret: 'whsec_' + Buffer.from('x'.repeat(32)).toString('base64'),
			},
			executionId: ctx.executionId,
			nodeName: 'Ask',
		});
		await node.webhook.call(wrong);
		assert.equal(wrong.response.statusCode, 401);
	}));

test('Submit and Wait: several items are one batch resumed by batch.completed, in item order', async () =>
	await withReceiver(async (receiver) => {
		const params = chatParams('submitAndWait', {
			limitWaitTime: true,
			resumeAmount: 2,
			resumeUnit: 'hours',
		});
		const ctx = executeContext({
			params,
			items: [{}, {}, {}],
			credentials: CREDENTIALS,
			resumeUrl: receiver.url,
		});
		const before = Date.now();
		await node.execute.call(ctx);
		assert.equal(ctx.waits.length, 1);
		const waitMs = ctx.waits[0].getTime() - before;
		assert.ok(
			waitMs >= 2 * 3600 * 1000 - 5000 && waitMs <= 2 * 3600 * 1000 + 60000,
			String(waitMs),
		);

		const delivery = await receiver.next();
		assert.equal(JSON.parse(delivery.rawBody).type, 'batch.completed');
		const resumed = await node.webhook.call(
			webhookContext({ ...delivery, credentials: CREDENTIALS, executionId: ctx.executionId }),
		);
		const items = resumed.workflowData[0];
		assert.deepEqual(
			items.map((item) => item.pairedItem.item),
			[0, 1, 2],
		);
		for (const [i, item] of items.entries()) {
			assert.equal(item.json.state, 'succeeded');
			assert.equal(item.json.request.messages[0].content, `Say the number ${i + 1}.`);
			assert.equal(item.json.text, item.json.result.choices[0].message.content);
		}
	}));

test('Submit and Wait does not wait on a batch with a refused item: it cancels the rest', async () =>
	await withReceiver(async (receiver) => {
		const params = chatParams('submitAndWait', {
			model: (i) => (i === 2 ? 'no-such-model' : MODEL),
			options: { maxTokens: 256, temperature: 0, priority: 'batch' },
		});
		const ctx = executeContext({
			params,
			items: [{}, {}, {}],
			credentials: CREDENTIALS,
			resumeUrl: receiver.url,
		});
		const error = await rejection(node.execute.call(ctx));
		assert.equal(error.context.itemIndex, 2);
		assert.deepEqual(ctx.waits, []);
		const jobs = await jobsOf(ctx.executionId);
		assert.equal(jobs.length, 2);
		for (const job of jobs) {
			// cancelled, or already finished when the cancel arrived (then the node logged it)
			assert.ok(['cancelled', 'succeeded'].includes(job.state), job.state);
		}
		assert.equal(ctx.warnings.length, jobs.filter((job) => job.state === 'succeeded').length);

		const lenient = executeContext({
			params,
			items: [{}, {}, {}],
			credentials: CREDENTIALS,
			resumeUrl: receiver.url,
			continueOnFail: true,
		});
		const [out] = await node.execute.call(lenient);
		assert.deepEqual(lenient.waits, []);
		assert.equal(out[2].json.details.code, 'model_not_found');
		assert.match(out[0].json.error, /another item of this batch was refused/);
	}));
