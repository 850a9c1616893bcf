"""aiokafka (asyncio, pure Python) against the real broker: every compression codec with
keys, headers and explicit timestamps; a consumer group that commits and a second member
of it that resumes from the commit; an idempotent producer; a transactional producer whose
aborted records a read_committed consumer never sees."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from conftest import CODECS, Got, check_consumed, make_records

pytestmark = pytest.mark.timeout(120)  # pytest-timeout: a hard limit per test on top of the client timeouts

PARTITIONS = 3
PER_CODEC = 40


async def create_topic(bootstrap, name, partitions=PARTITIONS):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap, topic, records, **config):
    """Sends `records`; returns {index: (partition, offset)} from the acknowledgements."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, **config)
    await p.start()
    try:
        futures = [(rec, await p.send(topic, value=rec.value, key=rec.key, partition=rec.partition,
                                      timestamp_ms=rec.timestamp, headers=list(rec.headers)))
                   for rec in records]
        return {rec.index: ((md := await f).partition, md.offset) for rec, f in futures}
    finally:
        await p.stop()


async def consume(consumer, n, timeout=20.0):
    got = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < n:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"consumed {len(got)} of {n} records"
        batches = await consumer.getmany(timeout_ms=min(500, int(left * 1000)))
        for msgs in batches.values():
            got += [Got(m.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp) for m in msgs]
    return got


def test_aiokafka_every_codec_round_trips_through_a_committing_group(broker):
    async def main():
        topic, group = "aio-codecs", "aio-group"
        await create_topic(broker.bootstrap, topic)
        expected = make_records(PER_CODEC * len(CODECS), "aio", PARTITIONS)
        delivered = {}
        for n, codec in enumerate(CODECS):
            delivered.update(await produce(broker.bootstrap, topic, expected[n * PER_CODEC:(n + 1) * PER_CODEC],
                                           compression_type=None if codec == "none" else codec))

        c = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        try:
            got = await consume(c, len(expected))
            check_consumed(expected, delivered, got)
            await c.commit()
            committed = {p: await c.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
        finally:
            await c.stop()
        per_partition = {p: sum(1 for r in expected if r.partition == p) for p in range(PARTITIONS)}
        assert committed == per_partition

        # More records; a new member of the group starts where the commit left off.
        more = make_records(12, "aio-more", PARTITIONS)
        acks = await produce(broker.bootstrap, topic, more)
        c2 = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                              auto_offset_reset="earliest", enable_auto_commit=False)
        await c2.start()
        try:
            got = await consume(c2, len(more))
        finally:
            await c2.stop()
        check_consumed(more, acks, got, start_offsets=per_partition)

    asyncio.run(main())


def test_aiokafka_idempotent_and_transactional_producers(broker):
    async def main():
        topic = "aio-txn"
        await create_topic(broker.bootstrap, topic, partitions=1)
        idem = make_records(10, "aio-idem", 1)
        acks = await produce(broker.bootstrap, topic, idem, enable_idempotence=True)
        assert sorted(o for _, o in acks.values()) == list(range(10))

        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="aio-tx")
        await p.start()
        try:
            async with p.transaction():
                for i in range(5):
                    await p.send(topic, value=f"committed-{i}".encode())
            await p.begin_transaction()
            for i in range(5):
                await p.send(topic, value=f"aborted-{i}".encode())
            await p.abort_transaction()
            async with p.transaction():
                await p.send(topic, value=b"committed-last")
        finally:
            await p.stop()

        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                             auto_offset_reset="earliest", isolation_level="read_committed")
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            values = []
            deadline = asyncio.get_running_loop().time() + 20
            while len(values) < 16 and asyncio.get_running_loop().time() < deadline:
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    values += [m.value for m in msgs]
        finally:
            await c.stop()
        assert values[:10] == [r.value for r in idem]
        assert values[10:] == [f"committed-{i}".encode() for i in range(5)] + [b"committed-last"]

    asyncio.run(main())
