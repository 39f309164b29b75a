// A client written for a Walrus aggregator, with nothing but Node's built-in fetch: it reads
// blobs, a range, the consistency parameters, concat (GET and POST), CORS and /v1/api, and
// prints what it saw as one JSON object (gateway/tests/aggregator_parity.rs compares it).
// Usage: node aggregator_client.mjs BASE_URL BLOCKED_ID ID...
import { createHash } from "node:crypto";

const [base, blocked, ...ids] = process.argv.slice(2);
const sha256 = (buf) => createHash("sha256").update(Buffer.from(buf)).digest("hex");
const reason = async (r) => {
  try {
    return (await r.json()).error.details[0].reason;
  } catch {
    return "";
  }
};
const blobUrl = `${base}/v1/blobs/${ids[0]}`;
const body = async (r) => sha256(await r.arrayBuffer());

const out = {};
let r = await fetch(blobUrl);
out.blob = { status: r.status, sha256: await body(r) };
r = await fetch(blobUrl, { headers: { Range: "bytes=10-19" } });
out.range = { status: r.status, sha256: await body(r) };
r = await fetch(`${blobUrl}?strict_consistency_check=true`);
out.strict = { status: r.status, sha256: await body(r) };
r = await fetch(`${blobUrl}?strict_consistency_check=true&skip_consistency_check=true`);
out.both = { status: r.status, reason: await reason(r) };
r = await fetch(`${blobUrl}?foo=bar`);
out.unknown = { status: r.status, reason: await reason(r) };
const concat = new URL(`${base}/v1alpha/blobs/concat`);
concat.searchParams.set("ids", ids.join(","));
r = await fetch(concat);
out.concat_get = { status: r.status, sha256: await body(r) };
r = await fetch(`${base}/v1alpha/blobs/concat`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ ids }),
});
out.concat_post = { status: r.status, sha256: await body(r) };
r = await fetch(blobUrl, {
  method: "OPTIONS",
  headers: { Origin: "https://app.example", "Access-Control-Request-Method": "GET" },
});
await r.arrayBuffer();
out.preflight = {
  status: r.status,
  allow_origin: r.headers.get("access-control-allow-origin") ?? "",
  max_age: r.headers.get("access-control-max-age") ?? "",
};
r = await fetch(blobUrl, { headers: { Origin: "https://app.example" } });
await r.arrayBuffer();
out.cors = { allow_origin: r.headers.get("access-control-allow-origin") ?? "" };
r = await fetch(`${base}/v1/api`);
const api = await r.json();
out.api = { status: r.status, has_concat: "/v1alpha/blobs/concat" in api.paths };
r = await fetch(`${base}/v1/blobs/${blocked}`);
out.blocked = { status: r.status, reason: await reason(r) };
console.log(JSON.stringify(out));
