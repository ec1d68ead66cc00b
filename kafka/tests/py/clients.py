"""Real Kafka clients against a Kelp Kafka listener.

Usage: clients.py BOOTSTRAP CLIENT TOPIC GROUP
  CLIENT: kafka-python | confluent-kafka

Produces with acks=all and idempotence (keys, headers, null values, explicit timestamps),
then consumes in a group of three members that each must get partitions and commit, and
checks every record round-trips byte-identical. Exits non-zero on any mismatch.
"""

import sys
import threading
import time

N = 60
BASE_TS = 1_700_000_000_000
DEADLINE_S = 90


def expected():
    out = []
    for i in range(N):
        # kafka-python refuses a record with neither key nor value.
        key = None if i % 7 == 0 and i % 5 != 0 else f"key-{i}".encode()
        value = None if i % 5 == 0 else bytes([i % 256]) * (i + 1)
        headers = [("h-index", str(i).encode()), ("h-bin", bytes([0, 255, i % 256]))]
        out.append((key, value, headers, BASE_TS + i))
    return out


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(received, client):
    want = {(k, v, tuple(h), ts) for (k, v, h, ts) in expected()}
    got = [(k, v, tuple(h), ts) for (k, v, h, ts) in received]
    # Redelivery after a rebalance is Kafka's at-least-once, so duplicates are reported
    # but the check is that every record arrived intact.
    if len(got) != len(set(got)):
        print(f"{client}: {len(got) - len(set(got))} records redelivered", flush=True)
    missing = want - set(got)
    extra = set(got) - want
    if missing or extra:
        fail(f"{client}: {len(missing)} missing, {len(extra)} unexpected, e.g. "
             f"{sorted(missing, key=str)[:1]} {sorted(extra, key=str)[:1]}")


def run_kafka_python(bootstrap, topic, group):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import CommitFailedError

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             retries=5, linger_ms=5)
    futures = [producer.send(topic, key=k, value=v, headers=h, timestamp_ms=ts)
               for (k, v, h, ts) in expected()]
    producer.flush(timeout=30)
    for f in futures:
        f.get(timeout=30)
    producer.close()

    lock = threading.Lock()
    received = []
    members = []
    stop = threading.Event()
    errors = []

    def member(idx):
        try:
            c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                              auto_offset_reset="earliest", enable_auto_commit=False,
                              session_timeout_ms=10000, heartbeat_interval_ms=500,
                              client_id=f"kp-{idx}")
            members.append(c)
            assigned = set()
            while not stop.is_set():
                batch = c.poll(timeout_ms=200)
                for recs in batch.values():
                    with lock:
                        for r in recs:
                            received.append((r.key, r.value,
                                             [(k, v) for (k, v) in r.headers], r.timestamp))
                if batch:
                    try:
                        c.commit()
                    except CommitFailedError:
                        # A rebalance (e.g. another member closing) won the race; the
                        # records are redelivered to the partition's next owner.
                        pass
                assigned = c.assignment()
                info[idx] = assigned
            # Every member commits what it consumed before any leaves (a leave starts a
            # rebalance that would refuse the others' commits).
            try:
                c.commit()
            except CommitFailedError:
                pass
            barrier.wait(timeout=30)
            c.close()
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))

    info = {}
    barrier = threading.Barrier(3)
    threads = [threading.Thread(target=member, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_done(lambda: len(set(map(repr, received))) >= N and all(info.get(i) for i in range(3)), errors, stop)
    for t in threads:
        t.join(timeout=30)
    if errors:
        fail(f"kafka-python consumer: {errors[0]}")
    check(received, "kafka-python")
    # Every partition's committed offset is its end.
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    ends = c.end_offsets(parts)
    for tp in parts:
        if c.committed(tp) != ends[tp]:
            fail(f"kafka-python: committed {c.committed(tp)} != end {ends[tp]} for {tp}")
    c.close()


def run_confluent(bootstrap, topic, group):
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(str(err))

    for (k, v, h, ts) in expected():
        producer.produce(topic, key=k, value=v, headers=h, timestamp=ts, on_delivery=on_delivery)
    if producer.flush(30) != 0:
        fail("confluent-kafka: records left unflushed")
    if failures:
        fail(f"confluent-kafka delivery: {failures[0]}")

    lock = threading.Lock()
    received = []
    info = {}
    stop = threading.Event()
    errors = []

    def member(idx):
        try:
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                          "auto.offset.reset": "earliest", "enable.auto.commit": False,
                          "partition.assignment.strategy": "cooperative-sticky",
                          "session.timeout.ms": 10000, "client.id": f"ck-{idx}"})
            c.subscribe([topic])
            while not stop.is_set():
                msgs = c.consume(num_messages=100, timeout=0.2)
                for m in msgs:
                    if m.error():
                        errors.append(str(m.error()))
                        continue
                    with lock:
                        received.append((m.key(), m.value(), list(m.headers() or []),
                                         m.timestamp()[1]))
                if msgs:
                    try:
                        c.commit(asynchronous=False)
                    except KafkaException as e:
                        # Lost a race with a rebalance: redelivered to the next owner.
                        if e.args[0].code() not in (KafkaError.REBALANCE_IN_PROGRESS,
                                                    KafkaError.ILLEGAL_GENERATION,
                                                    KafkaError.UNKNOWN_MEMBER_ID):
                            raise
                info[idx] = c.assignment()
            try:
                c.commit(asynchronous=False)
            except KafkaException:
                pass  # nothing consumed since the last commit
            barrier.wait(timeout=30)
            c.close()
        except Exception as e:
            errors.append(repr(e))

    barrier = threading.Barrier(3)
    threads = [threading.Thread(target=member, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_done(lambda: len(set(map(repr, received))) >= N and all(info.get(i) for i in range(3)), errors, stop)
    for t in threads:
        t.join(timeout=30)
    if errors:
        fail(f"confluent-kafka consumer: {errors[0]}")
    check(received, "confluent-kafka")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    meta = c.list_topics(topic, timeout=10)
    parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
    for tp in c.committed(parts, timeout=10):
        low, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        if tp.offset != high:
            fail(f"confluent-kafka: committed {tp.offset} != end {high} for p{tp.partition}")
    c.close()


def wait_done(done, errors, stop):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and not errors:
        if done():
            # Let the last commits land.
            time.sleep(0.5)
            break
        time.sleep(0.1)
    else:
        stop.set()
        if not errors:
            fail("timed out before every record was consumed by a group of three")
    stop.set()


def main():
    bootstrap, client, topic, group = sys.argv[1:5]
    if client == "kafka-python":
        run_kafka_python(bootstrap, topic, group)
    elif client == "confluent-kafka":
        run_confluent(bootstrap, topic, group)
    else:
        fail(f"unknown client {client}")
    print(f"OK {client}", flush=True)


if __name__ == "__main__":
    main()
