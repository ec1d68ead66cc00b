#!/usr/bin/env python3
"""Drives Kelp's schema registry with confluent-kafka's own Python client.

Usage: registry_client.py URL register STATE_FILE
       registry_client.py URL verify STATE_FILE

`register` registers Avro schemas through `SchemaRegistryClient`, evolves one compatibly,
checks that an incompatible one is refused with 409, serializes records with `AvroSerializer`
(which registers or finds the schema and frames the bytes with its id) and deserializes them
with `AvroDeserializer`, then writes what it did to STATE_FILE (JSON, the serialized bytes in
hex). `verify` runs with a fresh client (no cache) after the services were restarted: every id
and subject/version must resolve to the same schema, and every serialized record must
deserialize to the same value, fetching its schema from the registry by the id in the bytes.

With `KELP_KAFKA_BOOTSTRAP=host:port` (the broker's Kafka listener) set, `register` also
produces the serialized records through Kafka (`confluent_kafka.Producer`, acks=all) and
`verify` consumes them back (`confluent_kafka.Consumer`) and deserializes what it consumed
(see `produce` and `consume`); without it, serialization is checked against the registry alone.

Prints one JSON line with the counts; exits non-zero on any mismatch. Installs
`confluent-kafka[avro,schemaregistry]` with pip when it is missing.
"""

import json
import os
import subprocess
import sys


def ensure_client():
    try:
        import confluent_kafka.schema_registry  # noqa: F401
        import confluent_kafka.schema_registry.avro  # noqa: F401
        import fastavro  # noqa: F401
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "confluent-kafka[avro,schemaregistry]", "fastavro"],
            check=True,
        )


ensure_client()

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.schema_registry.error import SchemaRegistryError  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402

TOPIC = "py-orders"

ORDER_V1 = {
    "type": "record", "name": "Order", "namespace": "kelp.e2e",
    "fields": [{"name": "id", "type": "long"}, {"name": "item", "type": "string"}],
}
# Compatible (BACKWARD): the new field has a default.
ORDER_V2 = {
    "type": "record", "name": "Order", "namespace": "kelp.e2e",
    "fields": [
        {"name": "id", "type": "long"}, {"name": "item", "type": "string"},
        {"name": "qty", "type": "int", "default": 1},
    ],
}
# Incompatible: a new field without a default.
ORDER_BAD = {
    "type": "record", "name": "Order", "namespace": "kelp.e2e",
    "fields": [{"name": "id", "type": "long"}, {"name": "price", "type": "double"}],
}
USER = {
    "type": "record", "name": "User", "namespace": "kelp.e2e",
    "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": ["null", "int"], "default": None}],
}


def fail(msg):
    print(json.dumps({"error": msg}))
    sys.exit(1)


def produce(bootstrap, records):
    """Kafka hook: produces the serialized records to TOPIC through Kelp's Kafka listener."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for hexbytes in records:
        p.produce(TOPIC, value=bytes.fromhex(hexbytes))
    if p.flush(30) != 0:
        fail("kafka: records left unflushed")


def consume(bootstrap, count):
    """Kafka hook: consumes `count` records of TOPIC from the beginning; returns their bytes."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kelp-e2e-registry",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([TOPIC])
    out = []
    try:
        for _ in range(300):
            if len(out) >= count:
                break
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append(m.value())
    finally:
        c.close()
    return out


