"""A client written for a Walrus aggregator, with Python's `requests`: it reads blobs, a range,
the consistency parameters, concat (GET and POST), CORS and /v1/api, and prints what it saw as
one JSON object (gateway/tests/aggregator_parity.rs compares it).

Usage: python3 aggregator_client.py BASE_URL BLOCKED_ID ID...
"""
import hashlib
import json
import sys

import requests


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def reason(r):
    try:
        return r.json()["error"]["details"][0]["reason"]
    except Exception:
        return ""


def main():
    base, blocked, *ids = sys.argv[1:]
    blob_url = f"{base}/v1/blobs/{ids[0]}"
    s = requests.Session()
    t = 30
    out = {}
    r = s.get(blob_url, timeout=t)
    out["blob"] = {"status": r.status_code, "sha256": sha256(r.content)}
    r = s.get(blob_url, headers={"Range": "bytes=10-19"}, timeout=t)
    out["range"] = {"status": r.status_code, "sha256": sha256(r.content)}
    r = s.get(blob_url, params={"strict_consistency_check": "true"}, timeout=t)
    out["strict"] = {"status": r.status_code, "sha256": sha256(r.content)}
    r = s.get(
        blob_url,
        params={"strict_consistency_check": "true", "skip_consistency_check": "true"},
        timeout=t,
    )
    out["both"] = {"status": r.status_code, "reason": reason(r)}
    r = s.get(blob_url, params={"foo": "bar"}, timeout=t)
    out["unknown"] = {"status": r.status_code, "reason": reason(r)}
    # requests percent-encodes the commas (%2C), as form encoders do.
    r = s.get(f"{base}/v1alpha/blobs/concat", params={"ids": ",".join(ids)}, timeout=t)
    out["concat_get"] = {"status": r.status_code, "sha256": sha256(r.content)}
    r = s.post(f"{base}/v1alpha/blobs/concat", json={"ids": ids}, timeout=t)
    out["concat_post"] = {"status": r.status_code, "sha256": sha256(r.content)}
    r = s.options(
        blob_url,
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        timeout=t,
    )
    out["preflight"] = {
        "status": r.status_code,
        "allow_origin": r.headers.get("access-control-allow-origin", ""),
        "max_age": r.headers.get("access-control-max-age", ""),
    }
    r = s.get(blob_url, headers={"Origin": "https://app.example"}, timeout=t)
    out["cors"] = {"allow_origin": r.headers.get("access-control-allow-origin", "")}
    r = s.get(f"{base}/v1/api", timeout=t)
    out["api"] = {"status": r.status_code, "has_concat": "/v1alpha/blobs/concat" in r.json()["paths"]}
    r = s.get(f"{base}/v1/blobs/{blocked}", timeout=t)
    out["blocked"] = {"status": r.status_code, "reason": reason(r)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
