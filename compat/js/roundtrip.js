'use strict'
// End-to-end scenario with stock kafkajs, driven by compat/test_kafkajs.py.
//
//   node roundtrip.js BOOTSTRAP scenario TOPIC   create, produce in every codec, read back,
//                                                list offsets, describe configs, delete
//   node roundtrip.js BOOTSTRAP produce TOPIC    produce the same records to an existing topic
//   node roundtrip.js BOOTSTRAP consume TOPIC    read every record of an existing topic
//
// Prints one JSON object on stdout (kafkajs' own log goes to stderr). Every step records
// what the client saw, or {"error": ...}; the Python test does the asserting.
//
// Reading: kafkajs' Consumer always joins a consumer group, which the broker does not
// implement yet, so records are read with kafkajs' own Cluster and Broker classes
// (kafkajs/src/cluster): metadata gives the leader of each partition and Broker.fetch()
// sends a Fetch request that kafkajs encodes and decodes (decompression included) exactly
// as its Consumer does.

const kafkajs = require('kafkajs')
const Cluster = require('kafkajs/src/cluster')
const { createLogger, LEVELS } = require('kafkajs/src/loggers')
const socketFactory = require('kafkajs/src/network/socketFactory')
const codecs = require('./codecs')

const { CompressionTypes } = kafkajs

const PARTITIONS = 3
const RECORDS_PER_CODEC = 12
const CODECS = ['none', 'gzip', 'snappy', 'lz4', 'zstd']
const CODEC_TYPES = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}
// Set at creation; the test expects them back from DescribeConfigs.
const CREATE_CONFIGS = { 'max.message.bytes': '2097152', 'retention.bytes': '1073741824' }

const { stderrLogCreator, errorOf, newKafka } = require('./common')

const hex = b => (b === null || b === undefined ? null : Buffer.from(b).toString('hex'))

/**
 * The records of one codec: mostly keyed, explicit partitions round-robin, timestamps
 * strictly increasing across the whole run, headers (repeated and binary ones too), one
 * null key, one null value (tombstone), one large compressible value and one without headers.
 */
function recordsFor(codec, codecIndex, baseTs) {
  const out = []
  for (let i = 0; i < RECORDS_PER_CODEC; i++) {
    const global = codecIndex * RECORDS_PER_CODEC + i
    const key = i === RECORDS_PER_CODEC - 1 ? null : Buffer.from(`key-${codec}-${i}`)
    let value
    if (i === 1) value = null
    else if (i === 2) value = Buffer.from(`large ${codec} `.repeat(3000))
    else value = Buffer.from(`value ${codec} #${i} — grüße ✓`)
    const headers = []
    if (i !== 4) {
      headers.push(['codec', Buffer.from(codec)])
      headers.push(['index', Buffer.from(String(i))])
      headers.push(['bin', Buffer.from([0, 255, i, 10])])
      if (i % 3 === 0) headers.push(['dup', Buffer.from('first')], ['dup', Buffer.from('second')])
    }
    out.push({ codec, i, partition: i % PARTITIONS, key, value, headers, timestamp: baseTs + global * 1000 })
  }
  return out
}

function kafkajsHeaders(pairs) {
  const obj = {}
  for (const [k, v] of pairs) {
    if (obj[k] === undefined) obj[k] = v
    else if (Array.isArray(obj[k])) obj[k].push(v)
    else obj[k] = [obj[k], v]
  }
  return obj
}

function flattenHeaders(obj) {
  const pairs = []
  for (const [k, v] of Object.entries(obj || {})) {
    for (const one of Array.isArray(v) ? v : [v]) pairs.push([k, hex(one)])
  }
  return pairs
}

function newCluster(bootstrap) {
  return new Cluster({
    logger: createLogger({ level: LEVELS.WARN, logCreator: stderrLogCreator }),
    socketFactory: socketFactory(),
    brokers: [bootstrap],
    clientId: 'runnel-compat-kafkajs-reader',
    connectionTimeout: 3000,
    requestTimeout: 15000,
    enforceRequestTimeout: true,
    allowAutoTopicCreation: false,
    retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 },
    offsets: new Map(),
  })
}

