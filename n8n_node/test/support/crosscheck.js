// Calls the built node's pure functions for tests/n8n/test_node_package.py, which compares the
// answers with the Python SDK's. stdin: [[module, function, [args...]], ...]; stdout: the results.
const modules = {
	idempotency: require('../../dist/nodes/Overnight/shared/idempotency'),
	webhooks: require('../../dist/nodes/Overnight/shared/webhooks'),
	errors: require('../../dist/nodes/Overnight/shared/errors'),
};

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => (input += chunk));
process.stdin.on('end', () => {
	const results = JSON.parse(input).map(([module, name, args]) => modules[module][name](...args));
	process.stdout.write(JSON.stringify(results));
});
