#!/usr/bin/env python3
"""A small client of the Kelp broker's HTTP API for the compose tests (stdlib only).

Every acknowledged publish is appended to an "acked" file (JSON lines: topic, partition,
offset, value), so that `verify` can later check that nothing acknowledged was lost.

  broker_client.py [AUTH] create  BROKERS NS TOPIC PARTITIONS
  broker_client.py [AUTH] publish BROKERS NS TOPIC --acked F --count N --prefix P [--partitions K]
  broker_client.py [AUTH] loop    BROKERS NS TOPIC --acked F --stats F --stop F --prefix P [--partitions K]
  broker_client.py [AUTH] verify  BROKERS NS TOPIC --acked F [--expect-durable N]
  broker_client.py [AUTH] owners  BROKERS NS TOPIC PARTITIONS [--wait S] [--all-on B] [--min-owners K]
  broker_client.py acks-between NS TOPIC --acked F START END
  broker_client.py stats   F

BROKERS is one broker's host:port, or several brokers sharing partitions, comma-separated.
Each entry is `host:port`, or `advertised:port=host:port` when the address a broker
advertises (its KELP_ADVERTISE, which the others' 307s name) is not the one this client
reaches it by (e.g. broker1:17777=127.0.0.1:17777 from the host of a compose stack). Requests
go to the first broker that accepts a connection (the last one that did, once one has); a
307/308 is followed, method and body kept, to a listed broker only, at most 3 times.

AUTH, for a secured broker (deploy/compose.yaml's default):
  --ca FILE            speak https, trusting only the CA in FILE (env KELP_TLS_CA); else http
  --api-key-file FILE  send `Authorization: Bearer <key>` with the key in FILE
                       (env KELP_API_KEY_FILE); publishing and creating need a write key
"""

import argparse
import http.client
import itertools
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

TIMEOUT_S = 45.0  # above the broker's --durable-timeout-ms (30 s)
CONNECT_TIMEOUT_S = 3.0  # a cut-off broker's port may swallow SYNs: try the next one soon
MAX_REDIRECTS = 3


def value_for(prefix, i):
    # Non-ASCII, quotes, backslashes and control characters: read-back must be byte-identical.
    return f"{prefix}-{i:05d} \u2603 \"q\" \\ \t caf\u00e9 \U0001F30A end"


# How requests reach the brokers, set by configure() from the AUTH options and BROKERS.
SCHEME = "http"
TLS_CONTEXT = None
AUTH_HEADERS = {}
BROKERS = []  # [(advertised host:port, reached host:port)]
PREFERRED = 0  # index in BROKERS of the broker that last accepted a connection
ROUTE = {}  # partition -> index in BROKERS of the broker that last answered for it


class Unreachable(OSError):
    """No connection could be made (nothing was sent)."""


def configure(a):
    """https trusting only `--ca` (hostname checked: the certificate is valid for 127.0.0.1),
    and the API key of `--api-key-file` on every request."""
    global SCHEME, TLS_CONTEXT
    if a.ca:
        SCHEME = "https"
        TLS_CONTEXT = ssl.create_default_context(cafile=a.ca)
    if a.api_key_file:
        with open(a.api_key_file) as f:
            key = f.read().strip()
        if not key:
            sys.exit(f"{a.api_key_file} holds no API key")
        AUTH_HEADERS["Authorization"] = f"Bearer {key}"
    if getattr(a, "url", None):
        set_brokers(a.url)


def set_brokers(spec):
    BROKERS.clear()
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        adv, _, reach = entry.partition("=")
        BROKERS.append((adv, reach or adv))
    if not BROKERS:
        sys.exit(f"no broker in '{spec}'")


def broker_of(netloc):
    """The index of the listed broker advertised as, or reached at, `netloc`; None if none."""
    for i, (adv, reach) in enumerate(BROKERS):
        if netloc in (adv, reach):
            return i
    return None