/** Produces every codec's records, one send (so one batch per partition) per codec. */
async function produceAll(kafka, topic) {
  const producer = kafka.producer({ idempotent: false, allowAutoTopicCreation: false, maxInFlightRequests: 1 })
  await producer.connect()
  const baseTs = Date.now() - 2 * 3600 * 1000
  const produced = []
  const sends = {}
  try {
    for (const [ci, codec] of CODECS.entries()) {
      const records = recordsFor(codec, ci, baseTs)
      try {
        const meta = await producer.send({
          topic,
          acks: -1,
          timeout: 10000,
          compression: CODEC_TYPES[codec],
          messages: records.map(r => ({
            partition: r.partition,
            key: r.key,
            value: r.value,
            headers: kafkajsHeaders(r.headers),
            timestamp: String(r.timestamp),
          })),
        })
        sends[codec] = meta
        // Offsets: base offset of the partition's batch plus the record's place in it.
        const seen = {}
        for (const r of records) {
          const m = meta.find(x => x.partition === r.partition)
          const place = seen[r.partition] || 0
          seen[r.partition] = place + 1
          produced.push({
            codec,
            i: r.i,
            partition: r.partition,
            offset: m && m.errorCode === 0 ? Number(m.baseOffset) + place : null,
            key: hex(r.key),
            value: hex(r.value),
            headers: r.headers.map(([k, v]) => [k, hex(v)]),
            timestamp: r.timestamp,
          })
        }
      } catch (e) {
        sends[codec] = errorOf(e)
      }
    }
  } finally {
    await producer.disconnect()
  }
  return { produced, sends }
}

/** Reads every partition of `topic` from offset 0 to its high watermark. */
async function consumeAll(bootstrap, topic) {
  const cluster = newCluster(bootstrap)
  await cluster.connect()
  const result = { partitions: {}, fetches: 0 }
  try {
    await cluster.addTargetTopic(topic)
    const metadata = cluster.findTopicPartitionMetadata(topic)
    const deadline = Date.now() + 30000
    for (const { partitionId, leader } of metadata) {
      const records = []
      let offset = 0
      let highWatermark = null
      const broker = await cluster.findBroker({ nodeId: leader })
      for (let round = 0; round < 100 && Date.now() < deadline; round++) {
        const response = await broker.fetch({
          maxWaitTime: 100,
          minBytes: 1,
          maxBytes: 10 * 1024 * 1024,
          topics: [{ topic, partitions: [{ partition: partitionId, fetchOffset: String(offset), maxBytes: 1024 * 1024 }] }],
        })
        result.fetches += 1
        const p = response.responses[0].partitions[0]
        if (p.errorCode !== 0) throw new Error(`fetch error code ${p.errorCode} for partition ${partitionId}`)
        highWatermark = Number(p.highWatermark)
        for (const m of p.messages) {
          if (Number(m.offset) < offset) continue // a compressed batch comes back whole
          records.push({
            offset: Number(m.offset),
            key: hex(m.key),
            value: hex(m.value),
            headers: flattenHeaders(m.headers),
            timestamp: Number(m.timestamp),
            magic: m.magicByte,
          })
          offset = Number(m.offset) + 1
        }
        if (offset >= highWatermark) break
      }
      result.partitions[partitionId] = { highWatermark, records }
    }
  } finally {
    await cluster.disconnect()
  }
  return result
}

async function step(out, name, fn) {
  try {
    out[name] = await fn()
  } catch (e) {
    out[name] = errorOf(e)
  }
  return out[name]
}

