#!/usr/bin/env python3
"""A small client of the Kelp broker's HTTP API for deploy/test-compose.sh (stdlib only).

Every acknowledged publish is appended to an "acked" file (JSON lines: topic, partition,
offset, value), so that `verify` can later check that nothing acknowledged was lost.

  broker_client.py [AUTH] create  URL NS TOPIC PARTITIONS
  broker_client.py [AUTH] publish URL NS TOPIC --acked F --count N --prefix P [--partitions K]
  broker_client.py [AUTH] loop    URL NS TOPIC --acked F --stats F --stop F --prefix P [--partitions K]
  broker_client.py [AUTH] verify  URL NS TOPIC --acked F [--expect-durable N]
  broker_client.py acks-between NS TOPIC --acked F START END
  broker_client.py stats   F

URL is the broker's host:port. AUTH, for a secured broker (deploy/compose.yaml's default):
  --ca FILE            speak https, trusting only the CA in FILE (env KELP_TLS_CA); else http
  --api-key-file FILE  send `Authorization: Bearer <key>` with the key in FILE
                       (env KELP_API_KEY_FILE); publishing and creating need a write key
"""

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

TIMEOUT_S = 45.0  # above the broker's --durable-timeout-ms (30 s)


def value_for(prefix, i):
    # Non-ASCII, quotes, backslashes and control characters: read-back must be byte-identical.
    return f"{prefix}-{i:05d} \u2603 \"q\" \\ \t caf\u00e9 \U0001F30A end"


# How requests reach the broker, set by configure() from the AUTH options.
SCHEME = "http"
TLS_CONTEXT = None
AUTH_HEADERS = {}


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


def request(method, url, body=None, timeout=TIMEOUT_S):
    """Returns (status, headers, parsed-or-raw body). Raises on connection errors/timeouts
    (and TLS errors: ssl.SSLError is an OSError)."""
    data = None
    headers = dict(AUTH_HEADERS)
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=TLS_CONTEXT) as resp:
            raw = resp.read()
            status, hdrs = resp.status, resp.headers
    except urllib.error.HTTPError as e:
        raw = e.read()
        status, hdrs = e.code, e.headers
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, hdrs, parsed


def topic_url(base, ns, topic):
    return f"{SCHEME}://{base}/topics/{ns}/{topic}"


def cmd_create(a):
    status, _, body = request("POST", topic_url(a.url, a.ns, a.topic), {"partitions": a.partitions})
    if status not in (200, 201):
        sys.exit(f"create topic {a.ns}/{a.topic}: HTTP {status}: {body}")
    print(f"topic {a.ns}/{a.topic} with {a.partitions} partition(s): HTTP {status}")


def publish_one(a, i):
    """One durable publish of one record. Returns (outcome, detail)."""
    part = i % a.partitions
    value = value_for(a.prefix, i)
    url = topic_url(a.url, a.ns, a.topic) + "/publish?acks=durable"
    status, hdrs, body = request("POST", url, {"records": [{"value": value, "partition": part}]})
    if status == 200 or status == 201:
        offs = body.get("offsets") if isinstance(body, dict) else None
        if not offs or len(offs) != 1:
            return "bad", f"HTTP {status} without one offset: {body}"
        off = offs[0]
        if off.get("partition") != part or not isinstance(off.get("offset"), int):
            return "bad", f"unexpected ack {off} for partition {part}"
        with open(a.acked, "a") as f:
            f.write(json.dumps({"topic": f"{a.ns}/{a.topic}", "partition": part,
                                "offset": off["offset"], "value": value,
                                "t": time.time()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return "acked", off
    if status == 503:
        ra = hdrs.get("Retry-After")
        if ra is None:
            return "bad", f"503 without Retry-After: {body}"
        return "503", ra
    return "bad", f"HTTP {status}: {body}"


def cmd_publish(a):
    for i in range(a.count):
        deadline = time.monotonic() + 60
        while True:
            outcome, detail = publish_one(a, i)
            if outcome == "acked":
                print(f"  published {a.prefix}-{i} -> partition {detail['partition']} offset {detail['offset']}")
                break
            if outcome == "503" and time.monotonic() < deadline:
                time.sleep(min(float(detail), 2.0))
                continue
            sys.exit(f"publish {a.prefix}-{i}: {outcome}: {detail}")


def cmd_loop(a):
    """Durable publishing until the stop file exists; stats are rewritten after every attempt."""
    st = {"attempts": 0, "acked": 0, "retry_after_503": 0, "timeouts": 0, "conn_errors": 0,
          "bad": 0, "bad_samples": [], "max_ack_latency_s": 0.0, "last_ack_unix": 0.0,
          "retry_after_values": []}

    def save():
        tmp = a.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, a.stats)

    i = 0
    save()
    while not os.path.exists(a.stop):
        st["attempts"] += 1
        t0 = time.monotonic()
        try:
            outcome, detail = publish_one(a, i)
        except (TimeoutError, OSError) as e:  # URLError and socket.timeout are OSErrors
            msg = str(e)
            if "timed out" in msg:
                st["timeouts"] += 1
            else:
                st["conn_errors"] += 1
                time.sleep(0.5)
            save()
            i += 1
            continue
        dt = time.monotonic() - t0
        if outcome == "acked":
            st["acked"] += 1
            st["max_ack_latency_s"] = max(st["max_ack_latency_s"], round(dt, 3))
            st["last_ack_unix"] = time.time()
            time.sleep(0.05)
        elif outcome == "503":
            st["retry_after_503"] += 1
            if len(st["retry_after_values"]) < 5:
                st["retry_after_values"].append(detail)
            try:
                time.sleep(min(max(float(detail), 0.1), 2.0))
            except ValueError:
                time.sleep(1.0)
        else:
            st["bad"] += 1
            if len(st["bad_samples"]) < 5:
                st["bad_samples"].append(detail)
            time.sleep(0.5)
        save()
        i += 1
    save()


def fetch_all(a, part):
    """Reads partition `part` from offset 0 up to its durable offset."""
    url = topic_url(a.url, a.ns, a.topic) + f"/partitions/{part}/records"
    out, offset, durable = {}, 0, None
    while True:
        status, _, body = request("GET", f"{url}?offset={offset}&limit=100")
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
    print(f"  {name}: all {len(acked)} acknowledged record(s) read back byte-identical")


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
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", default=os.environ.get("KELP_TLS_CA") or None,
                    help="CA (PEM) to trust; with it requests use https (env KELP_TLS_CA)")
    ap.add_argument("--api-key-file", default=os.environ.get("KELP_API_KEY_FILE") or None,
                    help="file holding the API key to send (env KELP_API_KEY_FILE)")
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
        p.set_defaults(fn=fn)
    v = sub.add_parser("verify")
    v.add_argument("url"); v.add_argument("ns"); v.add_argument("topic")
    v.add_argument("--acked", required=True)
    v.add_argument("--expect-durable", type=int)
    v.set_defaults(fn=cmd_verify)
    w = sub.add_parser("acks-between")
    w.add_argument("ns"); w.add_argument("topic")
    w.add_argument("--acked", required=True)
    w.add_argument("start", type=float); w.add_argument("end", type=float)
    w.set_defaults(fn=cmd_acks_between)
    s = sub.add_parser("stats")
    s.add_argument("file")
    s.set_defaults(fn=cmd_stats)
    a = ap.parse_args()
    configure(a)
    a.fn(a)


if __name__ == "__main__":
    main()
