#!/usr/bin/env python3
"""pyseaweed (SeaweedFS's Python client) against one master, driven by the e2e suite.

Usage: pyseaweed_client.py HOST PORT

Runs every call pyseaweed exposes — upload_file, get_file, get_file_url, get_file_location,
get_file_size, file_exists, delete_file, version, vacuum — and prints one JSON object on
stdout: what each call returned, per file. It runs twice, as pyseaweed can be configured:
"default" (SeaweedFS(host, port): plain requests, public URLs) and "session"
(use_session=True, use_public_url=False). The same script runs against the real SeaweedFS
and against Kelp; the Rust test compares the two reports. Bytes are compared here (the
report says whether get_file returned exactly what was uploaded, and its SHA-256); an
exception in a call is reported as {"error": "..."} for that call, never swallowed.
"""

import hashlib
import io
import json
import sys
import traceback

import requests
from pyseaweed import SeaweedFS
from pyseaweed.exceptions import BadFidFormat


def make_files():
    """The uploads: name -> bytes. The first and the last are deleted."""
    return {
        "hello.txt": b"hello, pyseaweed\n",
        "all-bytes.bin": bytes(range(256)) * 4,
        "empty.txt": b"",
        "one-mib.bin": bytes((i * 7919 + (i >> 13)) % 251 for i in range(1 << 20)),
        # Compressible text: SeaweedFS stores it gzipped.
        "compressible.txt": b"".join(b"line %05d of a compressible text\n" % i for i in range(2000)),
        "page.html": b"<!doctype html><title>kelp</title><p>hello</p>\n",
        "name with spaces \u00e9\u00e8 \u65e5\u672c.txt": "unicode body \u2713\n".encode(),
    }


FILES = make_files()
# Uploaded and deleted before the vacuum: the garbage a vacuum gives back.
GARBAGE = bytes(range(256)) * (8 << 10)  # 2 MiB


def call(fn):
    """{"ok": result} or {"error": "Type: message"}."""
    try:
        return {"ok": fn()}
    except Exception as e:  # noqa: BLE001 — reported, and the Rust test fails on it
        return {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}


def sha(b):
    return None if b is None else hashlib.sha256(b).hexdigest()


def headers(url):
    """The GET answer's headers a browser or a downloader acts on (outside pyseaweed), and
    the status of a conditional GET with If-Modified-Since at the Last-Modified it gave."""
    h = requests.get(url, headers={"Accept-Encoding": "identity"}).headers
    out = {k: h.get(k) for k in ("content-type", "content-disposition", "content-encoding")}
    lm = h.get("last-modified")
    out["has_last_modified"] = lm is not None
    if lm:
        out["if_modified_since_status"] = requests.get(url, headers={"If-Modified-Since": lm}).status_code
    return out


