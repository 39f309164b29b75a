#!/usr/bin/env node
// Quilt vectors from the official Walrus TypeScript SDK (@mysten/walrus 1.2.13, as pinned in
// package.json): its `encodeQuilt` (dist/utils/quilts.mjs), its quilt patch IDs
// (`encodeQuiltPatchId`) and the quilt's Blob ID from its WASM encoder (`computeMetadata`).
// gateway/tests/quilt_sdk.rs runs this and checks that walrus-codec produces the same bytes.
//
// Env:
//   OUT_DIR  directory to write into (must exist): manifest.json, and per case
//            <name>.patches.bin (the patch contents, concatenated in manifest order) and
//            <name>.quilt.bin (the SDK's quilt bytes)
//   SDK_DIR  optional: the directory whose node_modules holds the SDK (default: this script's
//            directory; .ci/run installs it elsewhere and sets WALRUS_SDK_DIR)
//
// Patches are pseudo-random but deterministic (xorshift32 seeded per case), so a failure
// reproduces. Identifiers avoid characters outside the Basic Multilingual Plane: the SDK sorts
// them by UTF-16 code units where Walrus's Rust code sorts by UTF-8 bytes, and the two orders
// differ only there.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { pathToFileURL } from 'node:url';

const base = process.env.SDK_DIR ? pathToFileURL(join(process.env.SDK_DIR, '/')) : new URL('./', import.meta.url);
const dist = new URL('node_modules/@mysten/walrus/dist/', base);
const { encodeQuilt, encodeQuiltPatchId } = await import(new URL('utils/quilts.mjs', dist));
const { getWasmBindings } = await import(new URL('wasm.mjs', dist));

const outDir = process.env.OUT_DIR;
if (!outDir) {
	process.stderr.write('quilt-vectors: OUT_DIR is required\n');
	process.exit(2);
}

function rng(seed) {
	let x = seed >>> 0 || 1;
	return () => {
		x ^= x << 13;
		x >>>= 0;
		x ^= x >>> 17;
		x ^= x << 5;
		x >>>= 0;
		return x;
	};
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_. /é日本語ü';

function identifier(next, i, maxLen) {
	// Unique by construction (the index number leads), then 0..maxLen more characters.
	const chars = [...ALPHABET];
	let s = `${i.toString(36)}`;
	const extra = next() % (maxLen + 1);
	for (let k = 0; k < extra; k++) s += chars[next() % chars.length];
	// No trailing whitespace (Walrus refuses it).
	return s.replace(/\s+$/u, '') + 'x';
}

function contents(next, size) {
	const out = new Uint8Array(size);
	for (let i = 0; i < size; i += 4) {
		const v = next();
		for (let k = 0; k < 4 && i + k < size; k++) out[i + k] = (v >>> (8 * k)) & 0xff;
	}
	return out;
}

// name, shards, patches, tags?, max identifier length (chars), sizes [min, max], big patch
const CASES = [
	['n10-tags', 10, 6, true, 40, [0, 3000], 0],
	['n10-plain-1mb', 10, 3, false, 5, [0, 100], 1_000_000],
	['n100-tags', 100, 66, true, 300, [0, 20_000], 0],
	['n100-plain-3mb', 100, 20, false, 60, [0, 5_000], 3_000_000],
	['n1000-tags-4mb', 1000, 200, true, 120, [0, 8_000], 4_000_000],
	['n1000-plain-max', 1000, 666, false, 20, [0, 600], 0],
];

const wasm = await getWasmBindings();
const manifest = [];
for (const [name, shards, count, withTags, maxIdLen, [minSize, maxSize], big] of CASES) {
	const next = rng(0x9e3779b9 ^ (shards * 7919 + count));
	const blobs = [];
	for (let i = 0; i < count; i++) {
		let size = minSize + (next() % (maxSize - minSize + 1));
		if (i === 0) size = 0;
		if (big && i === 1) size = big;
		const blob = {
			// One single-byte identifier per quilt; the others are 2 to a few hundred bytes.
			identifier: i === 0 ? 'z' : identifier(next, i, maxIdLen),
			contents: contents(next, size),
		};
		if (withTags && i % 3 !== 2) {
			// Keys of different lengths: the BCS map order (by serialized key) is not the
			// strings' order.
			blob.tags = { b: `v${i}`, aa: 'x'.repeat(next() % 50), [`k${next() % 1000}`]: 'é' };
		}
		blobs.push(blob);
	}
	const { quilt, index } = encodeQuilt({ blobs, numShards: shards, encodingType: 'RS2' });
	const { blobId } = wasm.computeMetadata(shards, quilt);
	const patchIds = index.patches.map((p) => ({
		identifier: p.identifier,
		startIndex: p.startIndex,
		endIndex: p.endIndex,
		patchId: encodeQuiltPatchId({
			quiltId: blobId,
			patchId: { version: 1, startIndex: p.startIndex, endIndex: p.endIndex },
		}),
	}));
	const total = blobs.reduce((a, b) => a + b.contents.length, 0);
	const all = new Uint8Array(total);
	let at = 0;
	for (const b of blobs) {
		all.set(b.contents, at);
		at += b.contents.length;
	}
	writeFileSync(join(outDir, `${name}.patches.bin`), all);
	writeFileSync(join(outDir, `${name}.quilt.bin`), quilt);
	manifest.push({
		name,
		nShards: shards,
		blobId,
		patches: blobs.map((b) => ({
			identifier: b.identifier,
			tags: b.tags ?? {},
			size: b.contents.length,
		})),
		index: patchIds,
	});
}
writeFileSync(join(outDir, 'manifest.json'), JSON.stringify(manifest));