def connect(reach):
    host, port = reach.rsplit(":", 1)
    if SCHEME == "https":
        c = http.client.HTTPSConnection(host, int(port), timeout=CONNECT_TIMEOUT_S,
                                        context=TLS_CONTEXT)
    else:
        c = http.client.HTTPConnection(host, int(port), timeout=CONNECT_TIMEOUT_S)
    try:
        c.connect()
    except OSError as e:
        c.close()
        raise Unreachable(f"connect to {reach}: {e}") from e
    c.sock.settimeout(TIMEOUT_S)
    return c


def send(i, method, path, data, headers):
    """One request to broker `i`; returns (status, headers, raw body)."""
    c = connect(BROKERS[i][1])
    try:
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def request(method, path, body=None, follow=True, broker=None, route=None):
    """Sends `method path` (with `body` as JSON) and returns (status, headers, parsed-or-raw
    body, index of the broker that answered). Goes to `broker` (an index in BROKERS) if given,
    else to the broker that last answered for `route` (a partition; as a Kafka client keeps
    its leaders), else to the preferred broker, then to the others in turn while none accepts a
    connection; follows 307/308 to listed brokers when `follow`. Raises OSError on connection
    errors and timeouts (Unreachable when nothing was sent; ssl.SSLError is an OSError too)."""
    global PREFERRED
    data = None
    headers = dict(AUTH_HEADERS)
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    first = ROUTE.get(route, PREFERRED)
    order = [broker] if broker is not None else \
        [(first + k) % len(BROKERS) for k in range(len(BROKERS))]
    errors = []
    for i in order:
        try:
            status, hdrs, raw = send(i, method, path, data, headers)
        except Unreachable as e:
            errors.append(str(e))
            continue
        if broker is None:
            PREFERRED = i
        break
    else:
        raise Unreachable("; ".join(errors))
    for _ in range(MAX_REDIRECTS):
        if not (follow and status in (307, 308)):
            break
        loc = urllib.parse.urlsplit(hdrs.get("Location", ""))
        j = broker_of(loc.netloc)
        if j is None:
            break  # not a listed broker: the 307 is the answer
        i, path = j, loc.path + (f"?{loc.query}" if loc.query else "")
        status, hdrs, raw = send(i, method, path, data, headers)
    if route is not None and status not in (307, 308):
        ROUTE[route] = i
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, hdrs, parsed, i


def topic_path(ns, topic):
    return f"/topics/{ns}/{topic}"


def cmd_create(a):
    status, _, body, _ = request("POST", topic_path(a.ns, a.topic), {"partitions": a.partitions})
    if status not in (200, 201):
        sys.exit(f"create topic {a.ns}/{a.topic}: HTTP {status}: {body}")
    print(f"topic {a.ns}/{a.topic} with {a.partitions} partition(s): HTTP {status}")


def publish_one(a, i, part=None, record=None):
    """One durable publish of one record (value number `i`, to partition `part`, by default
    i % partitions). Returns (outcome, detail); `record` writes the acknowledgement line."""
    part = i % a.partitions if part is None else part
    value = value_for(a.prefix, i)
    url = topic_path(a.ns, a.topic) + "/publish?acks=durable"
    status, hdrs, body, _ = request("POST", url, {"records": [{"value": value, "partition": part}]},
                                    route=part)
    if status == 200 or status == 201:
        offs = body.get("offsets") if isinstance(body, dict) else None
        if not offs or len(offs) != 1:
            return "bad", f"HTTP {status} without one offset: {body}"
        off = offs[0]
        if off.get("partition") != part or not isinstance(off.get("offset"), int):
            return "bad", f"unexpected ack {off} for partition {part}"
        line = json.dumps({"topic": f"{a.ns}/{a.topic}", "partition": part,
                           "offset": off["offset"], "value": value, "t": time.time()}) + "\n"
        (record or append_acked)(a.acked, line)
        return "acked", off
    if status == 503:
        ra = hdrs.get("Retry-After")
        if ra is None:
            return "bad", f"503 without Retry-After: {body}"
        return "503", ra
    if status in (307, 308):
        return "redirect", f"HTTP {status} after {MAX_REDIRECTS} redirects: {hdrs.get('Location')}"
    return "bad", f"HTTP {status}: {body}"


