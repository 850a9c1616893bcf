'use strict'
// Idempotent and transactional producers with stock kafkajs, driven by
// compat/test_transactions_kafkajs.py.
//
//   node txn.js BOOTSTRAP idempotent TOPIC
//       An idempotent producer (idempotent: true) writes numbered records to the 3
//       partitions of a new TOPIC in several sends; a consumer group reads them back.
//   node txn.js BOOTSTRAP transactions TOPIC
//       A transactional producer on a new 2-partition TOPIC: a committed transaction, an
//       aborted one, then another committed one. A read_committed consumer (kafkajs'
//       default) and a read_uncommitted one (readUncommitted: true), each in its own
//       group, read until they have the last committed transaction's records.
//   node txn.js BOOTSTRAP send_offsets TOPIC
//       Consume-transform-produce from TOPIC-in to TOPIC-out (2 partitions each) in group
//       TOPIC-app: first offsets sent to a transaction that aborts, then every input batch
//       processed in a transaction with sendOffsets and committed. Reports the group's
//       committed offsets (admin fetchOffsets) after each phase and the output as a
//       read_committed consumer sees it.
//
// Prints one JSON object on stdout (kafkajs' log goes to stderr): each step's result or
// {"error": ...}; the Python test does the asserting.
//
// kafkajs 2.2.4 speaks InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
// TxnOffsetCommit and EndTxn v0-v1 only; an idempotent producer asks the controller
// (Metadata's controller id) for its producer id, a transactional one its coordinator
// (FindCoordinator key type 1).

const kafkajs = require('kafkajs')

const { errorOf, newKafka: kafkaFor } = require('./common')

const newKafka = (bootstrap, clientId) => kafkaFor(bootstrap, { clientId, retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 } })

async function step(out, name, fn) {
  try {
    out[name] = await fn()
  } catch (e) {
    out[name] = errorOf(e)
  }
  return out[name]
}

const failed = v => v && typeof v === 'object' && 'error' in v

async function createTopics(kafka, topics, partitions) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const created = await admin.createTopics({
      waitForLeaders: true,
      timeout: 10000,
      topics: topics.map(topic => ({ topic, numPartitions: partitions, replicationFactor: 1 })),
    })
    return { created }
  } finally {
    await admin.disconnect()
  }
}

/** Sends {partition: [value, ...]} in one send; returns [{partition, offset, value}]. */
async function sendValues(sender, topic, valuesByPartition) {
  const messages = []
  for (const [partition, values] of Object.entries(valuesByPartition)) {
    values.forEach((value, i) => messages.push({ partition: Number(partition), key: `k${i}`, value }))
  }
  const meta = await sender.send({ topic, acks: -1, timeout: 10000, messages })
  const acked = []
  for (const [partition, values] of Object.entries(valuesByPartition)) {
    const m = meta.find(x => x.partition === Number(partition))
    if (!m || m.errorCode !== 0) throw new Error(`partition ${partition}: ${JSON.stringify(m)}`)
    values.forEach((value, i) => acked.push({ partition: Number(partition), offset: Number(m.baseOffset) + i, value }))
  }
  return acked
}

function valuesFor(tag, partitions, perPartition) {
  const out = {}
  for (let p = 0; p < partitions; p++) {
    out[p] = []
    for (let i = 0; i < perPartition; i++) out[p].push(`${tag}-p${p}-${i}`)
  }
  return out
}

/**
 * A consumer in `groupId` reading `topic` from the beginning until `done(records)`, then
 * half a second more (to catch anything extra); returns [{p, o, v}] in delivery order.
 */
async function consumeUntil(kafka, { groupId, topic, readUncommitted = false, done, timeoutMs = 30000 }) {
  const consumer = kafka.consumer({
    groupId,
    readUncommitted,
    sessionTimeout: 6000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 100,
    allowAutoTopicCreation: false,
  })
  const records = []
  let crashed = null
  await consumer.connect()
  try {
    consumer.on(consumer.events.CRASH, ({ payload }) => { crashed = `${payload.error}` })
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        records.push({ p: partition, o: Number(message.offset), v: message.value.toString() })
      },
    })
    const deadline = Date.now() + timeoutMs
    while (!done(records)) {
      if (crashed) throw new Error(`consumer crashed: ${crashed}; records so far ${JSON.stringify(records)}`)
      if (Date.now() > deadline) throw new Error(`timed out; records so far: ${JSON.stringify(records)}`)
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    await new Promise(resolve => setTimeout(resolve, 500))
    return records.slice()
  } finally {
    await consumer.disconnect()
  }
}