def register(url, state_file):
    sr = SchemaRegistryClient({"url": url})
    subject = f"{TOPIC}-value"
    id1 = sr.register_schema(subject, Schema(json.dumps(ORDER_V1), "AVRO"))
    # The same schema again: the same id.
    if sr.register_schema(subject, Schema(json.dumps(ORDER_V1, indent=2), "AVRO")) != id1:
        fail("the same schema got a second id")
    id2 = sr.register_schema(subject, Schema(json.dumps(ORDER_V2), "AVRO"))
    try:
        sr.register_schema(subject, Schema(json.dumps(ORDER_BAD), "AVRO"))
        fail("an incompatible schema was accepted")
    except SchemaRegistryError as e:
        if e.http_status_code != 409 or e.error_code != 409:
            fail(f"incompatible schema: expected 409, got {e.http_status_code}/{e.error_code}")
    id_user = sr.register_schema("py-users-value", Schema(json.dumps(USER), "AVRO"))
    try:
        sr.get_version("py-no-such-subject", 1)
        fail("an unknown subject was found")
    except SchemaRegistryError as e:
        if e.error_code != 40401:
            fail(f"unknown subject: expected 40401, got {e.error_code}")
    latest = sr.get_latest_version(subject)
    if latest.schema_id != id2 or latest.version != 2:
        fail(f"latest version of {subject}: {latest.schema_id}/{latest.version}")
    looked_up = sr.lookup_schema(subject, Schema(json.dumps(ORDER_V1), "AVRO"))
    if looked_up.schema_id != id1 or looked_up.version != 1:
        fail(f"lookup: {looked_up.schema_id}/{looked_up.version}")

    # Serialize with the Confluent framing (magic byte, schema id, Avro body) and back.
    ser = AvroSerializer(sr, json.dumps(ORDER_V2))
    user_ser = AvroSerializer(sr, json.dumps(USER))
    de = AvroDeserializer(sr)
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    values = [{"id": i, "item": f"item-{i}", "qty": i + 1} for i in range(5)]
    records = []
    for v in values:
        b = ser(v, ctx)
        if b[0] != 0 or int.from_bytes(b[1:5], "big") != id2:
            fail(f"serialized record does not carry schema id {id2}")
        if de(b, ctx) != v:
            fail(f"round trip changed {v}")
        records.append(b.hex())
    user = {"name": "ada", "age": 36}
    ub = user_ser(user, SerializationContext("py-users", MessageField.VALUE))
    records_user = ub.hex()
    bootstrap = os.environ.get("KELP_KAFKA_BOOTSTRAP")
    if bootstrap:
        produce(bootstrap, records)
    state = {
        "subject": subject, "ids": [id1, id2, id_user], "values": values, "records": records,
        "user": user, "user_record": records_user,
    }
    with open(state_file, "w") as f:
        json.dump(state, f)
    print(json.dumps({"registered": 3, "serialized": len(records) + 1, "kafka": bool(bootstrap)}))


def verify(url, state_file):
    with open(state_file) as f:
        state = json.load(f)
    sr = SchemaRegistryClient({"url": url})
    id1, id2, id_user = state["ids"]
    checks = [
        (id1, state["subject"], 1, ORDER_V1),
        (id2, state["subject"], 2, ORDER_V2),
        (id_user, "py-users-value", 1, USER),
    ]
    verified = 0
    for sid, subject, version, expected in checks:
        by_id = sr.get_schema(sid)
        by_version = sr.get_version(subject, version)
        if json.loads(by_id.schema_str) != expected:
            fail(f"schema {sid} changed")
        if by_version.schema_id != sid or json.loads(by_version.schema.schema_str) != expected:
            fail(f"{subject}/{version} changed")
        verified += 1
    de = AvroDeserializer(sr)
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    records = [bytes.fromhex(h) for h in state["records"]]
    bootstrap = os.environ.get("KELP_KAFKA_BOOTSTRAP")
    if bootstrap:
        records = consume(bootstrap, len(state["records"]))
        if len(records) != len(state["records"]):
            fail(f"kafka: consumed {len(records)} of {len(state['records'])} records")
    deserialized = 0
    for b, v in zip(records, state["values"]):
        if de(b, ctx) != v:
            fail(f"record {v} no longer deserializes")
        deserialized += 1
    if de(bytes.fromhex(state["user_record"]), SerializationContext("py-users", MessageField.VALUE)) != state["user"]:
        fail("the user record no longer deserializes")
    deserialized += 1
    # A new schema after the restart gets a new id, never one already used.
    new_id = sr.register_schema("py-after-restart-value", Schema(json.dumps(
        {"type": "record", "name": "After", "fields": [{"name": "x", "type": "int"}]}), "AVRO"))
    if new_id in state["ids"]:
        fail(f"id {new_id} was reused")
    print(json.dumps({"verified": verified, "of": len(checks), "deserialized": deserialized,
                      "new_id": new_id, "kafka": bool(bootstrap)}))


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("register", "verify"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    url, mode, state_file = sys.argv[1:]
    if mode == "register":
        register(url, state_file)
    else:
        verify(url, state_file)


if __name__ == "__main__":
    main()
