#!/usr/bin/env python3
"""Opens N idle HTTP/1.1 keep-alive client connections to a proxy and holds them; bench/idle.sh
drives it.

    idle_clients.py --ports P[,P...] --count N --mode request|silent [--per-proc 19000]

Modes:
  request  each connection sends one `GET / HTTP/1.1` and reads the whole response, then idles
           (an idle keep-alive connection between requests).
  silent   each connection is only opened and sends nothing (idle before its first request).

N is spread evenly over the ports (one per proxy instance) and held by child processes of at most
--per-proc connections each: a process cannot hold more sockets than its open-files limit.

One listener port gives one source address about 28 000 ephemeral ports, so connection i (counted
over all children) binds to source address number 2 + i // per_source in 127.0.0.0/16
(127.0.0.2, 127.0.0.3, ...), with IP_BIND_ADDRESS_NO_PORT so the port is picked at connect() time
per 4-tuple. All of 127/8 is local on Linux.

Protocol on stdout / stdin, one line each:
  -> READY opened=<n> failed=<n> bad_status=<n> secs=<s>     once all N are opened (and answered)
  <- check K        -> CHECK open=<n> of=<n> usable=<k> of_sample=<K> secs=<s>
                       open: connections the proxy has not closed (non-blocking MSG_PEEK sees no EOF
                       or reset); usable: of K connections spread evenly over the open ones, how
                       many answered one more request with a 200.
  <- close (or EOF) -> CLOSED; every socket is closed with SO_LINGER 0 (a reset), so neither end
                       is left with tens of thousands of TIME_WAIT sockets.
"""

import argparse
import errno
import resource
import selectors
import socket
import struct
import subprocess
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


PENDING = object()


def recv_status(s, buf):
    """One read toward a response on a readable socket: PENDING until the whole response is in
    buf, None when the peer closed or failed, else its status."""
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return PENDING
    except OSError:
        return None
    if not data:
        return None
    buf += data
    status = response_status(buf)
    return PENDING if status is None else status


def response_status(buf):
    """The status of the complete response in buf, or None while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1").lower()
    lines = head.split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip() == "content-length":
            length = int(value.strip())
        elif name.strip() == "transfer-encoding" and "chunked" in value:
            chunked = True
    body = len(buf) - (end + 4)
    if length is not None:
        return status if body >= length else None
    if chunked:
        return status if buf.endswith(b"0\r\n\r\n") else None
    return status


def exchange(socks, deadline):
    """Sends one request on each socket and reads its response; returns how many got a 200."""
    sel = selectors.DefaultSelector()
    bufs = {}
    ok = 0
    for s in socks:
        try:
            s.send(REQUEST)
        except OSError:
            continue
        bufs[s.fileno()] = bytearray()
        sel.register(s, selectors.EVENT_READ)
    while bufs and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            status = recv_status(s, bufs[s.fileno()])
            if status is PENDING:
                continue
            ok += status == 200
            sel.unregister(s)
            del bufs[s.fileno()]
    sel.close()
    return ok


def open_all(args):
    """Opens args.count connections, at most args.window in progress at a time."""
    sel = selectors.DefaultSelector()
    held = []
    failed = bad_status = 0
    state = {}  # fileno -> (socket, bytearray or None while connecting)
    started = 0
    deadline = time.monotonic() + args.timeout
    t0 = time.monotonic()
    while (started < args.count or state) and time.monotonic() < deadline:
        while started < args.count and len(state) < args.window:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            k = 2 + (args.offset + started) // args.per_source
            s.bind((f"127.0.{k // 256}.{k % 256}", 0))
            s.setblocking(False)
            err = s.connect_ex((args.host, args.port))
            started += 1
            if err not in (0, errno.EINPROGRESS):
                failed += 1
                s.close()
                continue
            state[s.fileno()] = (s, None)
            sel.register(s, selectors.EVENT_WRITE)
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            _, buf = state[s.fileno()]
            if buf is None:  # connect() finished
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    failed += 1
                    sel.unregister(s)
                    del state[s.fileno()]
                    s.close()
                    continue
                if args.mode == "silent":
                    sel.unregister(s)
                    del state[s.fileno()]
                    held.append(s)
                    continue
                s.send(REQUEST)  # 28 bytes into an empty socket buffer: always whole
                state[s.fileno()] = (s, bytearray())
                sel.modify(s, selectors.EVENT_READ)
                continue
            status = recv_status(s, buf)
            if status is PENDING:
                continue
            sel.unregister(s)
            del state[s.fileno()]
            if status is None:
                failed += 1
                s.close()
            elif status != 200:
                bad_status += 1
                s.close()
            else:
                held.append(s)
    # Whatever is still in progress at the deadline failed.
    for s, _ in state.values():
        failed += 1
        s.close()
    failed += args.count - started
    sel.close()
    return held, failed, bad_status, time.monotonic() - t0


def still_open(s):
    try:
        return s.recv(1, socket.MSG_PEEK) != b""  # data nobody asked for: open, but odd
    except BlockingIOError:
        return True
    except OSError:
        return False


def child(args):
    """Opens and holds args.count connections to args.port; the protocol above on stdin/stdout."""
    held, failed, bad_status, secs = open_all(args)
    print(f"READY opened={len(held)} failed={failed} bad_status={bad_status} secs={secs:.1f}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "check":
            t0 = time.monotonic()
            alive = [s for s in held if still_open(s)]
            k = min(int(cmd[1]), len(alive))
            sample = [alive[i * len(alive) // k] for i in range(k)] if k else []
            usable = exchange(sample, time.monotonic() + 10)
            print(f"CHECK open={len(alive)} of={len(held)} usable={usable} of_sample={k} "
                  f"secs={time.monotonic() - t0:.1f}", flush=True)
        elif cmd and cmd[0] == "close":
            break
    linger = struct.pack("ii", 1, 0)
    for s in held:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.close()
    print("CLOSED", flush=True)


def fields(line):
    """{key: value} of a reply's key=value words."""
    return {k: float(v) for k, _, v in (w.partition("=") for w in line.split()[1:])}