const hasAll = want => records => {
  const seen = new Set(records.map(r => r.v))
  return want.every(v => seen.has(v))
}

// ------------------------------------------------------------------------- modes

async function idempotent(bootstrap, topic) {
  const out = {}
  const kafka = newKafka(bootstrap, 'kafkajs-idempotent')
  if (failed(await step(out, 'create', () => createTopics(kafka, [topic], 3)))) return out
  const SENDS = 20
  const PER = 10 // per partition per send
  out.expected = {}
  await step(out, 'produce', async () => {
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
    await producer.connect()
    try {
      const acked = []
      for (let s = 0; s < SENDS; s++) {
        const vals = {}
        for (let p = 0; p < 3; p++) {
          vals[p] = []
          for (let i = 0; i < PER; i++) vals[p].push(`s${s}-p${p}-${i}`)
          out.expected[p] = (out.expected[p] || []).concat(vals[p])
        }
        acked.push(...await sendValues(producer, topic, vals))
      }
      return { acked }
    } finally {
      await producer.disconnect()
    }
  })
  if (failed(out.produce)) return out
  const all = [].concat(...Object.values(out.expected))
  await step(out, 'consume', () => consumeUntil(kafka, { groupId: `${topic}-reader`, topic, done: hasAll(all) }))
  return out
}

async function transactions(bootstrap, topic) {
  const out = {}
  const kafka = newKafka(bootstrap, 'kafkajs-transactions')
  if (failed(await step(out, 'create', () => createTopics(kafka, [topic], 2)))) return out
  out.txns = [
    { outcome: 'commit', values: valuesFor('t0-commit', 2, 6) },
    { outcome: 'abort', values: valuesFor('t1-abort', 2, 6) },
    { outcome: 'commit', values: valuesFor('t2-commit', 2, 6) },
  ]
  await step(out, 'produce', async () => {
    const producer = kafka.producer({
      transactionalId: `${topic}-txn`,
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
    })
    await producer.connect()
    try {
      const acked = []
      for (const { outcome, values } of out.txns) {
        const txn = await producer.transaction()
        // Two sends per transaction.
        const half = {}
        const rest = {}
        for (const [p, vs] of Object.entries(values)) {
          half[p] = vs.slice(0, 3)
          rest[p] = vs.slice(3)
        }
        acked.push(...await sendValues(txn, topic, half))
        acked.push(...await sendValues(txn, topic, rest))
        if (outcome === 'commit') await txn.commit()
        else await txn.abort()
      }
      return { acked }
    } finally {
      await producer.disconnect()
    }
  })
  if (failed(out.produce)) return out
  const last = [].concat(...Object.values(out.txns[2].values))
  await step(out, 'read_committed', () =>
    consumeUntil(kafka, { groupId: `${topic}-committed`, topic, done: hasAll(last) }))
  await step(out, 'read_uncommitted', () =>
    consumeUntil(kafka, { groupId: `${topic}-uncommitted`, topic, readUncommitted: true, done: hasAll(last) }))
  return out
}

