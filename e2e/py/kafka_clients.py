#!/usr/bin/env python3
"""Real Kafka clients against Kelp's Kafka listener, driven by the e2e suite.

Subcommands (each prints one JSON line on stdout as its result, exits non-zero on failure):
  produce   --client confluent|kafka-python|aiokafka: records with keys, headers, null values and
            timestamps, acks=all and idempotence; writes every acknowledged record to --out
            (one JSON line each: partition, offset, key, value, headers, timestamp).
  consume   --client confluent|kafka-python|aiokafka --group G: consumes until --count records were
            seen or --idle-ms passes with nothing new, committing synchronously after each
            message; writes what it consumed to --out.
  delete    deletes --topic with confluent-kafka's AdminClient.
  times     aiokafka's offsets_for_times (ListOffsets by timestamp): for each partition in the
            acknowledged records of --expect, the middle record's timestamp and one past the
            last; prints the offsets the broker answered.
  group     three consumers (--client confluent|kafka-python) in one group (processes); after each member got
            partitions, one member is SIGKILLed; the two others must take over its
            partitions and consume everything in --expect.
"""

import argparse
import base64
import json
import multiprocessing as mp
import os
import signal
import sys
import time


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


def record_json(partition, offset, key, value, headers, timestamp):
    return {
        "partition": partition,
        "offset": offset,
        "key": b64(key),
        "value": b64(value),
        "headers": [[k, b64(v)] for k, v in (headers or [])],
        "timestamp": timestamp,
    }


def make_record(prefix, i):
    key = f"{prefix}-k{i}".encode()
    # Every 7th record is a tombstone (null value); values hold non-UTF-8 bytes too.
    value = None if i % 7 == 3 else f"{prefix}-v{i}-".encode() + bytes([0, 255, i % 256])
    headers = [("seq", str(i).encode()), ("empty", b""), ("null", None)]
    timestamp = 1_700_000_000_000 + i
    return key, value, headers, timestamp


def confluent_security(a):
    """librdkafka settings for a listener with TLS and SASL/PLAIN (--ca, --sasl-password)."""
    if not a.sasl_password:
        return {}
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "kelp",
        "sasl.password": a.sasl_password,
        "ssl.ca.location": a.ca,
    }


def kafka_python_security(a):
    """kafka-python settings for a listener with TLS and SASL/PLAIN (--ca, --sasl-password)."""
    if not a.sasl_password:
        return {}
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "kelp",
        "sasl_plain_password": a.sasl_password,
        "ssl_cafile": a.ca,
    }