def append_acked(path, line):
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def cmd_publish(a):
    for i in range(a.count):
        deadline = time.monotonic() + 60
        while True:
            outcome, detail = publish_one(a, i)
            if outcome == "acked":
                print(f"  published {a.prefix}-{i} -> partition {detail['partition']} offset {detail['offset']}")
                break
            if outcome in ("503", "redirect") and time.monotonic() < deadline:
                time.sleep(min(float(detail), 2.0) if outcome == "503" else 0.5)
                continue
            sys.exit(f"publish {a.prefix}-{i}: {outcome}: {detail}")


def cmd_loop(a):
    """Durable publishing until the stop file exists; stats are rewritten after every attempt.
    With `--threads T`, T publishers run at once, publisher k sending to the partitions p with
    p % T == k in turn: one waiting on a broker that was cut off holds up only its own
    partitions. Every record carries a value never sent before (no publish is repeated)."""
    st = {"attempts": 0, "acked": 0, "retry_after_503": 0, "timeouts": 0, "conn_errors": 0,
          "redirect_loops": 0, "redirect_samples": [], "bad": 0, "bad_samples": [],
          "max_ack_latency_s": 0.0, "last_ack_unix": 0.0, "retry_after_values": []}
    lock = threading.Lock()
    counter = itertools.count()

    def save():
        tmp = a.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, a.stats)

    def record(path, line):
        with lock:
            append_acked(path, line)

    def publisher(k):
        mine = [p for p in range(a.partitions) if p % a.threads == k]
        for n in itertools.count():
            if os.path.exists(a.stop):
                return
            part = mine[n % len(mine)]
            with lock:
                i = next(counter)
                st["attempts"] += 1
            t0 = time.monotonic()
            try:
                outcome, detail = publish_one(a, i, part, record)
            except (TimeoutError, OSError, http.client.HTTPException) as e:  # socket.timeout: OSError
                outcome, detail = ("timeout" if "timed out" in str(e) else "conn"), str(e)
            dt = time.monotonic() - t0
            pause = 0.0
            with lock:
                if outcome == "acked":
                    st["acked"] += 1
                    st["max_ack_latency_s"] = max(st["max_ack_latency_s"], round(dt, 3))
                    st["last_ack_unix"] = time.time()
                    pause = a.pause
                elif outcome == "503":
                    st["retry_after_503"] += 1
                    if len(st["retry_after_values"]) < 5:
                        st["retry_after_values"].append(detail)
                    try:
                        pause = min(max(float(detail), 0.1), 2.0)
                    except ValueError:
                        pause = 1.0
                elif outcome == "timeout":
                    st["timeouts"] += 1
                elif outcome == "conn":
                    st["conn_errors"] += 1
                    pause = 0.5
                elif outcome == "redirect":
                    # Brokers still agreeing on a partition's owner (it is moving): no answer.
                    st["redirect_loops"] += 1
                    if len(st["redirect_samples"]) < 5:
                        st["redirect_samples"].append([time.time(), detail])
                    pause = 0.5
                else:
                    st["bad"] += 1
                    if len(st["bad_samples"]) < 5:
                        st["bad_samples"].append(detail)
                    pause = 0.5
                save()
            time.sleep(pause)

    save()
    threads = [threading.Thread(target=publisher, args=(k,), daemon=True)
               for k in range(min(a.threads, a.partitions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with lock:
        save()


def fetch_all(a, part):
    """Reads partition `part` from offset 0 up to its durable offset (following redirects to
    its owner)."""
    path = topic_path(a.ns, a.topic) + f"/partitions/{part}/records"
    out, offset, durable = {}, 0, None
    while True:
        status, _, body, _ = request("GET", f"{path}?offset={offset}&limit=100")
        if status != 200:
            sys.exit(f"read {a.ns}/{a.topic} p{part} at offset {offset}: HTTP {status}: {body}")
        recs = body["records"]
        durable = body["durable_offset"]
        for k, r in enumerate(recs):
            if r["offset"] != offset + k:
                sys.exit(f"p{part}: asked offset {offset}, record {k} has offset {r['offset']}")
            out[r["offset"]] = r["value"]
        nxt = body["next_offset"]
        if not recs or nxt >= durable:
            return out, durable, body["log_end_offset"]
        if nxt <= offset:
            sys.exit(f"p{part}: next_offset {nxt} does not advance past {offset}")
        offset = nxt


def cmd_verify(a):
    acked = {}
    name = f"{a.ns}/{a.topic}"
    if os.path.exists(a.acked):
        with open(a.acked) as f:
            for line in f:
                r = json.loads(line)
                if r["topic"] == name:
                    key = (r["partition"], r["offset"])
                    if key in acked:
                        sys.exit(f"offset {key} acknowledged twice")
                    acked[key] = r["value"]
    parts = sorted({p for p, _ in acked}) or [0]
    lost = []
    summary = []
    for p in parts:
        got, durable, end = fetch_all(a, p)
        want = {o: v for (pp, o), v in acked.items() if pp == p}
        for o, v in sorted(want.items()):
            if o not in got:
                lost.append(f"p{p} offset {o} missing (durable_offset {durable})")
            elif got[o] != v:
                lost.append(f"p{p} offset {o}: read {got[o]!r}, acknowledged {v!r}")
        if a.once:
            # The writer (`loop`) never sends a value twice: a value at two offsets was
            # appended twice (e.g. by a broker that had lost the partition, or a replayed
            # redirect).
            at = {}
            for o, v in got.items():
                at.setdefault(v, []).append(o)
            for v, offs in at.items():
                if len(offs) > 1:
                    lost.append(f"p{p}: {v!r} appears at offsets {offs}")
        top = max(want) + 1 if want else 0
        if durable < top:
            lost.append(f"p{p}: durable_offset {durable} below acknowledged end {top}")
        if a.expect_durable is not None and durable != a.expect_durable:
            lost.append(f"p{p}: durable_offset {durable}, expected {a.expect_durable}")
        summary.append(f"p{p}: {len(want)} acknowledged, {len(got)} read, "
                       f"durable_offset {durable}, log_end_offset {end}")
    for s in summary:
        print(f"  {name} {s}")
    if lost:
        print("\n".join(f"  LOST: {x}" for x in lost[:20]))
        sys.exit(f"{len(lost)} acknowledged record(s) lost or wrong in {name}")
    once = ", each at exactly one offset (no record appended twice)" if a.once else ""
    print(f"  {name}: all {len(acked)} acknowledged record(s) read back byte-identical{once}")


def cmd_owners(a):
    """Which broker owns each partition, asked of every listed broker (or of `--all-on` only)
    without following redirects: the owner answers a fetch at offset 0 with 200, every other
    broker with a 307 to https://<owner's advertised address>/<the same path and query>
    marked `&redirected=true`.
    Polls until that holds for every partition (and, with `--min-owners K`, K brokers own
    some), then prints {"owners": {partition: broker}, "answers": ..., "waited_s": ...};
    exits 1 with the last answers if it does not within `--wait` seconds."""
    only = None
    if a.all_on:
        only = broker_of(a.all_on)
        if only is None:
            sys.exit(f"--all-on {a.all_on} is not one of the brokers given")
    t0 = time.monotonic()
    while True:
        answers, owners, problems = {}, {}, []
        for p in range(a.partitions):
            path = topic_path(a.ns, a.topic) + f"/partitions/{p}/records?offset=0&limit=1"
            seen = {}
            for i in ([only] if only is not None else range(len(BROKERS))):
                adv = BROKERS[i][0]
                try:
                    status, hdrs, _, _ = request("GET", path, follow=False, broker=i)
                except (OSError, http.client.HTTPException) as e:
                    seen[adv] = f"unreachable ({str(e)[:80]})"
                    continue
                loc = hdrs.get("Location") or ""
                seen[adv] = f"{status} {loc}".strip()
            answers[p] = seen
            ok = [b for b, s in seen.items() if s == "200"]
            if len(ok) != 1:
                problems.append(f"p{p}: {len(ok)} brokers answer 200")
                continue
            owners[p] = ok[0]
            # Kelp marks the hop: the owner answers it; a non-owner would answer it 503.
            want = f"307 {SCHEME}://{ok[0]}{path}&redirected=true"
            for b, s in seen.items():
                if b != ok[0] and s != want:
                    problems.append(f"p{p} on {b}: '{s}', expected '{want}'")
        if not problems and len(set(owners.values())) < a.min_owners:
            problems.append(f"only {sorted(set(owners.values()))} own partitions")
        waited = round(time.monotonic() - t0, 1)
        if not problems:
            print(json.dumps({"owners": owners, "answers": answers, "waited_s": waited}))
            return
        if waited > a.wait:
            print(json.dumps({"answers": answers}), file=sys.stderr)
            sys.exit(f"partition owners not settled within {a.wait} s: {'; '.join(problems[:8])}")
        time.sleep(0.2)


def cmd_acks_between(a):
    """Counts acknowledgements of NS/TOPIC whose ack time lies in (START, END) (unix seconds)."""
    n, name = 0, f"{a.ns}/{a.topic}"
    with open(a.acked) as f:
        for line in f:
            r = json.loads(line)
            if r["topic"] == name and a.start < r["t"] < a.end:
                n += 1
    print(n)


def cmd_stats(a):
    with open(a.file) as f:
        print(json.dumps(json.load(f)))


def main():
    global TIMEOUT_S
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", default=os.environ.get("KELP_TLS_CA") or None,
                    help="CA (PEM) to trust; with it requests use https (env KELP_TLS_CA)")
    ap.add_argument("--api-key-file", default=os.environ.get("KELP_API_KEY_FILE") or None,
                    help="file holding the API key to send (env KELP_API_KEY_FILE)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S,
                    help="seconds to wait for an answer (above the brokers' durable timeout)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("url"); c.add_argument("ns"); c.add_argument("topic")
    c.add_argument("partitions", type=int)
    c.set_defaults(fn=cmd_create)
    for name, fn in (("publish", cmd_publish), ("loop", cmd_loop)):
        p = sub.add_parser(name)
        p.add_argument("url"); p.add_argument("ns"); p.add_argument("topic")
        p.add_argument("--acked", required=True)
        p.add_argument("--prefix", required=True)
        p.add_argument("--partitions", type=int, default=1)
        if name == "publish":
            p.add_argument("--count", type=int, required=True)
        else:
            p.add_argument("--stats", required=True)
            p.add_argument("--stop", required=True)
            p.add_argument("--threads", type=int, default=1,
                           help="publishers at once, each with its own partitions")
            p.add_argument("--pause", type=float, default=0.05,
                           help="seconds each publisher waits after an acknowledgement")
        p.set_defaults(fn=fn)
    v = sub.add_parser("verify")
    v.add_argument("url"); v.add_argument("ns"); v.add_argument("topic")
    v.add_argument("--acked", required=True)
    v.add_argument("--expect-durable", type=int)
    v.add_argument("--once", action="store_true",
                   help="also check that no value appears at two offsets (a `loop` writer's)")
    v.set_defaults(fn=cmd_verify)
    o = sub.add_parser("owners")
    o.add_argument("url"); o.add_argument("ns"); o.add_argument("topic")
    o.add_argument("partitions", type=int)
    o.add_argument("--wait", type=float, default=30.0)
    o.add_argument("--all-on", help="ask only this broker (advertised host:port); it must own all")
    o.add_argument("--min-owners", type=int, default=1)
    o.set_defaults(fn=cmd_owners)
    w = sub.add_parser("acks-between")
    w.add_argument("ns"); w.add_argument("topic")
    w.add_argument("--acked", required=True)
    w.add_argument("start", type=float); w.add_argument("end", type=float)
    w.set_defaults(fn=cmd_acks_between)
    s = sub.add_parser("stats")
    s.add_argument("file")
    s.set_defaults(fn=cmd_stats)
    a = ap.parse_args()
    TIMEOUT_S = a.timeout
    configure(a)
    a.fn(a)


if __name__ == "__main__":
    main()