async function scenario(bootstrap, topic) {
  const out = { topic, partitions: PARTITIONS, codecs: CODECS, created_configs: CREATE_CONFIGS }
  const kafka = newKafka(bootstrap)
  const admin = kafka.admin()
  await admin.connect()
  try {
    await step(out, 'create', async () => {
      const created = await admin.createTopics({
        waitForLeaders: true,
        timeout: 10000,
        topics: [{
          topic,
          numPartitions: PARTITIONS,
          replicationFactor: 1,
          configEntries: Object.entries(CREATE_CONFIGS).map(([name, value]) => ({ name, value })),
        }],
      })
      return { created }
    })
    await step(out, 'create_again', async () => {
      // Creating an existing topic: kafkajs returns false (TOPIC_ALREADY_EXISTS is not an error for it).
      const created = await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], timeout: 10000 })
      return { created }
    })
    await step(out, 'list_after_create', async () => ({ topics: await admin.listTopics() }))
    await step(out, 'metadata', async () => {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
      return topics.map(t => ({ name: t.name, partitions: t.partitions.map(p => ({ partitionId: p.partitionId, leader: p.leader, replicas: p.replicas, isr: p.isr, partitionErrorCode: p.partitionErrorCode })) }))
    })

    await step(out, 'produce', () => produceAll(kafka, topic))
    await step(out, 'consume', () => consumeAll(bootstrap, topic))
    out.codec_stats = codecs.stats

    await step(out, 'offsets', async () => admin.fetchTopicOffsets(topic))
    await step(out, 'offsets_by_timestamp', async () => {
      // Timestamps: before everything, each produced record's own, and after everything.
      const produced = (out.produce && out.produce.produced) || []
      const stamps = [0, ...produced.map(r => r.timestamp), Date.now() + 3600 * 1000]
      const answers = []
      for (const ts of stamps) answers.push({ timestamp: ts, partitions: await admin.fetchTopicOffsetsByTimestamp(topic, ts) })
      return answers
    })
    await step(out, 'offsets_by_timestamp_raw', async () => {
      // kafkajs' admin replaces "no such offset" (-1) with the latest offset; the raw answer:
      const cluster = newCluster(bootstrap)
      await cluster.connect()
      try {
        await cluster.addTargetTopic(topic)
        const partitions = cluster.findTopicPartitionMetadata(topic).map(p => ({ partition: p.partitionId }))
        const after = await cluster.fetchTopicsOffset([{ topic, fromTimestamp: Date.now() + 3600 * 1000, partitions }])
        return after[0].partitions
      } finally {
        await cluster.disconnect()
      }
    })
    await step(out, 'describe_configs', async () => {
      const all = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic }],
      })
      const some = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms', 'cleanup.policy', 'max.message.bytes'] }],
      })
      const missing = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: `${topic}-does-not-exist` }],
      }).catch(e => errorOf(e))
      return { all: all.resources, some: some.resources, missing: missing.resources || missing }
    })

    await step(out, 'delete', async () => {
      await admin.deleteTopics({ topics: [topic], timeout: 10000 })
      // Deletion may take effect asynchronously, as in Kafka: poll (bounded) the topic list.
      const deadline = Date.now() + 10000
      let topics = await admin.listTopics()
      while (topics.includes(topic) && Date.now() < deadline) {
        await new Promise(resolve => setTimeout(resolve, 200))
        topics = await admin.listTopics()
      }
      return { topics_after: topics }
    })
    await step(out, 'metadata_after_delete', async () => {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
      return { topics }
    })
  } finally {
    await admin.disconnect()
  }
  return out
}

async function main() {
  const [bootstrap, mode, topic] = process.argv.slice(2)
  if (!bootstrap || !mode || !topic) {
    process.stderr.write('usage: node roundtrip.js BOOTSTRAP scenario|produce|consume TOPIC\n')
    process.exit(2)
  }
  await codecs.register(kafkajs)
  let out
  if (mode === 'scenario') out = await scenario(bootstrap, topic)
  else if (mode === 'produce') out = await produceAll(newKafka(bootstrap), topic)
  else if (mode === 'consume') out = await consumeAll(bootstrap, topic)
  else throw new Error(`unknown mode ${mode}`)
  if (mode !== 'scenario') out.codec_stats = codecs.stats
  // stdout is a pipe: exit only once the whole JSON has been written.
  await new Promise(resolve => process.stdout.write(JSON.stringify(out) + '\n', resolve))
}

main().then(
  () => process.exit(0),
  e => {
    process.stderr.write(`fatal: ${e && e.stack}\n`)
    process.exit(1)
  }
)
