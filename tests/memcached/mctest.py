#!/usr/bin/env python3
"""Tests of memcached patched with zcopy (examples/memcached), run against a
server already listening on 127.0.0.1.

  mctest.py smoke      --port P --udp-port U
  mctest.py concurrent --port P --udp-port U [--seconds S]

smoke: set/get/delete/incr/decr/append/prepend over TCP and UDP with values
from 1 B to 1 MiB, every reply checked byte for byte; with --expect-zcopy,
`stats zcopy` must show a value of zcopy_min bytes or more (at least 64 KiB)
in the pool and a smaller one not, and the pool value freed on delete.
concurrent: writers overwrite keys and deleters delete them while readers
GET them over TCP and UDP; every value read must be one that was set for
that key (zero wrong values). Bounded in operations and time.

Each prints one line per failure and ends with 'N passed, N failed' (in the
concurrent test one check per client thread plus three summary checks; every
wrong value read is one failure); the exit status is 0 only if nothing
failed.
"""
import argparse
import hashlib
import os
import random
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"
SIZES = [1, 2, 7, 64, 255, 256, 511, 512, 1000, 1023, 1024, 1399, 1400, 1401,
         4095, 4096, 8192, 16384, 32768, 65536, 100000, 262144, 524288,
         1048575, 1048576]
UDP_SET_MAX = 60000  # one request datagram; memcached reads up to 64 KiB


def value_for(key, version, size):
    """Deterministic bytes for (key, version), binary, with CR LF inside."""
    out = bytearray()
    counter = 0
    seed = ("%s/%d" % (key, version)).encode()
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    v = bytes(out[:size])
    if size >= 8:  # make sure values are binary-safe: embed CR LF and NUL
        v = v[:3] + b"\r\n\x00" + v[6:]
    return v


class Failure(Exception):
    pass


class Tcp:
    def __init__(self, port, timeout=10.0):
        self.s = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            raise Failure("connection closed by server")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def cmd(self, line, data=None):
        self.send(line + b"\r\n" + (data + b"\r\n" if data is not None else b""))
        return self.line()

    def get(self, key):
        """Returns (flags, value) or None for a miss."""
        self.send(b"get " + key + b"\r\n")
        return self._value(key)

    def _value(self, key):
        line = self.line()
        if line == b"END":
            return None
        parts = line.split()
        if len(parts) < 4 or parts[0] != b"VALUE" or parts[1] != key:
            raise Failure("bad VALUE line %r for %r" % (line[:80], key))
        n = int(parts[3])
        data = self.exact(n + 2)
        if data[-2:] != b"\r\n":
            raise Failure("value of %r not followed by CR LF" % key)
        if self.line() != b"END":
            raise Failure("no END after the value of %r" % key)
        return int(parts[2]), data[:-2]


class Udp:
    """memcached's UDP framing: 8-byte header (request id, sequence number,
    datagram count, reserved) on every request and reply datagram."""

    def __init__(self, port, timeout=2.0):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if opt is None:
                continue
            try:
                self.s.setsockopt(socket.SOL_SOCKET, opt, 16 << 20)
                break
            except OSError:
                continue
        self.s.settimeout(timeout)
        self.s.connect((HOST, port))
        self.rid = random.randrange(1 << 16)

    def close(self):
        self.s.close()

    def request(self, payload):
        """Send one request; return the reassembled reply, or None if a
        datagram was lost (UDP may drop; a drop is not a wrong value)."""
        self.rid = (self.rid + 1) & 0xFFFF
        self.s.send(struct.pack("!HHHH", self.rid, 0, 1, 0) + payload)
        parts = {}
        total = None
        while total is None or len(parts) < total:
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                return None
            rid, seq, count, _ = struct.unpack("!HHHH", d[:8])
            if rid != self.rid:
                continue  # a late reply to an earlier request
            total = count
            parts[seq] = d[8:]
        return b"".join(parts[i] for i in range(total))


def parse_get_reply(reply, key):
    if reply == b"END\r\n":
        return None
    head, sep, rest = reply.partition(b"\r\n")
    parts = head.split()
    if not sep or len(parts) < 4 or parts[0] != b"VALUE" or parts[1] != key:
        raise Failure("bad UDP VALUE reply %r for %r" % (head[:80], key))
    n = int(parts[3])
    if len(rest) != n + 7 or rest[n:] != b"\r\nEND\r\n":
        raise Failure("bad UDP reply framing for %r (len %d, want %d)" % (key, len(rest), n + 7))
    return int(parts[2]), rest[:n]