def produce_confluent(a, out):
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": a.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": a.compression,
            "linger.ms": 5,
            "message.timeout.ms": a.timeout_ms,
            "retry.backoff.ms": 200,
            **confluent_security(a),
        }
    )
    acked, failed = [], []

    def cb(err, msg, key, value, headers):
        if err is not None:
            failed.append(str(err))
            return
        ts = msg.timestamp()[1]
        acked.append(record_json(msg.partition(), msg.offset(), key, value, headers, ts))

    for i in range(a.count):
        key, value, headers, ts = make_record(a.prefix, i)

        def on_delivery(err, msg, key=key, value=value, headers=headers):
            cb(err, msg, key, value, headers)

        while True:
            try:
                p.produce(a.topic, value=value, key=key, headers=headers, timestamp=ts, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(a.timeout_ms / 1000)
    for r in acked:
        out.write(json.dumps(r) + "\n")
    return {"acked": len(acked), "failed": len(failed), "unflushed": left, "errors": failed[:5]}


def produce_kafka_python(a, out):
    from kafka import KafkaProducer

    p = KafkaProducer(
        bootstrap_servers=a.bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type=None if a.compression == "none" else a.compression,
        linger_ms=5,
        retries=20,
        request_timeout_ms=a.timeout_ms,
        **kafka_python_security(a),
    )
    futures = []
    for i in range(a.count):
        key, value, headers, ts = make_record(a.prefix, i)
        # kafka-python cannot send a null header value.
        headers = [(k, v) for k, v in headers if v is not None]
        futures.append((p.send(a.topic, value=value, key=key, headers=headers, timestamp_ms=ts), key, value, headers))
    p.flush(timeout=a.timeout_ms / 1000)
    acked, failed = 0, []
    for f, key, value, headers in futures:
        try:
            m = f.get(timeout=a.timeout_ms / 1000)
        except Exception as e:  # noqa: BLE001 - report any client failure
            failed.append(repr(e))
            continue
        acked += 1
        out.write(json.dumps(record_json(m.partition, m.offset, key, value, headers, m.timestamp)) + "\n")
    p.close()
    return {"acked": acked, "failed": len(failed), "errors": failed[:5]}


def produce_aiokafka(a, out):
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(
            bootstrap_servers=a.bootstrap,
            acks="all",
            enable_idempotence=True,
            compression_type=None if a.compression == "none" else a.compression,
            linger_ms=5,
            request_timeout_ms=a.timeout_ms,
        )
        await p.start()
        acked, failed = 0, []
        try:
            pending = []
            for i in range(a.count):
                key, value, headers, ts = make_record(a.prefix, i)
                # aiokafka cannot send a null header value either.
                headers = [(k, v) for k, v in headers if v is not None]
                fut = await p.send(a.topic, value=value, key=key, headers=headers, timestamp_ms=ts)
                pending.append((fut, key, value, headers, ts))
            for fut, key, value, headers, ts in pending:
                try:
                    m = await fut
                except Exception as e:  # noqa: BLE001 - report any client failure
                    failed.append(repr(e))
                    continue
                acked += 1
                # aiokafka reports the batch's first timestamp for every record of the batch;
                # the record's own (CreateTime) timestamp is the one it sent.
                out.write(json.dumps(record_json(m.partition, m.offset, key, value, headers, ts)) + "\n")
        finally:
            await p.stop()
        return {"acked": acked, "failed": len(failed), "errors": failed[:5]}

    return asyncio.run(run())


def consume_aiokafka(a, out):
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        c = AIOKafkaConsumer(
            a.topic,
            bootstrap_servers=a.bootstrap,
            group_id=a.group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await c.start()
        seen = 0
        try:
            last_new = time.time()
            while seen < a.count and (time.time() - last_new) * 1000 < a.idle_ms:
                batch = await c.getmany(timeout_ms=500)
                for tp, msgs in batch.items():
                    for m in msgs:
                        await c.commit({TopicPartition(tp.topic, tp.partition): m.offset + 1})
                        out.write(json.dumps(record_json(m.partition, m.offset, m.key, m.value, m.headers, m.timestamp)) + "\n")
                        out.flush()
                        seen += 1
                        last_new = time.time()
        finally:
            await c.stop()
        return {"consumed": seen}

    return asyncio.run(run())


def times(a):
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    by_partition = {}
    with open(a.expect) as f:
        for line in f:
            r = json.loads(line)
            by_partition.setdefault(r["partition"], []).append(r)
    queries = {}
    for p, recs in by_partition.items():
        recs.sort(key=lambda r: r["offset"])
        queries[p] = [recs[len(recs) // 2]["timestamp"], recs[-1]["timestamp"] + 1]

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, request_timeout_ms=a.timeout_ms)
        await c.start()
        lookups = []
        try:
            for which in range(2):
                asked = {TopicPartition(a.topic, p): ts[which] for p, ts in queries.items()}
                got = await c.offsets_for_times(asked)
                for tp, ts in asked.items():
                    hit = got.get(tp)
                    lookups.append(
                        {
                            "partition": tp.partition,
                            "timestamp": ts,
                            "offset": None if hit is None else hit.offset,
                            "found_timestamp": None if hit is None else hit.timestamp,
                        }
                    )
        finally:
            await c.stop()
        return {"lookups": lookups}

    return asyncio.run(run())


def consume_confluent(a, out):
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": a.bootstrap,
            "group.id": a.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            **confluent_security(a),
        }
    )
    c.subscribe([a.topic])
    seen = 0
    last_new = time.time()
    while seen < a.count and (time.time() - last_new) * 1000 < a.idle_ms:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise SystemExit(f"consumer error: {m.error()}")
        c.commit(message=m, asynchronous=False)
        out.write(json.dumps(record_json(m.partition(), m.offset(), m.key(), m.value(), m.headers(), m.timestamp()[1])) + "\n")
        out.flush()
        seen += 1
        last_new = time.time()
    c.close()
    return {"consumed": seen}


def consume_kafka_python(a, out):
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

    c = KafkaConsumer(
        a.topic,
        bootstrap_servers=a.bootstrap,
        group_id=a.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        **kafka_python_security(a),
    )
    seen = 0
    last_new = time.time()
    while seen < a.count and (time.time() - last_new) * 1000 < a.idle_ms:
        batch = c.poll(timeout_ms=500)
        for tp, msgs in batch.items():
            for m in msgs:
                c.commit({TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(m.offset + 1, None, -1)})
                out.write(json.dumps(record_json(m.partition, m.offset, m.key, m.value, m.headers, m.timestamp)) + "\n")
                out.flush()
                seen += 1
                last_new = time.time()
    c.close()
    return {"consumed": seen}


def member(bootstrap, topic, group, path, assigned_flag):
    from confluent_kafka import Consumer, KafkaException

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": "range",
        }
    )

    def on_assign(consumer, parts):
        with open(assigned_flag, "a") as f:
            f.write(json.dumps(sorted(p.partition for p in parts)) + "\n")

    c.subscribe([topic], on_assign=on_assign)
    with open(path, "a") as out:
        while True:
            m = c.poll(0.3)
            if m is None or m.error():
                continue
            # Log, then commit: a kill in between makes the record come again (logged twice,
            # harmless), never committed yet unlogged.
            out.write(json.dumps([m.partition(), m.offset()]) + "\n")
            out.flush()
            try:
                c.commit(message=m, asynchronous=False)
            except KafkaException as e:
                # A commit during a rebalance is refused (REBALANCE_IN_PROGRESS, as Kafka
                # does): the member rejoins on its next poll and the record comes again.
                print(f"commit refused, going on: {e}", file=sys.stderr)
            # Slow enough that the kill lands while records remain.
            time.sleep(0.005)


