#!/usr/bin/env python3
"""A gRPC echo service and a client for it, with grpcio's generic handlers (messages are raw
bytes, so no .proto and no generated code). Used by tests/support/grpc.rs.

  grpc_echo.py serve          binds 127.0.0.1:0, prints "PORT <n>" and serves until killed
  grpc_echo.py call HOST:PORT runs every call below through HOST:PORT (plaintext HTTP/2), prints
                              one JSON object per call on its own line

Service `test.Echo`:
  Unary(bytes) -> the same bytes, with initial metadata `x-echo-initial: unary` and trailing
      metadata `x-echo-trailer: unary`
  ServerStream(b"<n>:<text>") -> n messages `<text>-<i>`
  Bidi(stream) -> each message back, upper-cased, as it arrives (called twice: all messages at
      once, and a ping-pong that sends each message after the echo of the one before)
  Fail(bytes) -> aborts with FAILED_PRECONDITION, details "failed on purpose", trailing
      metadata `x-fail-reason: <the request bytes>`
"""

import json
import queue
import sys
from concurrent import futures

import grpc

SERVICE = "test.Echo"


def ident(b):
    return b


def unary(request, context):
    context.send_initial_metadata((("x-echo-initial", "unary"),))
    context.set_trailing_metadata((("x-echo-trailer", "unary"),))
    return request


def server_stream(request, context):
    count, _, text = request.partition(b":")
    for i in range(int(count)):
        yield text + b"-" + str(i).encode()


def bidi(requests, context):
    for message in requests:
        yield message.upper()


def fail(request, context):
    context.set_trailing_metadata((("x-fail-reason", request.decode("utf-8", "replace")),))
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "failed on purpose")


def serve():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


def outcome(name, call_result, messages, error=None):
    """One call's record: messages (text), status code name, details, trailing metadata."""
    out = {"call": name, "messages": [m.decode("utf-8", "replace") for m in messages]}
    source = error if error is not None else call_result
    out["code"] = source.code().name
    out["details"] = source.details() or ""
    out["trailing"] = sorted(
        [k, v if isinstance(v, str) else v.decode("utf-8", "replace")]
        for k, v in (source.trailing_metadata() or ())
        # grpcio's own bookkeeping, not the service's.
        if not k.startswith("grpc-")
    )
    if error is None and hasattr(call_result, "initial_metadata"):
        out["initial"] = sorted(
            [k, v] for k, v in (call_result.initial_metadata() or ()) if k.startswith("x-")
        )
    print(json.dumps(out), flush=True)


def call(target):
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=10)
    method = lambda kind, name: getattr(channel, kind)(f"/{SERVICE}/{name}", ident, ident)

    def run(name, fn):
        try:
            fn()
        except grpc.RpcError as e:
            outcome(name, None, [], e)

    def do_unary():
        response, c = method("unary_unary", "Unary").with_call(b"hello", timeout=10)
        outcome("unary", c, [response])

    def do_server_stream():
        it = method("unary_stream", "ServerStream")(b"3:tick", timeout=10)
        messages = list(it)
        outcome("server_stream", it, messages)

    def do_bidi():
        it = method("stream_stream", "Bidi")(iter([b"a", b"bb", b"ccc"]), timeout=10)
        messages = list(it)
        outcome("bidi", it, messages)

    def do_pingpong():
        # Interactive: each message is sent only once the echo of the one before has come back,
        # so the call needs both directions moving at once through the proxy (full duplex).
        pending = queue.Queue()
        pending.put(b"one")

        def requests():
            while (m := pending.get()) is not None:
                yield m

        it = method("stream_stream", "Bidi")(requests(), timeout=10)
        messages = []
        try:
            for m in it:
                messages.append(m)
                pending.put([b"two", b"three", None][len(messages) - 1])
        finally:
            pending.put(None)
        outcome("pingpong", it, messages)

    def do_fail():
        method("unary_unary", "Fail").with_call(b"precondition", timeout=10)

    def do_unknown():
        method("unary_unary", "Missing").with_call(b"x", timeout=10)

    run("unary", do_unary)
    run("server_stream", do_server_stream)
    run("bidi", do_bidi)
    run("pingpong", do_pingpong)
    run("fail", do_fail)
    run("unknown_method", do_unknown)
    channel.close()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve()
    elif len(sys.argv) >= 3 and sys.argv[1] == "call":
        call(sys.argv[2])
    else:
        sys.exit(__doc__)
