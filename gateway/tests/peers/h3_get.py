#!/usr/bin/env python3
"""One HTTP/3 GET with aioquic, an HTTP/3 stack independent of the gateway's (quinn + h3).

Used by gateway/tests/interop.rs (issue 8): it fetches a URL over QUIC, verifying the server's
certificate against --cacert, writes the response body to --output, and prints one JSON line
on stdout: {"status": 200, "headers": {...}, "length": N, "alpn": "h3"}. Any failure
(handshake, certificate, reset stream, timeout) exits non-zero with the reason on stderr.

    h3_get.py https://127.0.0.1:4433/v1/blobs/ID --cacert gateway.pem --output blob.bin \
        [--header "range: bytes=0-99"] [--timeout 60]
"""

import argparse
import asyncio
import json
import sys
from urllib.parse import urlparse

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class Response:
    def __init__(self, loop):
        self.done = loop.create_future()
        self.headers = []
        self.body = bytearray()


class H3Client(QuicConnectionProtocol):
    """A QUIC connection that speaks HTTP/3 and collects responses by stream."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.responses = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset):
            self._fail(event.stream_id, f"stream reset by the server (code {event.error_code})")
        elif isinstance(event, ConnectionTerminated):
            for stream_id in list(self.responses):
                self._fail(stream_id, f"connection closed: {event.reason_phrase!r} (code {event.error_code})")
        for h3_event in self.http.handle_event(event):
            response = self.responses.get(h3_event.stream_id)
            if response is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                response.headers.extend(h3_event.headers)
            elif isinstance(h3_event, DataReceived):
                response.body.extend(h3_event.data)
            if getattr(h3_event, "stream_ended", False) and not response.done.done():
                response.done.set_result(None)

    def _fail(self, stream_id, reason):
        response = self.responses.get(stream_id)
        if response is not None and not response.done.done():
            response.done.set_exception(RuntimeError(reason))

    async def get(self, authority, path, extra_headers):
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"walrus-interop-aioquic"),
        ] + [(name.encode(), value.encode()) for name, value in extra_headers]
        response = Response(asyncio.get_running_loop())
        self.responses[stream_id] = response
        self.http.send_headers(stream_id=stream_id, headers=headers, end_stream=True)
        self.transmit()
        await response.done
        return response


def parse_header(text):
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not 'name: value'")
    return name.strip().lower(), value.strip()


async def run(args):
    url = urlparse(args.url)
    if url.scheme != "https" or not url.hostname:
        raise SystemExit(f"h3_get: {args.url!r} is not an https:// URL")
    port = url.port or 443
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.load_verify_locations(cafile=args.cacert)
    # Room for large bodies without waiting on flow-control updates every megabyte.
    config.max_data = 64 << 20
    config.max_stream_data = 16 << 20
    async with connect(url.hostname, port, configuration=config, create_protocol=H3Client) as client:
        response = await client.get(url.netloc, path, args.header)
        alpn = client._quic.tls.alpn_negotiated
        client.close()
    headers = {}
    status = None
    for name, value in response.headers:
        name, value = name.decode(), value.decode()
        if name == ":status":
            status = int(value)
        else:
            headers[name] = value
    with open(args.output, "wb") as out:
        out.write(response.body)
    print(json.dumps({"status": status, "headers": headers, "length": len(response.body), "alpn": alpn}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--cacert", required=True, help="PEM certificate(s) to trust")
    parser.add_argument("--output", required=True, help="where the body goes")
    parser.add_argument("--header", action="append", default=[], type=parse_header)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole exchange")
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        print(f"h3_get: no complete answer within {args.timeout}s", file=sys.stderr)
        sys.exit(1)
    except ConnectionError as e:
        print(f"h3_get: the QUIC connection failed: {e or 'handshake refused (certificate not trusted?)'}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # the reason is all the caller needs
        print(f"h3_get: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
