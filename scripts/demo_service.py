#!/usr/bin/env python3
"""A stand-in for the walkthrough's service_a/b/c containers, for scripts/demo.sh.

Serve mode answers every request with JSON naming this service and the headers that show which
hops the request took (Host tells which listener it entered; x-forwarded-*, x-request-id and
x-envoy-* are what the proxies added). With --call, each request first calls those URLs -- in the
demo, the sidecar's egress listeners -- and nests their answers; if a call fails the answer says
why and the status is 502, so a broken hop is visible rather than hidden.

    demo_service.py --name service_a --listen 127.0.0.1:8081 \
        --call http://127.0.0.3:8788/ --call http://127.0.0.3:8791/

Explain mode reads such an answer on stdin and prints the path as a tree; --hop maps the Host a
request arrived with to the proxies it went through, which only the mesh's configs know.

    curl -s http://127.0.0.2/ | demo_service.py --explain \
        --hop '127.0.0.2:80=front-envoy 127.0.0.2:80 -> service_a_envoy 127.0.0.3:8786'

Standard library only, so the demo needs nothing beyond python3.
"""

import argparse
import json
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Headers a proxy adds or rewrites; together with Host they are the trace of the hops.
SHOWN_HEADERS = ("host", "x-forwarded-for", "x-forwarded-proto", "x-request-id", "user-agent")
# An application in an Envoy mesh must copy these from its inbound request to its outbound
# calls, or the proxies cannot tie the calls to the request (Envoy's tracing docs ask the same).
PROPAGATED_HEADERS = (
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
)
# Response headers of a call that show what answered it.
SHOWN_RESPONSE_HEADERS = ("server", "x-envoy-upstream-service-time")
CALL_TIMEOUT_S = 5


def shown(headers, names):
    return {
        name: value
        for name, value in ((n.lower(), v) for n, v in headers.items())
        if name in names or name.startswith("x-envoy-")
    }


def call(url, inbound_headers):
    outbound = {
        name: value for name, value in inbound_headers.items() if name.lower() in PROPAGATED_HEADERS
    }
    request = urllib.request.Request(url, headers=outbound)
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        # The proxy answered, with an error status: its body says why (e.g. no healthy upstream).
        status, headers, body = e.code, e.headers, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return {"url": url, "error": f"{type(reason).__name__}: {reason}"}
    result = {"url": url, "status": status, "headers": shown(headers, SHOWN_RESPONSE_HEADERS)}
    text = body.decode("utf-8", "replace")
    try:
        result["answer"] = json.loads(text)
    except ValueError:
        result["body"] = text[:500]
    return result


def make_handler(name, listen, calls):
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as the sidecar expects of an upstream; every answer carries Content-Length.
        protocol_version = "HTTP/1.1"

        def version_string(self):
            return name

        def answer(self):
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            nested = [call(url, self.headers) for url in calls]
            ok = all(200 <= c.get("status", 0) < 300 for c in nested)
            reply = {
                "service": name,
                "listen": listen,
                "method": self.command,
                "path": self.path,
                "peer": "%s:%d" % self.client_address[:2],
                "headers": shown(self.headers, SHOWN_HEADERS),
            }
            if calls:
                reply["calls"] = nested
            body = (json.dumps(reply, indent=2) + "\n").encode()
            self.send_response(200 if ok else 502)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer

        def log_message(self, format, *args):
            sys.stderr.write("[%s] %s %s\n" % (name, self.address_string(), format % args))

    return Handler


def serve(args):
    host, _, port = args.listen.rpartition(":")
    try:
        server = ThreadingHTTPServer(
            (host, int(port)), make_handler(args.name, args.listen, args.call)
        )
    except (OSError, ValueError) as e:
        sys.exit(f"[{args.name}] cannot listen on {args.listen}: {e}")
    server.daemon_threads = True
    # demo.sh stops us with SIGTERM, a terminal's Ctrl-C with SIGINT: both are a normal exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write(f"[{args.name}] listening on {args.listen} (pid {os.getpid()})\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def host_key(host):
    """Host as curl sends it omits the default port; the --hop keys always carry one."""
    return host if ":" in host.rsplit("]", 1)[-1] else host + ":80"


def explain(args):
    hops = dict(h.split("=", 1) for h in args.hop)
    text = sys.stdin.read()
    try:
        answer = json.loads(text)
    except ValueError:
        print("    (not a demo_service answer: %s)" % " ".join(text.split())[:200])
        return
    explain_answer(answer, "client", hops, "    ")


def explain_answer(answer, caller, hops, indent):
    headers = dict(answer.get("headers", {}))
    host = headers.pop("host", "?")
    via = hops.get(host_key(host), f"? (Host: {host})")
    print(f"{indent}{caller} -> {via} -> {answer['service']} {answer['listen']}")
    seen = " ".join(f"{k}={v}" for k, v in headers.items() if k != "user-agent")
    print(f"{indent}    received: {seen or '(no proxy headers)'}")
    for c in answer.get("calls", []):
        called = urllib.parse.urlsplit(c["url"])
        via = hops.get(host_key(called.netloc), c["url"])
        if "error" in c:
            print(f"{indent}  {answer['service']} -> {via}: FAILED {c['error']}")
        elif "answer" in c:
            explain_answer(c["answer"], answer["service"], hops, indent + "  ")
            got = " ".join(f"{k}={v}" for k, v in c["headers"].items())
            print(f"{indent}      answered {c['status']} {got}")
        else:
            body = " ".join(c.get("body", "").split())[:200]
            print(f"{indent}  {answer['service']} -> {via}: answered {c['status']} {body}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="the service's name, e.g. service_a")
    parser.add_argument("--listen", help="HOST:PORT to serve on, e.g. 127.0.0.1:8081")
    parser.add_argument(
        "--call", action="append", default=[], metavar="URL", help="call URL for every request"
    )
    parser.add_argument(
        "--explain", action="store_true", help="print the path of an answer read on stdin"
    )
    parser.add_argument(
        "--hop",
        action="append",
        default=[],
        metavar="HOST:PORT=TEXT",
        help="with --explain: the proxies behind a Host",
    )
    args = parser.parse_args()
    if args.explain:
        explain(args)
    elif args.name and args.listen:
        serve(args)
    else:
        parser.error("--name and --listen are required (or --explain)")


if __name__ == "__main__":
    main()