def member_kafka_python(bootstrap, topic, group, path, assigned_flag):
    from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
    from kafka.errors import CommitFailedError

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            with open(assigned_flag, "a") as f:
                f.write(json.dumps(sorted(p.partition for p in assigned)) + "\n")

    c.subscribe([topic], listener=Listener())
    with open(path, "a") as out:
        while True:
            for tp, msgs in c.poll(timeout_ms=300).items():
                for m in msgs:
                    # Log, then commit (see `member`).
                    out.write(json.dumps([m.partition, m.offset]) + "\n")
                    out.flush()
                    try:
                        c.commit({TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(m.offset + 1, None, -1)})
                    except CommitFailedError as e:
                        # Refused during a rebalance (REBALANCE_IN_PROGRESS, as Kafka does).
                        # The consumer's position is already past the whole polled batch:
                        # seek back so this record and the rest of the batch come again if
                        # the partition stays with this member (at least once), then rejoin.
                        print(f"commit refused, going on: {e}", file=sys.stderr)
                        try:
                            c.seek(tp, m.offset)
                        except Exception as e2:  # noqa: BLE001 - the partition moved away
                            print(f"seek after a refused commit: {e2}", file=sys.stderr)
                        break
                    time.sleep(0.005)


def group(a):
    expect = set()
    with open(a.expect) as f:
        for line in f:
            r = json.loads(line)
            expect.add((r["partition"], r["offset"]))
    ctx = mp.get_context("fork")
    procs, outs, flags = [], [], []
    for i in range(3):
        out = os.path.join(a.workdir, f"member{i}.jsonl")
        flag = os.path.join(a.workdir, f"member{i}.assigned")
        outs.append(out)
        flags.append(flag)
        target = member_kafka_python if a.client == "kafka-python" else member
        p = ctx.Process(target=target, args=(a.bootstrap, a.topic, a.group, out, flag), daemon=True)
        p.start()
        procs.append(p)

    def assignments(i):
        try:
            with open(flags[i]) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    deadline = time.time() + 60
    # Wait until every member holds at least one partition (one generation with three members).
    while time.time() < deadline and not all(assignments(i) and assignments(i)[-1] for i in range(3)):
        time.sleep(0.2)
    if not all(assignments(i) and assignments(i)[-1] for i in range(3)):
        raise SystemExit(f"three members never shared the partitions: {[assignments(i) for i in range(3)]}")
    victim = 0
    killed_held = assignments(victim)[-1]
    os.kill(procs[victim].pid, signal.SIGKILL)
    procs[victim].join()

    def consumed():
        got = set()
        for out in outs:
            try:
                with open(out) as f:
                    for line in f:
                        if line.strip():
                            got.add(tuple(json.loads(line)))
            except FileNotFoundError:
                pass
        return got

    while time.time() < deadline + 60 and not expect <= consumed():
        time.sleep(0.3)
    survivors_hold = sorted(set(sum((assignments(i)[-1] for i in (1, 2)), [])))
    missing = expect - consumed()
    for p in procs[1:]:
        p.kill()
        p.join()
    result = {
        "victim_held": killed_held,
        "survivors_hold": survivors_hold,
        "expected": len(expect),
        "missing": len(missing),
        "consumed": len(consumed() & expect),
    }
    if missing:
        raise SystemExit(f"records never consumed after the member was killed: {result}")
    return result


def delete(a):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    for topic, fut in admin.delete_topics([a.topic], operation_timeout=30).items():
        fut.result(timeout=60)
    return {"deleted": a.topic}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["produce", "consume", "group", "delete", "times"])
    ap.add_argument("--client", default="confluent")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--prefix", default="r")
    ap.add_argument("--compression", default="none")
    ap.add_argument("--group", default="g")
    ap.add_argument("--out")
    ap.add_argument("--expect")
    ap.add_argument("--workdir")
    ap.add_argument("--idle-ms", type=int, default=15000)
    ap.add_argument("--timeout-ms", type=int, default=60000)
    # TLS + SASL/PLAIN (produce and consume with confluent and kafka-python): the CA file and
    # the password (a Kelp API key).
    ap.add_argument("--ca")
    ap.add_argument("--sasl-password")
    a = ap.parse_args()
    if a.cmd == "group":
        result = group(a)
    elif a.cmd == "delete":
        result = delete(a)
    elif a.cmd == "times":
        result = times(a)
    else:
        fn = {
            ("produce", "confluent"): produce_confluent,
            ("produce", "kafka-python"): produce_kafka_python,
            ("consume", "confluent"): consume_confluent,
            ("consume", "kafka-python"): consume_kafka_python,
            ("produce", "aiokafka"): produce_aiokafka,
            ("consume", "aiokafka"): consume_aiokafka,
        }[(a.cmd, a.client)]
        with open(a.out, "a") as out:
            result = fn(a, out)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
