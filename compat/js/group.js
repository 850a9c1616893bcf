'use strict'
// Consumer groups with stock kafkajs, driven by compat/test_groups_kafkajs.py.
//
//   node group.js BOOTSTRAP member TOPIC GROUP NAME SESSION_MS
//       One member of GROUP (kafkajs' Consumer, autoCommit) subscribed to TOPIC from the
//       beginning. Prints one JSON object per line on stdout:
//         {"ev":"assigned","partitions":[..],"member":ID,"leader":bool}  (GROUP_JOIN)
//         {"ev":"record","p":P,"o":O,"v":VALUE}                         (eachMessage)
//         {"ev":"error","error":...}                                     (CRASH, errors)
//         {"ev":"closed"}                                                (after disconnect)
//       Closing stdin disconnects the consumer (LeaveGroup) and exits.
//   node group.js BOOTSTRAP admin TOPIC GROUP STEP[,STEP...]
//       kafkajs' admin, steps in order: list, describe, offsets, delete. Prints one JSON
//       object with what each step returned (or {"error": ...}).
//
// kafkajs picks the newest version both sides know: FindCoordinator v2, JoinGroup v5,
// SyncGroup v3, Heartbeat v3, LeaveGroup v3, OffsetCommit v5, OffsetFetch v4,
// ListGroups v2, DescribeGroups v2, DeleteGroups v1.

const kafkajs = require('kafkajs')
const { AssignerProtocol } = kafkajs

const { errorOf, newKafka: kafkaFor } = require('./common')

// Enough retries to ride over a broker restart of a few seconds.
const newKafka = (bootstrap, clientId) => kafkaFor(bootstrap, { clientId, retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 2000 } })

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

async function member(bootstrap, topic, groupId, name, sessionTimeout) {
  const kafka = newKafka(bootstrap, `kafkajs-${name}`)
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout,
    rebalanceTimeout: 20000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 100,
    allowAutoTopicCreation: false,
    retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 2000 },
  })
  const { GROUP_JOIN, CRASH } = consumer.events
  consumer.on(GROUP_JOIN, ({ payload }) => {
    emit({
      ev: 'assigned',
      partitions: payload.memberAssignment[topic] || [],
      member: payload.memberId,
      leader: payload.isLeader,
      protocol: payload.groupProtocol,
    })
  })
  consumer.on(CRASH, ({ payload }) => emit({ ev: 'error', error: `${payload.error}`, restart: payload.restart }))

  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    try {
      await consumer.disconnect()
      emit({ ev: 'closed' })
    } catch (e) {
      emit({ ev: 'error', ...errorOf(e) })
    }
    // stdout is a pipe: exit once everything has been written.
    process.stdout.write('', () => process.exit(0))
  }
  process.stdin.on('end', stop)
  process.stdin.on('error', stop)
  process.stdin.resume()

  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    // Resolved offsets are committed after every batch, before a rebalance and on
    // disconnect.
    autoCommit: true,
    eachMessage: async ({ partition, message }) => {
      emit({ ev: 'record', p: partition, o: Number(message.offset), v: message.value.toString() })
    },
  })
}

async function admin(bootstrap, topic, groupId, steps) {
  const kafka = newKafka(bootstrap, 'kafkajs-group-admin')
  const adm = kafka.admin()
  await adm.connect()
  const out = {}
  try {
    for (const step of steps) {
      try {
        if (step === 'list') {
          out.list = (await adm.listGroups()).groups
        } else if (step === 'describe') {
          const { groups } = await adm.describeGroups([groupId])
          out.describe = groups.map(g => ({
            groupId: g.groupId,
            errorCode: g.errorCode,
            state: g.state,
            protocolType: g.protocolType,
            protocol: g.protocol,
            members: g.members.map(m => {
              const assignment = m.memberAssignment && m.memberAssignment.length
                ? AssignerProtocol.MemberAssignment.decode(m.memberAssignment) : null
              const metadata = m.memberMetadata && m.memberMetadata.length
                ? AssignerProtocol.MemberMetadata.decode(m.memberMetadata) : null
              return {
                memberId: m.memberId,
                clientId: m.clientId,
                clientHost: m.clientHost,
                topics: metadata && metadata.topics,
                assignment: assignment && assignment.assignment,
              }
            }),
          }))
        } else if (step === 'offsets') {
          const res = await adm.fetchOffsets({ groupId, topics: [topic] })
          out.offsets = res
        } else if (step === 'delete') {
          out.delete = await adm.deleteGroups([groupId])
        } else {
          throw new Error(`unknown step ${step}`)
        }
      } catch (e) {
        out[step] = { ...errorOf(e), errors: e.groups || e.errors }
      }
    }
  } finally {
    await adm.disconnect()
  }
  return out
}

async function main() {
  const [bootstrap, mode, topic, groupId, ...rest] = process.argv.slice(2)
  if (!bootstrap || !mode || !topic || !groupId) {
    process.stderr.write('usage: node group.js BOOTSTRAP member|admin TOPIC GROUP ...\n')
    process.exit(2)
  }
  if (mode === 'member') {
    const [name, session] = rest
    await member(bootstrap, topic, groupId, name, Number(session || 6000))
    return // runs until stdin is closed
  }
  if (mode === 'admin') {
    const out = await admin(bootstrap, topic, groupId, (rest[0] || 'list,describe,offsets').split(','))
    await new Promise(resolve => process.stdout.write(JSON.stringify(out) + '\n', resolve))
    process.exit(0)
  }
  throw new Error(`unknown mode ${mode}`)
}

main().catch(e => {
  emit({ ev: 'error', ...errorOf(e) })
  process.stderr.write(`fatal: ${e && e.stack}\n`)
  process.exit(1)
})
