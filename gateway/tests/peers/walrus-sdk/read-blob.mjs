#!/usr/bin/env node
// Read one Walrus blob through the official TypeScript SDK (@mysten/walrus 1.2.13 +
// @mysten/sui 2.33.1) from a simulated Sui full node (gRPC-Web) and simulated storage nodes.
//
// Env:
//   SUI_URL         base URL of the gRPC-Web full node, e.g. http://127.0.0.1:9000 (loopback only)
//   SYSTEM_OBJECT   Walrus System object ID (0x + 64 hex)
//   STAKING_OBJECT  Walrus Staking object ID (0x + 64 hex)  (SDK field name: stakingPoolId)
//   BLOB_ID         blob ID, base64url without padding
//   OUT             optional file to write the blob bytes to
//   GRPC_FORMAT     optional: "text" (SDK default, application/grpc-web-text) or "binary"
//                   (application/grpc-web+proto)
//   NODE_SCHEME     optional: "https" (default) or "http" for storage nodes
//   TIMEOUT_MS      optional overall deadline (default 120000)
//   NODE_TIMEOUT_MS optional per storage-node request timeout (SDK default 30000)
//   VERBOSE=1       log every gRPC-Web and storage-node request to stderr
//
// Trusting self-signed storage-node certificates: start node with
//   NODE_EXTRA_CA_CERTS=/path/to/bundle.pem node read-blob.mjs
// (bundle = the nodes' self-signed certificates, each with SAN IP:127.0.0.1). See FINDINGS.md §5.
//
// Exit codes: 0 ok, 2 bad usage/config, 1 read failed, 3 overall timeout.

import { writeFileSync } from 'node:fs';
import { SuiGrpcClient } from '@mysten/sui/grpc';
import { WalrusClient } from '@mysten/walrus';
import { normalizeSuiObjectId } from '@mysten/sui/utils';

function die(code, msg) {
	process.stderr.write(`read-blob: ${msg}\n`);
	process.exit(code);
}

const env = process.env;
for (const k of ['SUI_URL', 'SYSTEM_OBJECT', 'STAKING_OBJECT', 'BLOB_ID']) {
	if (!env[k]) die(2, `missing env var ${k}`);
}

function checkLoopback(name, value) {
	let u;
	try {
		u = new URL(value);
	} catch {
		die(2, `${name} is not a URL: ${value}`);
	}
	const h = u.hostname.replace(/^\[|\]$/g, '');
	if (!(h === '127.0.0.1' || h === 'localhost' || h === '::1' || /^127\./.test(h))) {
		die(2, `${name} must be a loopback URL, got host ${u.hostname}`);
	}
	if (u.protocol !== 'http:' && u.protocol !== 'https:') die(2, `${name} must be http(s)`);
	return u;
}
checkLoopback('SUI_URL', env.SUI_URL);
const idRe = /^0x[0-9a-fA-F]{1,64}$/;
if (!idRe.test(env.SYSTEM_OBJECT)) die(2, `SYSTEM_OBJECT is not an object ID: ${env.SYSTEM_OBJECT}`);
if (!idRe.test(env.STAKING_OBJECT)) die(2, `STAKING_OBJECT is not an object ID: ${env.STAKING_OBJECT}`);
if (!/^[A-Za-z0-9_-]{43}$/.test(env.BLOB_ID)) die(2, `BLOB_ID must be 43 chars of base64url: ${env.BLOB_ID}`);

const verbose = env.VERBOSE === '1';
const format = env.GRPC_FORMAT === 'binary' ? 'binary' : 'text';
const nodeScheme = env.NODE_SCHEME === 'http' ? 'http' : 'https';

// Wrap fetch: storage-node URLs come from on-chain network_address; refuse anything that is
// not loopback so a misconfigured simulation can never make this CI client leave the machine.
// The gRPC-Web transport turns fetch failures into RpcError(INTERNAL, "fetch failed") and drops
// the cause; remember it so the final message says e.g. ECONNREFUSED.
let lastGrpcFetchError = null;
function guardedFetch(label) {
	return async (url, init) => {
		const u = new URL(typeof url === 'string' ? url : url.url);
		const h = u.hostname.replace(/^\[|\]$/g, '');
		if (!(h === '127.0.0.1' || h === 'localhost' || h === '::1' || /^127\./.test(h))) {
			throw new Error(`refusing non-loopback ${label} URL ${u.href}`);
		}
		const t0 = Date.now();
		try {
			const res = await globalThis.fetch(url, init);
			if (verbose) process.stderr.write(`[${label}] ${init?.method ?? 'GET'} ${u.href} -> ${res.status} (${Date.now() - t0} ms)\n`);
			return res;
		} catch (e) {
			if (label === 'grpc') lastGrpcFetchError = `${u.href}: ${describe(e)}`;
			if (verbose) process.stderr.write(`[${label}] ${init?.method ?? 'GET'} ${u.href} -> ${describe(e)}\n`);
			throw e;
		}
	};
}

function describe(e) {
	if (!e) return String(e);
	const parts = [];
	let cur = e;
	for (let i = 0; cur && i < 5; i++, cur = cur.cause) {
		const code = cur.code ? ` [${cur.code}]` : '';
		parts.push(`${cur.name ?? 'Error'}: ${cur.message ?? String(cur)}${code}`);
	}
	return parts.join(' <- caused by: ');
}

const suiClient = new SuiGrpcClient({
	network: 'localnet', // label only; WalrusClient is given packageConfig explicitly
	baseUrl: env.SUI_URL,
	format,
	fetch: guardedFetch('grpc'),
});

const walrusClient = new WalrusClient({
	suiClient,
	packageConfig: {
		// The SDK sends these strings verbatim as GetObjectRequest.object_id; normalise to 0x + 64 hex.
		systemObjectId: normalizeSuiObjectId(env.SYSTEM_OBJECT),
		stakingPoolId: normalizeSuiObjectId(env.STAKING_OBJECT),
	},
	storageNodeUrlScheme: nodeScheme,
	storageNodeClientOptions: {
		fetch: guardedFetch('node'),
		timeout: env.NODE_TIMEOUT_MS ? Number(env.NODE_TIMEOUT_MS) : undefined,
		onError: verbose ? (e) => process.stderr.write(`[node-error] ${describe(e)}\n`) : undefined,
	},
});

const timeoutMs = env.TIMEOUT_MS ? Number(env.TIMEOUT_MS) : 120000;
const overall = AbortSignal.timeout(timeoutMs);
const timer = setTimeout(() => die(3, `timed out after ${timeoutMs} ms`), timeoutMs + 1000);

try {
	const bytes = await walrusClient.readBlob({ blobId: env.BLOB_ID, signal: overall });
	clearTimeout(timer);
	if (env.OUT) writeFileSync(env.OUT, bytes);
	process.stdout.write(`read ${bytes.length} bytes${env.OUT ? ` -> ${env.OUT}` : ''}\n`);
	process.exit(0);
} catch (e) {
	clearTimeout(timer);
	let msg = `readBlob failed: ${describe(e)}`;
	if (e?.name === 'RpcError' && lastGrpcFetchError) msg += `\n  (last Sui gRPC-Web transport error: ${lastGrpcFetchError})`;
	die(1, msg);
}
