'use strict'
// The capture scenario for kafkajs, run by protocol-tests/capture/capture.py with
// NODE_PATH=compat/js/node_modules:
//
//   node kafkajs.js BOOTSTRAP TOPIC GROUP
//
// admin: createTopics (2 partitions), listTopics, describeConfigs of TOPIC; one producer
// with kafkajs' defaults sends key-0..4, then key-5..9 with CompressionTypes.GZIP (record i
// to partition i % 2); one consumer in GROUP reads the 10 records from the beginning
// (autoCommit off), commits them with commitOffsets and disconnects (LeaveGroup). Prints
// one JSON line: the client and its version, and what was read. kafkajs logs to stderr.

const { Kafka, logLevel, CompressionTypes, ConfigResourceTypes } = require('kafkajs')
const { version } = require('kafkajs/package.json')

const DEADLINE_MS = 15000

// Record i's value, the same for every client: text that gzip shrinks.
const value = i => `value ${i}: ` + 'the quick brown fox jumps over the lazy dog; '.repeat(4)

async function main(bootstrap, topic, groupId) {
  const kafka = new Kafka({
    clientId: 'capture-kafkajs',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, label, log }) =>
      process.stderr.write(`${label} [${namespace}] ${JSON.stringify(log)}\n`),
  })

  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: 2, replicationFactor: 1 }], waitForLeaders: true })
  const topics = await admin.listTopics()
  await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false })
  await admin.disconnect()

  const messages = first => [0, 1, 2, 3, 4].map(n => first + n)
    .map(i => ({ key: `key-${i}`, value: value(i), partition: i % 2 }))
  const producer = kafka.producer()
  await producer.connect()
  const acked = []
  acked.push(...await producer.send({ topic, messages: messages(0) }))
  acked.push(...await producer.send({ topic, messages: messages(5), compression: CompressionTypes.GZIP }))
  await producer.disconnect()

  const consumer = kafka.consumer({ groupId })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  const got = []
  const next = {}
  let done
  const allRead = new Promise(resolve => { done = resolve })
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      got.push([partition, Number(message.offset), message.key.toString()])
      next[partition] = String(Number(message.offset) + 1)
      if (got.length >= 10) done()
    },
  })
  const timer = setTimeout(done, DEADLINE_MS)
  await allRead
  clearTimeout(timer)
  await consumer.commitOffsets(Object.entries(next).map(([partition, offset]) => ({ topic, partition: Number(partition), offset })))
  await consumer.disconnect()

  return { client: `kafkajs ${version} (node ${process.versions.node})`, topics: topics.filter(t => t === topic), acked_partitions: acked.length, consumed: got }
}

const [bootstrap, topic, group] = process.argv.slice(2)
main(bootstrap, topic, group).then(result => {
  if (result.consumed.length !== 10) {
    process.stderr.write(`read ${result.consumed.length} records, not 10\n`)
    process.exitCode = 1
  }
  process.stdout.write(JSON.stringify(result) + '\n')
}, e => {
  process.stderr.write(`${e && e.stack}\n`)
  process.exitCode = 1
})
