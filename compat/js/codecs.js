'use strict'
// Compression codecs for kafkajs, which ships only gzip. All pure JavaScript or WASM
// (no native addons): snappyjs for raw snappy blocks with the xerial framing that Kafka's
// Java client writes done here, lz4js for LZ4 blocks inside an LZ4 frame written here, and
// @bokuweb/zstd-wasm for zstd. Each codec counts its calls so the test can tell that
// batches really went out compressed and came back compressed from the broker.

const zlib = require('zlib')
const { promisify } = require('util')
const SnappyJS = require('snappyjs')
const lz4js = require('lz4js')
const xxh32 = require('lz4js/xxh32')
const zstd = require('@bokuweb/zstd-wasm')

const stats = {}
const count = (codec, what) => {
  stats[codec] = stats[codec] || { compress: 0, decompress: 0 }
  stats[codec][what] += 1
}

const toBuffer = u8 => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength)

// --- snappy: xerial framing (what Kafka's Java producer sends); raw snappy is also read,
// since some clients (sarama) send unframed blocks.
const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00])
const XERIAL_BLOCK = 32 * 1024

function snappyCompress(input) {
  const parts = []
  const header = Buffer.alloc(16)
  XERIAL_MAGIC.copy(header, 0)
  header.writeInt32BE(1, 8) // version
  header.writeInt32BE(1, 12) // minimum compatible version
  parts.push(header)
  for (let start = 0; start < input.length || start === 0; start += XERIAL_BLOCK) {
    const block = toBuffer(SnappyJS.compress(input.subarray(start, start + XERIAL_BLOCK)))
    const len = Buffer.alloc(4)
    len.writeInt32BE(block.length, 0)
    parts.push(len, block)
    if (input.length === 0) break
  }
  return Buffer.concat(parts)
}

function snappyDecompress(input) {
  if (input.length >= 16 && input.subarray(0, 8).equals(XERIAL_MAGIC)) {
    const parts = []
    let pos = 16
    while (pos < input.length) {
      if (pos + 4 > input.length) throw new Error('truncated xerial snappy chunk length')
      const len = input.readInt32BE(pos)
      pos += 4
      if (len < 0 || pos + len > input.length) throw new Error('truncated xerial snappy chunk')
      parts.push(toBuffer(SnappyJS.uncompress(input.subarray(pos, pos + len))))
      pos += len
    }
    return Buffer.concat(parts)
  }
  return toBuffer(SnappyJS.uncompress(input))
}

// --- LZ4 frame format (KIP-57: a correct header checksum), 64 KiB independent blocks,
// no block or content checksums, as Kafka's Java producer writes.
const LZ4_MAGIC = 0x184d2204
const LZ4_BLOCK = 64 * 1024

function lz4Compress(input) {
  const header = Buffer.alloc(7)
  header.writeUInt32LE(LZ4_MAGIC, 0)
  header[4] = 0x60 // version 01, independent blocks
  header[5] = 0x40 // maximum block size 64 KiB
  header[6] = (xxh32.hash(0, header, 4, 2) >> 8) & 0xff
  const parts = [header]
  const scratch = new Uint8Array(lz4js.compressBound(LZ4_BLOCK))
  for (let start = 0; start < input.length; start += LZ4_BLOCK) {
    const block = new Uint8Array(input.subarray(start, start + LZ4_BLOCK)) // block-local indices
    const size = lz4js.compressBlock(block, scratch, 0, block.length, new Uint32Array(1 << 16))
    const len = Buffer.alloc(4)
    if (size === 0 || size >= block.length) {
      len.writeUInt32LE((0x80000000 | block.length) >>> 0, 0)
      parts.push(len, Buffer.from(block))
    } else {
      len.writeUInt32LE(size, 0)
      parts.push(len, Buffer.from(scratch.subarray(0, size)))
    }
  }
  parts.push(Buffer.alloc(4)) // end mark
  return Buffer.concat(parts)
}

function lz4Decompress(input) {
  return toBuffer(lz4js.decompress(new Uint8Array(input)))
}

// --- zstd (WASM build of libzstd)
function zstdCompress(input) {
  return toBuffer(zstd.compress(input, 3))
}

function zstdDecompress(input) {
  return toBuffer(zstd.decompress(input, { defaultHeapSize: 16 * 1024 * 1024 }))
}

const gzip = promisify(zlib.gzip)
const unzip = promisify(zlib.unzip)

const codecs = {
  gzip: { compress: b => gzip(b), decompress: b => unzip(b) },
  snappy: { compress: snappyCompress, decompress: snappyDecompress },
  lz4: { compress: lz4Compress, decompress: lz4Decompress },
  zstd: { compress: zstdCompress, decompress: zstdDecompress },
}

/** Registers the four codecs (gzip is wrapped only to be counted) with kafkajs. */
async function register(kafkajs) {
  await zstd.init()
  const { CompressionCodecs, CompressionTypes } = kafkajs
  const types = {
    gzip: CompressionTypes.GZIP,
    snappy: CompressionTypes.Snappy,
    lz4: CompressionTypes.LZ4,
    zstd: CompressionTypes.ZSTD,
  }
  for (const [name, codec] of Object.entries(codecs)) {
    const adapter = {
      async compress(encoder) {
        count(name, 'compress')
        return await codec.compress(encoder.buffer)
      },
      async decompress(buffer) {
        count(name, 'decompress')
        return await codec.decompress(buffer)
      },
    }
    CompressionCodecs[types[name]] = () => adapter
  }
}

module.exports = { register, stats, codecs }