def parent(args):
    """Splits the connections over children and sums their replies."""
    ports = [int(p) for p in args.ports.split(",")]
    chunks = []  # (port, count, offset)
    offset = 0
    for i, port in enumerate(ports):
        share = args.count // len(ports) + (i < args.count % len(ports))
        while share > 0:
            c = min(share, args.per_proc)
            chunks.append((port, c, offset))
            offset += c
            share -= c
    if 2 + (args.count - 1) // args.per_source >= 256 * 256:
        sys.exit("more connections than source addresses x --per-source")
    kids = [subprocess.Popen([sys.executable, __file__, "--child", "--port", str(port), "--count", str(c),
                              "--offset", str(off), "--mode", args.mode, "--host", args.host,
                              "--per-source", str(args.per_source), "--window", str(args.window),
                              "--timeout", str(args.timeout)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for port, c, off in chunks]

    def ask(cmd_for, expect):
        total = {}
        for i, k in enumerate(kids):
            if cmd_for is not None:
                try:
                    k.stdin.write(cmd_for(i) + "\n")
                    k.stdin.flush()
                except OSError:
                    pass
            line = k.stdout.readline()
            if not line.startswith(expect):
                line = expect  # a child that died counts as nothing opened, open or usable
            for key, v in fields(line).items():
                total[key] = max(total.get(key, 0), v) if key == "secs" else total.get(key, 0) + v
        return total

    r = ask(None, "READY")
    opened = int(r.get("opened", 0))
    print(f"READY opened={opened} failed={args.count - opened - int(r.get('bad_status', 0))} "
          f"bad_status={int(r.get('bad_status', 0))} secs={r.get('secs', 0):.1f} procs={len(kids)}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "check":
            want = int(cmd[1])
            share = [want // len(kids) + (i < want % len(kids)) for i in range(len(kids))]
            r = ask(lambda i: f"check {share[i]}", "CHECK")
            print(f"CHECK open={int(r.get('open', 0))} of={int(r.get('of', 0))} usable={int(r.get('usable', 0))} "
                  f"of_sample={int(r.get('of_sample', 0))} secs={r.get('secs', 0):.1f}", flush=True)
        elif cmd and cmd[0] == "close":
            break
    ask(lambda i: "close", "CLOSED")
    for k in kids:
        k.wait()
    print("CLOSED", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ports", help="listener ports, comma-separated; the count is spread over them")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--mode", choices=("request", "silent"), default="request")
    p.add_argument("--per-proc", type=int, default=19000, help="connections per child process")
    p.add_argument("--per-source", type=int, default=10000, help="connections per source address")
    p.add_argument("--window", type=int, default=256, help="connections in progress at a time, per child")
    p.add_argument("--timeout", type=float, default=120, help="seconds for opening all of them")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.child:
        child(args)
    elif args.ports:
        parent(args)
    else:
        p.error("--ports is required")


if __name__ == "__main__":
    main()