class Counter:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.lock = threading.Lock()

    def check(self, ok, what):
        with self.lock:
            if ok:
                self.passed += 1
            else:
                self.failed += 1
                print("FAIL: %s" % what, flush=True)
        return ok


def smoke(args):
    c = Counter()
    t = Tcp(args.port)
    u = Udp(args.udp_port)

    def tcp_step(name, fn):
        try:
            fn()
        except (Failure, OSError, ValueError) as e:
            c.check(False, "%s: %s" % (name, e))

    for size in SIZES:
        key = ("smoke:%d" % size).encode()
        v = value_for(key, 1, size)

        def roundtrip():
            c.check(t.cmd(b"set %s 7 0 %d" % (key, size), v) == b"STORED", "tcp set %d" % size)
            got = t.get(key)
            c.check(got == (7, v), "tcp get %d B byte for byte" % size)
            r = u.request(b"get " + key + b"\r\n")
            c.check(r is not None and parse_get_reply(r, key) == (7, v),
                    "udp get %d B byte for byte%s" % (size, " (reply lost)" if r is None else ""))
            # append / prepend on a pool value
            c.check(t.cmd(b"append %s 0 0 4" % key, b"TAIL") == b"STORED", "append %d" % size)
            c.check(t.cmd(b"prepend %s 0 0 4" % key, b"HEAD") == b"STORED", "prepend %d" % size)
            got = t.get(key)
            c.check(got == (7, b"HEAD" + v + b"TAIL"), "get after append/prepend %d B" % size)
            # overwrite with a different value of the same size
            v2 = value_for(key, 2, size)
            c.check(t.cmd(b"set %s 9 0 %d" % (key, size), v2) == b"STORED", "tcp overwrite %d" % size)
            got = t.get(key)
            c.check(got == (9, v2), "tcp get after overwrite %d B" % size)
            c.check(t.cmd(b"delete " + key) == b"DELETED", "tcp delete %d" % size)
            c.check(t.get(key) is None, "tcp miss after delete %d" % size)
            r = u.request(b"get " + key + b"\r\n")
            c.check(r == b"END\r\n", "udp miss after delete %d" % size)
        tcp_step("tcp/udp %d B" % size, roundtrip)

        if size <= UDP_SET_MAX:
            def udp_ops():
                r = u.request(b"set %s 3 0 %d\r\n" % (key, size) + v + b"\r\n")
                c.check(r == b"STORED\r\n", "udp set %d: %r" % (size, r))
                r = u.request(b"get " + key + b"\r\n")
                c.check(r is not None and parse_get_reply(r, key) == (3, v), "udp get of udp set %d B" % size)
                c.check(t.get(key) == (3, v), "tcp get of udp set %d B" % size)
                r = u.request(b"append %s 0 0 2\r\nZZ\r\n" % key)
                c.check(r == b"STORED\r\n", "udp append %d" % size)
                r = u.request(b"get " + key + b"\r\n")
                c.check(r is not None and parse_get_reply(r, key) == (3, v + b"ZZ"), "udp get after append %d B" % size)
                r = u.request(b"delete " + key + b"\r\n")
                c.check(r == b"DELETED\r\n", "udp delete %d" % size)
                c.check(t.get(key) is None, "tcp miss after udp delete %d" % size)
            tcp_step("udp ops %d B" % size, udp_ops)

    def counters():
        k = b"smoke:num"
        c.check(t.cmd(b"set %s 0 0 2" % k, b"41") == b"STORED", "set number")
        c.check(t.cmd(b"incr %s 1" % k) == b"42", "incr 41+1")
        c.check(t.get(k) == (0, b"42"), "get after incr")
        c.check(t.cmd(b"incr %s 958" % k) == b"1000", "incr grows the value")
        c.check(t.get(k) == (0, b"1000"), "get after incr grew it")
        c.check(t.cmd(b"decr %s 1" % k) == b"999", "decr 1000-1")
        got = t.get(k)
        c.check(got is not None and got[1].rstrip(b" ") == b"999", "get after decr: %r" % (got,))
        c.check(t.cmd(b"decr %s 5000" % k) == b"0", "decr floors at 0")
        # Neighbours in the pool around it, full of '-': memcached's number
        # check (strchr for '-' past 2**63) must stop at the value's end.
        minus = [b"smoke:num-%d" % i for i in range(32)]
        for n in minus[:16]:
            c.check(t.cmd(b"set %s 0 0 20" % n, b"-" * 20) == b"STORED", "set '-' neighbour")
        c.check(t.cmd(b"set %s 0 0 20" % k, b"18446744073709551615") == b"STORED", "set 2**64-1")
        for n in minus[16:]:
            c.check(t.cmd(b"set %s 0 0 20" % n, b"-" * 20) == b"STORED", "set '-' neighbour")
        c.check(t.cmd(b"incr %s 1" % k) == b"0", "incr wraps at 2**64")
        r = u.request(b"incr %s 5\r\n" % k)
        c.check(r == b"5\r\n", "udp incr: %r" % r)
        r = u.request(b"decr %s 2\r\n" % k)
        c.check(r == b"3\r\n", "udp decr: %r" % r)
        got = t.get(k)
        c.check(got is not None and got[1].rstrip(b" ") == b"3", "get after udp incr/decr: %r" % (got,))
        c.check(t.cmd(b"set %s 0 0 3" % k, b"abc") == b"STORED", "set non-number")
        c.check(t.cmd(b"incr %s 1" % k).startswith(b"CLIENT_ERROR"), "incr on non-number refused")
        c.check(t.cmd(b"delete " + k) == b"DELETED", "delete number")
        for n in minus:
            c.check(t.cmd(b"delete " + n) == b"DELETED", "delete '-' neighbour")
        c.check(t.cmd(b"incr %s 1" % k) == b"NOT_FOUND", "incr on missing key")
    tcp_step("incr/decr", counters)

    def too_large():
        big = 4 << 20
        r = t.cmd(b"set smoke:big 0 0 %d" % big, b"x" * big)
        c.check(r.startswith(b"SERVER_ERROR"), "value over -I refused: %r" % r)
    tcp_step("too large", too_large)

    def zcopy_stats():
        t.send(b"stats zcopy\r\n")
        stats = {}
        while True:
            line = t.line()
            if line == b"END":
                break
            p = line.split()
            if len(p) == 3 and p[0] == b"STAT":
                stats[p[1].decode()] = p[2].decode()
        return stats

    def pool_in_use():
        if not args.expect_zcopy:
            return
        stats = zcopy_stats()
        c.check(int(stats.get("zcopy_sends", "0")) > 0, "stats zcopy shows pool sends: %r" % stats)
        if args.backend:
            c.check(stats.get("zcopy_backend") == args.backend,
                    "backend is %s: %r" % (args.backend, stats.get("zcopy_backend")))
        # Values of zcopy_min bytes and more live in the pool, smaller ones
        # in their slab chunks; deleting frees the pool value.
        zmin = int(stats.get("zcopy_min", "0"))
        items = int(stats.get("zcopy_items", "-1"))
        big = max(zmin, 65536)
        kb, vb = b"smoke:pool", value_for(b"smoke:pool", 1, big)
        c.check(t.cmd(b"set %s 0 0 %d" % (kb, big), vb) == b"STORED", "set %d B" % big)
        st = zcopy_stats()
        c.check(int(st.get("zcopy_items", "-1")) == items + 1 and int(st.get("zcopy_bytes", "0")) >= big,
                "a %d B value is in the pool: %r" % (big, st))
        c.check(t.get(kb) == (0, vb), "get %d B from the pool byte for byte" % big)
        if zmin > 1:
            small = zmin - 1
            ks, vs = b"smoke:slab", value_for(b"smoke:slab", 1, small)
            c.check(t.cmd(b"set %s 0 0 %d" % (ks, small), vs) == b"STORED", "set %d B" % small)
            c.check(int(zcopy_stats().get("zcopy_items", "-1")) == items + 1,
                    "a %d B value (below zcopy_min) is not in the pool" % small)
            c.check(t.get(ks) == (0, vs), "get %d B from the slabs byte for byte" % small)
            c.check(t.cmd(b"delete " + ks) == b"DELETED", "delete %d B" % small)
        c.check(t.cmd(b"delete " + kb) == b"DELETED", "delete %d B" % big)
        c.check(int(zcopy_stats().get("zcopy_items", "-1")) == items,
                "delete freed the pool value")
    tcp_step("stats zcopy", pool_in_use)

    t.close()
    u.close()
    print("%d passed, %d failed" % (c.passed, c.failed))
    return c.failed == 0