async function sendOffsets(bootstrap, topic) {
  const out = {}
  const src = `${topic}-in`
  const dst = `${topic}-out`
  const groupId = `${topic}-app`
  const PER = 40
  const kafka = newKafka(bootstrap, 'kafkajs-send-offsets')
  if (failed(await step(out, 'create', () => createTopics(kafka, [src, dst], 2)))) return out
  out.inputs = valuesFor('in', 2, PER)
  if (failed(await step(out, 'write_input', async () => {
    const producer = kafka.producer({ allowAutoTopicCreation: false })
    await producer.connect()
    try {
      return { acked: await sendValues(producer, src, out.inputs) }
    } finally {
      await producer.disconnect()
    }
  }))) return out

  const producer = kafka.producer({
    transactionalId: `${topic}-txn`,
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
  })
  const admin = kafka.admin()
  if (failed(await step(out, 'connect', async () => {
    await admin.connect()
    await producer.connect() // an idempotent producer's InitProducerId
    return { ok: true }
  }))) {
    await admin.disconnect()
    return out
  }
  const fetchOffsets = async () => {
    const [t] = await admin.fetchOffsets({ groupId, topics: [src] })
    return t.partitions.map(p => ({ partition: p.partition, offset: Number(p.offset) }))
  }
  try {
    // Offsets sent to a transaction that aborts are not committed.
    await step(out, 'aborted_send_offsets', async () => {
      const txn = await producer.transaction()
      await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: src, partitions: [{ partition: 0, offset: '7' }, { partition: 1, offset: '9' }] }] })
      await txn.abort()
      return { ok: true }
    })
    await step(out, 'offsets_after_abort', fetchOffsets)

    await step(out, 'transform', async () => {
      const consumer = kafka.consumer({
        groupId,
        sessionTimeout: 6000,
        rebalanceTimeout: 10000,
        heartbeatInterval: 500,
        maxWaitTimeInMs: 100,
        allowAutoTopicCreation: false,
      })
      let processed = 0
      let transactions = 0
      let failure = null
      await consumer.connect()
      try {
        consumer.on(consumer.events.CRASH, ({ payload }) => { failure = failure || `${payload.error}` })
        await consumer.subscribe({ topics: [src], fromBeginning: true })
        await consumer.run({
          autoCommit: false,
          eachBatchAutoResolve: false,
          eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
            if (batch.messages.length === 0) return
            const txn = await producer.transaction()
            try {
              await txn.send({
                topic: dst,
                acks: -1,
                messages: batch.messages.map(m => ({
                  partition: batch.partition,
                  key: m.key,
                  value: Buffer.concat([Buffer.from('out-'), m.value]),
                })),
              })
              const next = Number(batch.messages[batch.messages.length - 1].offset) + 1
              await txn.sendOffsets({
                consumerGroupId: groupId,
                topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: String(next) }] }],
              })
              await txn.commit()
            } catch (e) {
              failure = failure || `${e && e.name}: ${e && e.message}`
              if (txn.isActive()) await txn.abort().catch(() => {})
              throw e
            }
            for (const m of batch.messages) resolveOffset(m.offset)
            await heartbeat()
            processed += batch.messages.length
            transactions += 1
          },
        })
        const deadline = Date.now() + 40000
        while (processed < 2 * PER) {
          if (failure) throw new Error(failure)
          if (Date.now() > deadline) throw new Error(`processed ${processed} of ${2 * PER}`)
          await new Promise(resolve => setTimeout(resolve, 50))
        }
        return { processed, transactions }
      } finally {
        await consumer.disconnect()
      }
    })
    // The offsets become visible once the transaction's markers are written (Kafka does
    // that after EndTxn has answered): wait for them, bounded.
    await step(out, 'offsets_after_commit', async () => {
      const deadline = Date.now() + 10000
      let offsets = await fetchOffsets()
      while (offsets.some(o => o.offset < PER) && Date.now() < deadline) {
        await new Promise(resolve => setTimeout(resolve, 100))
        offsets = await fetchOffsets()
      }
      return offsets
    })
  } finally {
    await producer.disconnect()
    await admin.disconnect()
  }
  const want = [].concat(...Object.values(out.inputs)).map(v => `out-${v}`)
  await step(out, 'output', () => consumeUntil(kafka, { groupId: `${topic}-out-reader`, topic: dst, done: hasAll(want) }))
  return out
}

async function main() {
  const [bootstrap, mode, topic] = process.argv.slice(2)
  if (!bootstrap || !mode || !topic) {
    process.stderr.write('usage: node txn.js BOOTSTRAP idempotent|transactions|send_offsets TOPIC\n')
    process.exit(2)
  }
  let out
  if (mode === 'idempotent') out = await idempotent(bootstrap, topic)
  else if (mode === 'transactions') out = await transactions(bootstrap, topic)
  else if (mode === 'send_offsets') out = await sendOffsets(bootstrap, topic)
  else throw new Error(`unknown mode ${mode}`)
  await new Promise(resolve => process.stdout.write(JSON.stringify(out) + '\n', resolve))
}

main().then(
  () => process.exit(0),
  e => {
    process.stderr.write(`fatal: ${e && e.stack}\n`)
    process.exit(1)
  }
)
