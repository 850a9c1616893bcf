// What every kafkajs driver script here shares: a kafkajs client on one bootstrap address
// logging to stderr (stdout carries the script's JSON result), and errors as JSON.

const { Kafka, logLevel } = require('kafkajs')

const stderrLogCreator = () => ({ namespace, label, log }) => {
  process.stderr.write(`${new Date().toISOString()} ${label} [${namespace}] ${JSON.stringify(log)}\n`)
}

const errorOf = e => ({ error: `${e && e.name}: ${e && e.message}`, type: e && e.type, stack: e && e.stack })

// `retry` is kafkajs's retry option; KAFKAJS_DEBUG=1 turns on debug logs.
function newKafka(bootstrap, { clientId = 'runnel-compat-kafkajs', retry = { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 } } = {}) {
  return new Kafka({
    clientId,
    brokers: [bootstrap],
    connectionTimeout: 3000,
    requestTimeout: 15000,
    retry,
    logLevel: process.env.KAFKAJS_DEBUG ? logLevel.DEBUG : logLevel.WARN,
    logCreator: stderrLogCreator,
  })
}

module.exports = { stderrLogCreator, errorOf, newKafka }