def concurrent(args):
    c = Counter()
    rnd = random.Random(5)
    keys = [("conc:%d" % i).encode() for i in range(args.keys)]
    versions = 6
    sizes = [1, 3, 100, 256, 512, 1400, 4096, 16384, 65536, 262144]
    # Every value that may ever be set: (key, version) -> bytes, sizes varying.
    table = {}
    for ki, k in enumerate(keys):
        for ver in range(versions):
            size = sizes[(ki + ver * 3) % len(sizes)]
            table[(k, ver)] = value_for(k, ver, size)
    allowed = {k: {table[(k, ver)] for ver in range(versions)} for k in keys}
    deadline = time.monotonic() + args.seconds
    stop = threading.Event()
    stats = {"gets": 0, "hits": 0, "misses": 0, "udp_lost": 0, "sets": 0, "deletes": 0}
    slock = threading.Lock()

    def bump(name, n=1):
        with slock:
            stats[name] += n

    def loop(label, connect, step):
        """A client: step(rng, conn, key) for up to --ops random keys, until
        a failure stops every client or the time is up."""
        def run(seed):
            r = random.Random(seed)
            conn = connect()
            try:
                for _ in range(args.ops):
                    if stop.is_set() or time.monotonic() > deadline:
                        break
                    step(r, conn, r.choice(keys))
            except (Failure, OSError) as e:
                c.check(False, "%s: %s" % (label, e))
                stop.set()
            finally:
                conn.close()
        return run

    def write_one(r, t, k):
        ver = r.randrange(versions)
        v = table[(k, ver)]
        res = t.cmd(b"set %s %d 0 %d" % (k, ver, len(v)), v)
        if res != b"STORED":
            c.check(False, "concurrent set: %r" % res)
            stop.set()
        bump("sets")

    def delete_one(r, t, k):
        res = t.cmd(b"delete " + k)
        if res not in (b"DELETED", b"NOT_FOUND"):
            c.check(False, "concurrent delete: %r" % res)
            stop.set()
        bump("deletes")
        time.sleep(0.001)

    wrong = []

    def verify(k, got, how):
        bump("gets")
        if got is None:
            bump("misses")
            return
        bump("hits")
        flags, v = got
        # the flags name the version that was set: the bytes must be exactly
        # that version's value for this key
        if not (v in allowed[k] and table.get((k, flags)) == v):
            wrong.append((k, how, len(v)))
            c.check(False, "WRONG value for %r over %s: %d bytes, flags %d" % (k, how, len(v), flags))

    def read_one(r, t, k):
        verify(k, t.get(k), "tcp")

    def udp_read_one(r, u, k):
        reply = u.request(b"get " + k + b"\r\n")
        if reply is None:
            bump("udp_lost")
            return
        verify(k, parse_get_reply(reply, k), "udp")

    def tcp():
        return Tcp(args.port)

    def udp():
        return Udp(args.udp_port, timeout=0.5)

    writer = loop("writer", tcp, write_one)
    deleter = loop("deleter", tcp, delete_one)
    reader = loop("tcp reader", tcp, read_one)
    udp_reader = loop("udp reader", udp, udp_read_one)

    def client(name, fn, seed):
        before = c.failed
        fn(seed)
        c.check(c.failed == before, "%s finished without errors" % name)

    threads = []
    for name, fn, n in (("writer", writer, args.writers), ("deleter", deleter, 2),
                        ("tcp reader", reader, args.readers), ("udp reader", udp_reader, 2)):
        for i in range(n):
            threads.append(threading.Thread(target=client, args=("%s %d" % (name, i), fn, rnd.random())))
    for th in threads:
        th.start()
    for th in threads:
        th.join(args.seconds + 60)
        if th.is_alive():
            c.check(False, "a client thread did not finish in time")
            stop.set()
    c.check(stats["hits"] > 0, "some GETs hit: %r" % stats)
    c.check(stats["sets"] > 0 and stats["deletes"] > 0, "sets and deletes ran: %r" % stats)
    c.check(not wrong, "zero wrong values (%d wrong)" % len(wrong))
    print("concurrent: %(gets)d gets (%(hits)d hits, %(misses)d misses, %(udp_lost)d UDP replies lost), "
          "%(sets)d sets, %(deletes)d deletes" % stats)
    print("%d passed, %d failed" % (c.passed, c.failed))
    return c.failed == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["smoke", "concurrent"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--udp-port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--ops", type=int, default=20000, help="operations per client thread, at most")
    ap.add_argument("--keys", type=int, default=24)
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--expect-zcopy", action="store_true",
                    help="check `stats zcopy`: pool sends, and large values in the pool")
    ap.add_argument("--backend", default=None, help="with --expect-zcopy: the backend the pool must use")
    args = ap.parse_args()
    ok = smoke(args) if args.mode == "smoke" else concurrent(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