def run(sw):
    report = {"repr": repr(sw), "version": call(lambda: sw.version), "files": {}}

    for name, body in FILES.items():
        r = {"len": len(body), "sha256": sha(body)}
        up = call(lambda: sw.upload_file(stream=io.BytesIO(body), name=name))
        r["upload"] = up
        fid = up.get("ok")
        r["fid"] = fid
        if not fid:
            report["files"][name] = r
            continue
        got = call(lambda: sw.get_file(fid))
        data = got.get("ok")
        r["get"] = {
            "error": got.get("error"),
            "len": None if data is None else len(data),
            "sha256": sha(data),
            "identical": data == body,
        }
        r["url"] = call(lambda: sw.get_file_url(fid))
        r["url_public"] = call(lambda: sw.get_file_url(fid, public=True))
        r["url_internal"] = call(lambda: sw.get_file_url(fid, public=False))
        loc = call(lambda: sw.get_file_location(fid.split(",")[0]))
        if "ok" in loc:
            loc["ok"] = {"public_url": loc["ok"].public_url, "url": loc["ok"].url}
        r["location"] = loc
        r["size"] = call(lambda: sw.get_file_size(fid))
        r["exists"] = call(lambda: sw.file_exists(fid))
        if "ok" in r["url"]:
            r["headers"] = headers(r["url"]["ok"])
        report["files"][name] = r

    # Deletes: the first and the last file; then they no longer exist, the others still do.
    names = list(report["files"])
    deleted = [names[0], names[-1]]
    report["deleted"] = deleted
    for name in deleted:
        r = report["files"][name]
        if not r.get("fid"):
            continue
        r["delete"] = call(lambda: sw.delete_file(r["fid"]))
        r["exists_after_delete"] = call(lambda: sw.file_exists(r["fid"]))
        r["size_after_delete"] = call(lambda: sw.get_file_size(r["fid"]))
        r["get_after_delete"] = call(lambda: sw.get_file(r["fid"]))
        r["delete_again"] = call(lambda: sw.delete_file(r["fid"]))

    def survivors_identical():
        return {
            name: call(lambda: sw.get_file(r["fid"])).get("ok") == FILES[name]
            for name, r in report["files"].items()
            if r.get("fid") and name not in deleted
        }

    report["identical_after_deletes"] = survivors_identical()

    # A made-up fid on an existing volume: a key never assigned, with a cookie.
    live = next((r["fid"] for r in report["files"].values() if r.get("fid")), None)
    if live:
        made_up = live.split(",")[0] + ",7fffffff12345678"
        report["made_up"] = {
            "exists": call(lambda: sw.file_exists(made_up)),
            "size": call(lambda: sw.get_file_size(made_up)),
            "get": call(lambda: sw.get_file(made_up)),
            "delete": call(lambda: sw.delete_file(made_up)),
        }

    # A malformed fid: pyseaweed itself refuses it before any request.
    try:
        sw.get_file_url("no-comma")
        report["bad_fid"] = "accepted"
    except BadFidFormat:
        report["bad_fid"] = "BadFidFormat"

    # A volume nobody holds: the lookup is not a 200, and pyseaweed's json.loads(None) raises.
    report["unknown_volume_location"] = call(lambda: sw.get_file_location("4242"))

    # Garbage for the vacuum to give back: 2 MiB uploaded and deleted.
    g = call(lambda: sw.upload_file(stream=io.BytesIO(GARBAGE), name="garbage.bin"))
    report["garbage"] = {"upload": g}
    if g.get("ok"):
        report["garbage"]["delete"] = call(lambda: sw.delete_file(g["ok"]))
    report["vacuum"] = call(lambda: sw.vacuum())
    report["vacuum_threshold"] = call(lambda: sw.vacuum(threshold=0.9))
    report["identical_after_vacuum"] = survivors_identical()

    # upload_file's extra keyword arguments become /dir/assign parameters.
    up = call(
        lambda: sw.upload_file(stream=io.BytesIO(b"in a collection"), name="c.txt", collection="pys")
    )
    report["collection_upload"] = up
    if up.get("ok"):
        report["collection_get"] = call(lambda: sw.get_file(up["ok"]))
        if isinstance(report["collection_get"].get("ok"), bytes):
            report["collection_get"]["ok"] = report["collection_get"]["ok"].decode()

    # More /dir/assign parameters through upload_file's keyword arguments (pyseaweed puts them
    # in the URL as they are). An assign that is not a 200 makes pyseaweed raise TypeError
    # (json.loads(None)): reported as that call's error.
    node = None
    if live:
        loc = call(lambda: sw.get_file_location(live.split(",")[0]))
        node = loc.get("ok") and loc["ok"].url
    kwargs = [
        {"dataCenter": "DefaultDataCenter"},
        {"rack": "DefaultRack"},
        {"dataNode": node},
        {"count": 2},
        {"preallocate": 1024},
        {"diskType": "hdd"},
        {"replication": "000"},
        # Two servers needed, one runs: refused by both.
        {"replication": "001"},
        {"ttl": "3m"},
        {"collection": "a b"},
    ]
    report["assign_kwargs"] = {}
    for kw in kwargs:
        # The volume server's address differs per system: not in the label.
        label = "&".join(f"{k}={'<volume server>' if k == 'dataNode' else v}" for k, v in kw.items())
        body = label.encode()
        up = call(lambda: sw.upload_file(stream=io.BytesIO(body), name="kw.txt", **kw))
        r = {"upload": up}
        if up.get("ok"):
            r["read_back"] = call(lambda: sw.get_file(up["ok"]) == body)
        report["assign_kwargs"][label] = r
    return report


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    report = {
        "default": run(SeaweedFS(host, port)),
        "session": run(SeaweedFS(host, port, use_session=True, use_public_url=False)),
    }
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
