"""The capture scenario for the Python clients, run by capture.py in compat/.venv:

    python py_clients.py CLIENT BOOTSTRAP TOPIC GROUP     CLIENT: confluent-kafka,
                                                          kafka-python or aiokafka

Create TOPIC with 2 partitions (the client's admin), list topics, describe the topic's
configs; produce key-0..4 with the producer's defaults and key-5..9 with gzip (record i to
partition i % 2); then one consumer in GROUP reads the 10 records from the beginning,
commits and closes (LeaveGroup). Prints one JSON line: the client and its version, and
what was read.
"""

import asyncio
import json
import sys
import time

DEADLINE_S = 15.0
PARTITIONS = 2


def value(i):
    """Record i's value: text that gzip shrinks (librdkafka and kafka-python send a batch
    uncompressed when compressing would not make it smaller)."""
    return f"value {i}: " + "the quick brown fox jumps over the lazy dog; " * 4


def records(first, n=5):
    return [(i, f"key-{i}".encode(), value(i).encode()) for i in range(first, first + n)]


def confluent_kafka(bootstrap, topic, group):
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "capture-confluent-kafka-admin"})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                        operation_timeout=10)[topic].result(timeout=DEADLINE_S)
    topics = admin.list_topics(timeout=DEADLINE_S).topics
    for fut in admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values():
        fut.result(timeout=DEADLINE_S)
    del admin

    acked = []
    for extra, batch in (({}, records(0)), ({"compression.type": "gzip"}, records(5))):
        p = ck.Producer({"bootstrap.servers": bootstrap, "client.id": "capture-confluent-kafka-producer", **extra})

        def delivered(err, msg):
            if err is not None:
                raise RuntimeError(f"delivery failed: {err}")
            acked.append((msg.partition(), msg.offset()))

        for i, key, value in batch:
            p.produce(topic, key=key, value=value, partition=i % PARTITIONS, on_delivery=delivered)
        if p.flush(DEADLINE_S) != 0:
            raise RuntimeError("producer flush timed out")
        del p

    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "capture-confluent-kafka-consumer",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise RuntimeError(f"consume: {m.error()}")
        got.append((m.partition(), m.offset(), m.key().decode()))
    c.commit(asynchronous=False)
    c.close()
    return {"client": f"confluent-kafka {ck.__version__} / librdkafka {ck.libversion()[0]}",
            "topics": sorted(t for t in topics if t == topic), "acked": len(acked), "consumed": got}


def kafka_python(bootstrap, topic, group):
    import kafka
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="capture-kafka-python-admin")
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                        timeout_ms=10000, wait_for_metadata=True)
    topics = admin.list_topics()
    admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    admin.close()

    acked = []
    for extra, batch in (({}, records(0)), ({"compression_type": "gzip"}, records(5))):
        p = KafkaProducer(bootstrap_servers=bootstrap, client_id="capture-kafka-python-producer", **extra)
        futures = [p.send(topic, key=key, value=value, partition=i % PARTITIONS) for i, key, value in batch]
        p.flush(timeout=DEADLINE_S)
        acked += [(md.partition, md.offset) for md in (f.get(timeout=DEADLINE_S) for f in futures)]
        p.close(timeout=10)

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id="capture-kafka-python-consumer",
                      auto_offset_reset="earliest", enable_auto_commit=False)
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 10 and time.monotonic() < deadline:
        for msgs in c.poll(timeout_ms=500).values():
            got += [(m.partition, m.offset, m.key.decode()) for m in msgs]
    c.commit()
    c.close()
    return {"client": f"kafka-python {kafka.__version__}", "topics": sorted(t for t in topics if t == topic),
            "acked": len(acked), "consumed": got}


def aiokafka(bootstrap, topic, group):
    import aiokafka as ak
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def scenario():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="capture-aiokafka-admin")
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)], timeout_ms=10000)
            topics = await admin.list_topics()
            await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()

        acked = []
        for extra, batch in (({}, records(0)), ({"compression_type": "gzip"}, records(5))):
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="capture-aiokafka-producer", **extra)
            await p.start()
            try:
                futures = [await p.send(topic, key=key, value=value, partition=i % PARTITIONS) for i, key, value in batch]
                acked += [(md.partition, md.offset) for md in await asyncio.gather(*futures)]
            finally:
                await p.stop()

        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id="capture-aiokafka-consumer",
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        got = []
        try:
            deadline = time.monotonic() + DEADLINE_S
            while len(got) < 10 and time.monotonic() < deadline:
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    got += [(m.partition, m.offset, m.key.decode()) for m in msgs]
            await c.commit()
        finally:
            await c.stop()
        return {"client": f"aiokafka {ak.__version__}", "topics": sorted(t for t in topics if t == topic),
                "acked": len(acked), "consumed": got}

    return asyncio.run(asyncio.wait_for(scenario(), 50))


SCENARIOS = {"confluent-kafka": confluent_kafka, "kafka-python": kafka_python, "aiokafka": aiokafka}

if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] not in SCENARIOS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(SCENARIOS)}}} BOOTSTRAP TOPIC GROUP")
    client, bootstrap, topic, group = sys.argv[1:]
    result = SCENARIOS[client](bootstrap, topic, group)
    if len(result["consumed"]) != 10:
        sys.exit(f"read {len(result['consumed'])} records, not 10: {result}")
    print(json.dumps(result))
