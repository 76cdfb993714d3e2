/**
 * Hostile variations of recorded transcripts, as replay plans: bit flips, fields of the server's messages set
 * to hostile values (magic, length, cookie, offset, type, flags, error, size), truncation, duplication,
 * dropping, reordering, splices of two transcripts, inserted garbage, plausible but random replies, random
 * streams, and the pacing to deliver them (whole, random pieces, trickles, slow writes, an early reset).
 *
 * Pure and deterministic: a case is a function of the transcripts and a seed, so any run can be repeated.
 */
import type { Plan, Step, Write } from "./replay-server.js"
import { cutWrites } from "./replay-server.js"
import type { Transcript } from "./transcript.js"

// ---------------------------------------------------------------------------------------------------------------
// A small seeded generator (mulberry32): the fuzz must repeat exactly from its seed.
// ---------------------------------------------------------------------------------------------------------------

export class Rng {
  private state: number

  constructor(seed: number) {
    this.state = seed >>> 0
  }

  /** A generator for case `index` of a run with `seed`, independent of the cases before it. */
  static forCase(seed: number, index: number): Rng {
    return new Rng(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35))
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n)
  }

  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.int(max - min + 1)
  }

  chance(p: number): boolean {
    return this.next() < p
  }

  pick<A>(items: ReadonlyArray<A>): A {
    return items[this.int(items.length)]!
  }

  bytes(n: number): Uint8Array {
    return Uint8Array.from({ length: n }, () => this.int(256))
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Where the fields are in the server's answers
// ---------------------------------------------------------------------------------------------------------------

export type FieldKind = "magic" | "length" | "cookie" | "offset" | "type" | "flags" | "error" | "size" | "option" | "id"

/** A field of a server message: where it is in its exchange's answer, how wide, what it is. */
export interface Field {
  readonly at: number
  readonly size: number
  readonly kind: FieldKind
}

/** A message of an answer: where it starts and ends, and its fields. */
export interface Message {
  readonly start: number
  readonly end: number
  readonly fields: ReadonlyArray<Field>
}

const OLDSTYLE = "0000420281861253"
const REP_MAGIC = "0003e889045565a9"
const SIMPLE_REPLY = 0x67446698
const STRUCTURED_REPLY = 0x668e33ef
const EXTENDED_REPLY = 0x6e8a278c
const CMD_READ = 0

const hexAt = (b: Uint8Array, at: number, n: number): string => Buffer.from(b.subarray(at, at + n)).toString("hex")

const field = (base: number, at: number, size: number, kind: FieldKind): Field => ({ at: base + at, size, kind })

const greetingMessages = (b: Uint8Array): Array<Message> => {
  if (hexAt(b, 8, 8) === OLDSTYLE)
    return [
      {
        start: 0,
        end: b.length,
        fields: [field(0, 0, 8, "magic"), field(0, 8, 8, "magic"), field(0, 16, 8, "size"), field(0, 24, 4, "flags")]
      }
    ]
  return [
    { start: 0, end: b.length, fields: [field(0, 0, 8, "magic"), field(0, 8, 8, "magic"), field(0, 16, 2, "flags")] }
  ]
}

const optionReplyFields = (b: Uint8Array, at: number, length: number): Array<Field> => {
  const fields = [
    field(at, 0, 8, "magic"),
    field(at, 8, 4, "option"),
    field(at, 12, 4, "type"),
    field(at, 16, 4, "length")
  ]
  const type = Buffer.from(b).readUInt32BE(at + 12)
  if (type === 3 && length >= 2 && at + 22 <= b.length) {
    fields.push(field(at, 20, 2, "type"))
    const info = Buffer.from(b).readUInt16BE(at + 20)
    if (info === 0 && length === 12) fields.push(field(at, 22, 8, "size"), field(at, 30, 2, "flags"))
    if (info === 3 && length === 14)
      fields.push(field(at, 22, 4, "size"), field(at, 26, 4, "size"), field(at, 30, 4, "size"))
  }
  if ((type === 4 || type === 2) && length >= 4) fields.push(field(at, 20, 4, type === 4 ? "id" : "length"))
  // A truncated or lying answer may end before its fields do.
  return fields.filter((f) => f.at + f.size <= b.length)
}

const optionMessages = (b: Uint8Array, option: number): Array<Message> => {
  if (option === 1) return [{ start: 0, end: b.length, fields: [field(0, 0, 8, "size"), field(0, 8, 2, "flags")] }]
  const out: Array<Message> = []
  for (let at = 0; at + 20 <= b.length && hexAt(b, at, 8) === REP_MAGIC;) {
    const length = Buffer.from(b).readUInt32BE(at + 16)
    const end = Math.min(b.length, at + 20 + length)
    out.push({ start: at, end, fields: optionReplyFields(b, at, length) })
    at = end
  }
  return out
}

/** The fields of a chunk's payload at `p`, by chunk type. */
const payloadFields = (b: Uint8Array, p: number, type: number, length: number): Array<Field> => {
  const out: Array<Field> = []
  const view = Buffer.from(b)
  // The loops stop at the answer's end: a hostile length field may claim millions of descriptors.
  switch (type) {
    case 1:
      out.push(field(p, 0, 8, "offset"))
      break
    case 2:
      out.push(field(p, 0, 8, "offset"), field(p, 8, 4, "length"))
      break
    case 5:
      out.push(field(p, 0, 4, "id"))
      for (let d = 4; d + 8 <= length && p + d + 8 <= b.length; d += 8)
        out.push(field(p, d, 4, "length"), field(p, d + 4, 4, "flags"))
      break
    case 6:
      out.push(field(p, 0, 4, "id"), field(p, 4, 4, "length"))
      for (let d = 8; d + 16 <= length && p + d + 16 <= b.length; d += 16)
        out.push(field(p, d, 8, "length"), field(p, d + 8, 8, "flags"))
      break
    case 0x8001:
    case 0x8002:
      if (length >= 6) out.push(field(p, 0, 4, "error"), field(p, 4, 2, "length"))
      if (type === 0x8002 && length >= 14 && p + length <= b.length) {
        const m = view.readUInt16BE(p + 4)
        if (6 + m + 8 <= length) out.push(field(p, 6 + m, 8, "offset"))
      }
      break
  }
  return out.filter((f) => f.at + f.size <= b.length)
}

interface Request {
  readonly type: number
  readonly length: number
}

const requestOf = (client: Uint8Array): Request | undefined => {
  if (client.length < 28) return undefined
  const view = Buffer.from(client)
  const extended = view.readUInt32BE(0) === 0x21e41c71
  if (extended && client.length < 32) return undefined
  return { type: view.readUInt16BE(6), length: extended ? Number(view.readBigUInt64BE(24)) : view.readUInt32BE(24) }
}

const replyMessages = (b: Uint8Array, request: Request | undefined): Array<Message> => {
  const out: Array<Message> = []
  const view = Buffer.from(b)
  let at = 0
  while (at + 16 <= b.length) {
    const magic = view.readUInt32BE(at)
    if (magic === SIMPLE_REPLY) {
      const fields = [field(at, 0, 4, "magic"), field(at, 4, 4, "error"), field(at, 8, 8, "cookie")]
      const error = view.readUInt32BE(at + 4)
      const dataLength =
        request?.type === CMD_READ && error === 0 && b.length - at - 16 >= request.length ? request.length : 0
      out.push({ start: at, end: at + 16 + dataLength, fields })
      at += 16 + dataLength
    } else if (magic === STRUCTURED_REPLY || magic === EXTENDED_REPLY) {
      const extended = magic === EXTENDED_REPLY
      const h = extended ? 32 : 20
      if (at + h > b.length) break
      const fields = [
        field(at, 0, 4, "magic"),
        field(at, 4, 2, "flags"),
        field(at, 6, 2, "type"),
        field(at, 8, 8, "cookie"),
        ...(extended ? [field(at, 16, 8, "offset"), field(at, 24, 8, "length")] : [field(at, 16, 4, "length")])
      ]
      const length = extended ? Number(view.readBigUInt64BE(at + 24)) : view.readUInt32BE(at + 16)
      const end = Math.min(b.length, at + h + length)
      fields.push(...payloadFields(b, at + h, view.readUInt16BE(at + 6), length))
      out.push({ start: at, end, fields })
      at = end
    } else break
  }
  return out
}

/** The messages, and their fields, of one answer (as far as they parse), given the client message it answers. */
const messagesOfAnswer = (i: number, client: Uint8Array, server: Uint8Array): ReadonlyArray<Message> => {
  if (server.length === 0) return []
  if (i === 0) return greetingMessages(server)
  const c = Buffer.from(client)
  if (c.length >= 16 && c.subarray(0, 8).toString("latin1") === "IHAVEOPT")
    return optionMessages(server, c.readUInt32BE(8))
  return replyMessages(server, requestOf(client))
}

/** The messages, and their fields, of every answer of a transcript. */
export const messagesOf = (t: Transcript): ReadonlyArray<ReadonlyArray<Message>> =>
  t.exchanges.map((e, i) => messagesOfAnswer(i, e.client, e.server))

// ---------------------------------------------------------------------------------------------------------------
// Mutations of the answers
// ---------------------------------------------------------------------------------------------------------------

/** A transcript's exchanges being mutated: the client bytes to wait for, and the answer. */
interface Working {
  client: number
  server: Uint8Array
}

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => new Uint8Array(Buffer.concat(parts))

/** Values that break a field of `size` bytes in interesting ways. */
const hostileValue = (rng: Rng, kind: FieldKind, size: number, current: bigint): bigint => {
  const max = (1n << BigInt(8 * size)) - 1n
  const candidates: Array<bigint> = [0n, max, current + 1n, current - 1n, current ^ 1n, current << 1n]
  if (size >= 4) candidates.push(0x7fffffffn, 0x80000000n, 0xffffffffn, 64n * 1024n * 1024n + 9n, 1n << 20n)
  if (size === 8) candidates.push(1n << 32n, 1n << 53n, 1n << 63n, 0xffffffffn + 1n)
  if (kind === "cookie") candidates.push(0n, 2n, 3n, 7n, 100n)
  if (kind === "type") candidates.push(0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 0x8001n, 0x8002n, 0x8003n, 0x80000001n)
  if (kind === "flags") candidates.push(0n, 1n, 2n, 3n, 0xfffen)
  if (kind === "error") candidates.push(0n, 5n, 22n, 28n, 108n, 12345n)
  if (kind === "length" || kind === "size") candidates.push(1n, 4n, 7n, 8n, 9n, 12n, 4096n, 4097n)
  candidates.push(BigInt(Math.floor(rng.next() * 2 ** 32)) * BigInt(Math.floor(rng.next() * 2 ** 21)))
  return rng.pick(candidates) & max
}

const readField = (b: Uint8Array, f: Field): bigint => {
  let v = 0n
  for (let i = 0; i < f.size; i++) v = (v << 8n) | BigInt(b[f.at + i]!)
  return v
}

const writeField = (b: Uint8Array, f: Field, v: bigint): Uint8Array => {
  const out = b.slice()
  for (let i = f.size - 1; i >= 0; i--) {
    out[f.at + i] = Number(v & 0xffn)
    v >>= 8n
  }
  return out
}

/** Exchanges with an answer, by index. */
const answered = (w: ReadonlyArray<Working>): Array<number> => w.flatMap((e, i) => (e.server.length > 0 ? [i] : []))

type Mutation = (rng: Rng, w: Array<Working>, messages: ReadonlyArray<ReadonlyArray<Message>>) => string

const bitFlip: Mutation = (rng, w) => {
  const i = rng.pick(answered(w))
  const flips = rng.between(1, 3)
  const b = w[i]!.server.slice()
  for (let k = 0; k < flips; k++) {
    const at = rng.int(b.length)
    b[at] = b[at]! ^ (1 << rng.int(8))
  }
  w[i]!.server = b
  return `bit flips (${flips}) in answer ${i}`
}

const fieldChange: Mutation = (rng, w, messages) => {
  const fields = messages.flatMap((ms, i) => ms.flatMap((m) => m.fields.map((f) => ({ i, f }))))
  if (fields.length === 0) return bitFlip(rng, w, messages)
  // Weight toward the fields the issue names: magic, length, cookie, offset, type.
  const wanted = rng.pick<FieldKind | undefined>(["magic", "length", "length", "cookie", "offset", "type", undefined])
  const pool = wanted === undefined ? fields : fields.filter((x) => x.f.kind === wanted)
  const { f, i } = rng.pick(pool.length > 0 ? pool : fields)
  const server = w[i]!.server
  if (f.at + f.size > server.length) return "no field change"
  const value = hostileValue(rng, f.kind, f.size, readField(server, f))
  w[i]!.server = writeField(server, f, value)
  return `${f.kind} at ${f.at} of answer ${i} := 0x${value.toString(16)}`
}

const truncate: Mutation = (rng, w) => {
  const i = rng.pick(answered(w))
  const at = rng.int(w[i]!.server.length)
  w[i]!.server = w[i]!.server.subarray(0, at)
  w.splice(i + 1)
  return `truncated at byte ${at} of answer ${i}, then closed`
}

const pickMessage = (rng: Rng, messages: ReadonlyArray<ReadonlyArray<Message>>) => {
  const all = messages.flatMap((ms, i) => ms.map((m) => ({ i, m })))
  return all.length === 0 ? undefined : rng.pick(all)
}

const duplicate: Mutation = (rng, w, messages) => {
  const picked = pickMessage(rng, messages)
  if (picked === undefined || rng.chance(0.3)) {
    const i = rng.pick(answered(w))
    w[i]!.server = concat([w[i]!.server, w[i]!.server])
    return `answer ${i} sent twice`
  }
  const { i, m } = picked
  const s = w[i]!.server
  w[i]!.server = concat([s.subarray(0, m.end), s.subarray(m.start, m.end), s.subarray(m.end)])
  return `message ${m.start}..${m.end} of answer ${i} sent twice`
}

const drop: Mutation = (rng, w, messages) => {
  const picked = pickMessage(rng, messages)
  if (picked === undefined || rng.chance(0.3)) {
    const i = rng.pick(answered(w))
    w[i]!.server = new Uint8Array(0)
    return `answer ${i} never sent`
  }
  const { i, m } = picked
  const s = w[i]!.server
  w[i]!.server = concat([s.subarray(0, m.start), s.subarray(m.end)])
  return `message ${m.start}..${m.end} of answer ${i} dropped`
}

const reorder: Mutation = (rng, w, messages) => {
  const multi = messages.flatMap((ms, i) => (ms.length >= 2 ? [i] : []))
  if (multi.length > 0 && rng.chance(0.6)) {
    const i = rng.pick(multi)
    const ms = messages[i]!
    const s = w[i]!.server
    const parts = ms.map((m) => s.subarray(m.start, m.end))
    const a = rng.int(parts.length)
    const b = rng.int(parts.length)
    ;[parts[a], parts[b]] = [parts[b]!, parts[a]!]
    w[i]!.server = concat([s.subarray(0, ms[0]!.start), ...parts, s.subarray(ms[ms.length - 1]!.end)])
    return `messages ${a} and ${b} of answer ${i} swapped`
  }
  const list = answered(w)
  const a = rng.pick(list)
  const b = rng.pick(list)
  ;[w[a]!.server, w[b]!.server] = [w[b]!.server, w[a]!.server]
  return `answers ${a} and ${b} swapped`
}

const garbage: Mutation = (rng, w, messages) => {
  const i = rng.pick(answered(w))
  const s = w[i]!.server
  const bytes = rng.bytes(rng.between(1, 64))
  // Often right after a whole message: garbage that arrives in the same read as the last handshake reply.
  const boundaries = [0, ...messages[i]!.map((m) => m.end), s.length]
  const at = rng.chance(0.6) ? rng.pick(boundaries) : rng.int(s.length + 1)
  w[i]!.server = concat([s.subarray(0, at), bytes, s.subarray(at)])
  return `${bytes.length} garbage bytes at ${at} of answer ${i}`
}

const MUTATIONS: ReadonlyArray<readonly [string, Mutation]> = [
  ["bitflip", bitFlip],
  ["field", fieldChange],
  ["field", fieldChange],
  ["field", fieldChange],
  ["truncate", truncate],
  ["duplicate", duplicate],
  ["drop", drop],
  ["reorder", reorder],
  ["garbage", garbage]
]

// ---------------------------------------------------------------------------------------------------------------
// Plausible random replies and random streams
// ---------------------------------------------------------------------------------------------------------------

const u16 = (v: number) => Buffer.from([(v >>> 8) & 0xff, v & 0xff])
const u32 = (v: number) => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v >>> 0)
  return b
}
const u64 = (v: bigint) => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt.asUintN(64, v))
  return b
}

interface RequestHeader {
  readonly type: number
  readonly cookie: bigint
  readonly offset: bigint
  readonly length: number
}

const requestHeaderOf = (client: Uint8Array): RequestHeader | undefined => {
  const r = requestOf(client)
  if (r === undefined) return undefined
  const view = Buffer.from(client)
  return { type: r.type, cookie: view.readBigUInt64BE(8), offset: view.readBigUInt64BE(16), length: r.length }
}

/** A reply chunk that is well formed or nearly so, with fields drawn around the request's own values. */
const plausibleChunk = (rng: Rng, req: RequestHeader, extended: boolean): Uint8Array => {
  const type = rng.pick([0, 1, 1, 2, 5, 6, 0x8001, 0x8002, rng.int(0x10000)])
  const flags = rng.pick([0, 1, 1, 2, 3])
  const cookie = rng.pick([req.cookie, req.cookie, req.cookie + 1n, 0n, BigInt(rng.int(10))])
  const offset = rng.chance(0.9) ? req.offset : BigInt(rng.int(1 << 20))
  const dataOffset = req.offset + BigInt(rng.pick([0, 0, 512, -1, req.length, rng.int(req.length + 1)]))
  let payload: Buffer
  switch (type) {
    case 0:
      payload = Buffer.alloc(rng.chance(0.9) ? 0 : rng.int(8))
      break
    case 1:
      payload = Buffer.concat([u64(dataOffset), Buffer.from(rng.bytes(rng.pick([0, 1, req.length, rng.int(600)])))])
      break
    case 2:
      payload = Buffer.concat([u64(dataOffset), u32(rng.pick([0, 512, req.length, 0xffffffff, rng.int(1 << 16)]))])
      break
    case 5:
    case 6: {
      const n = rng.pick([0, 1, 1, 2, 5])
      const id = u32(rng.pick([1, 1, 0, 2, rng.int(1 << 16)]))
      const descriptors = Array.from({ length: n }, () => {
        const length = rng.pick([0, 512, 4096, req.length, 0xffffffff, rng.int(1 << 20)])
        const status = rng.pick([0, 1, 2, 3, 0xffffffff])
        return type === 5
          ? Buffer.concat([u32(length), u32(status)])
          : Buffer.concat([u64(BigInt(length)), u64(BigInt(status))])
      })
      payload = Buffer.concat([
        id,
        ...(type === 6 ? [u32(rng.chance(0.8) ? n : rng.int(1 << 20))] : []),
        ...descriptors
      ])
      break
    }
    case 0x8001:
    case 0x8002: {
      const message = Buffer.from(rng.bytes(rng.int(20)))
      const declared = rng.chance(0.8) ? message.length : rng.int(0x10000)
      payload = Buffer.concat([
        u32(rng.pick([0, 5, 22, 28, 108, rng.int(1 << 16)])),
        u16(declared),
        message,
        ...(type === 0x8002 ? [u64(dataOffset)] : [])
      ])
      break
    }
    default:
      payload = Buffer.from(rng.bytes(rng.int(32)))
  }
  const declared = rng.chance(0.92)
    ? payload.length
    : rng.pick([0, payload.length + 1, payload.length - 1, rng.int(1 << 16)])
  const header = extended
    ? Buffer.concat([
        u32(EXTENDED_REPLY),
        u16(flags),
        u16(type),
        u64(cookie),
        u64(offset),
        u64(BigInt(Math.max(0, declared)))
      ])
    : Buffer.concat([u32(STRUCTURED_REPLY), u16(flags), u16(type), u64(cookie), u32(Math.max(0, declared))])
  return concat([header, payload])
}

const plausibleSimple = (rng: Rng, req: RequestHeader): Uint8Array => {
  const error = rng.pick([0, 0, 5, 22, rng.int(1 << 16)])
  const cookie = rng.pick([req.cookie, req.cookie, req.cookie + 1n, 0n])
  const data =
    req.type === CMD_READ && error === 0
      ? rng.bytes(rng.chance(0.8) ? req.length : rng.int(req.length + 1))
      : new Uint8Array(0)
  return concat([u32(SIMPLE_REPLY), u32(error), u64(cookie), data])
}

/** The reply form a transcript's transmission uses, from the first reply's magic. */
const replyForm = (
  t: Transcript,
  messages: ReadonlyArray<ReadonlyArray<Message>>
): "simple" | "structured" | "extended" => {
  for (let i = 1; i < t.exchanges.length; i++) {
    const s = t.exchanges[i]!.server
    if (requestOf(t.exchanges[i]!.client) !== undefined && s.length >= 4 && messages[i]!.length > 0) {
      const magic = Buffer.from(s).readUInt32BE(0)
      if (magic === EXTENDED_REPLY) return "extended"
      if (magic === STRUCTURED_REPLY) return "structured"
    }
  }
  return "simple"
}

/** The transcript's handshake kept, every answer to a request replaced by one to three plausible replies. */
const plausibleReplies = (
  rng: Rng,
  t: Transcript,
  w: Array<Working>,
  messages: ReadonlyArray<ReadonlyArray<Message>>
): string => {
  const form = replyForm(t, messages)
  let replaced = 0
  t.exchanges.forEach((e, i) => {
    const req = i > 0 ? requestHeaderOf(e.client) : undefined
    if (req === undefined || !rng.chance(0.7)) return
    const n = rng.pick([1, 1, 2, 3])
    const replies = Array.from({ length: n }, () =>
      form === "simple" || (form === "structured" && rng.chance(0.2))
        ? plausibleSimple(rng, req)
        : plausibleChunk(rng, req, form === "extended")
    )
    w[i]!.server = concat(replies)
    replaced++
  })
  return `${replaced} answers replaced by plausible ${form} replies`
}

// ---------------------------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------------------------

/** A hostile case: a description of how it was made, and the plan the server follows. */
export interface Case {
  readonly origin: string
  readonly kind: string
  readonly plan: Plan
}

const pace = (rng: Rng, w: ReadonlyArray<Working>): { steps: Array<Step>; how: string } => {
  const style = rng.pick(["whole", "whole", "pieces", "pieces", "trickle", "slow"] as const)
  const steps = w.map((e): Step => {
    const bytes = e.server
    let writes: Array<Write>
    switch (style) {
      case "whole":
        writes = cutWrites(bytes, [])
        break
      case "pieces":
        writes = cutWrites(
          bytes,
          Array.from({ length: rng.int(6) }, () => ({
            at: rng.int(bytes.length + 1),
            delayMs: rng.pick([-1, 0, 0, 1])
          }))
        )
        break
      case "trickle":
        writes = cutWrites(
          bytes,
          Array.from({ length: Math.min(bytes.length, 300) }, (_, k) => ({ at: k + 1, delayMs: 0 }))
        )
        break
      case "slow":
        writes = cutWrites(
          bytes,
          Array.from({ length: rng.int(4) }, () => ({ at: rng.int(bytes.length + 1), delayMs: rng.between(1, 25) })),
          rng.between(0, 25)
        )
        break
    }
    return { client: e.client, writes }
  })
  return { steps, how: style }
}

const working = (t: Transcript): Array<Working> =>
  t.exchanges.map((e) => ({ client: e.client.length, server: e.server }))

/** Splices the first part of one transcript onto the rest of another. */
const splice = (rng: Rng, a: Transcript, b: Transcript): { w: Array<Working>; origin: string } => {
  const k = rng.between(1, a.exchanges.length - 1)
  const j = rng.between(1, b.exchanges.length - 1)
  return {
    w: [...working(a).slice(0, k), ...working(b).slice(j)],
    origin: `splice of ${a.name} [0, ${k}) and ${b.name} [${j}, ..)`
  }
}

const randomStream = (rng: Rng, transcripts: ReadonlyArray<Transcript>): { w: Array<Working>; origin: string } => {
  const t = rng.pick(transcripts)
  switch (rng.int(3)) {
    case 0:
      return { w: [{ client: 0, server: rng.bytes(rng.between(1, 400)) }], origin: "random bytes" }
    case 1:
      return {
        w: [{ client: 0, server: concat([t.exchanges[0]!.server, rng.bytes(rng.between(1, 200))]) }],
        origin: `${t.name}'s greeting, then random bytes`
      }
    default: {
      const w = working(t)
      const i = rng.between(1, w.length - 1)
      w[i]!.server = rng.bytes(rng.between(1, 300))
      w.splice(i + 1)
      return { w, origin: `${t.name} until answer ${i}, then random bytes` }
    }
  }
}

/** Case `index` of a run with `seed`. */
export const makeCase = (transcripts: ReadonlyArray<Transcript>, seed: number, index: number): Case => {
  const rng = Rng.forCase(seed, index)
  const roll = rng.next()
  let w: Array<Working>
  let origin: string
  let kind: string
  if (roll < 0.08) {
    ;({ origin, w } = randomStream(rng, transcripts))
    kind = "random"
  } else if (roll < 0.16) {
    ;({ origin, w } = splice(rng, rng.pick(transcripts), rng.pick(transcripts)))
    kind = "splice"
  } else if (roll < 0.3) {
    const t = rng.pick(transcripts)
    w = working(t)
    origin = `${t.name}: ${plausibleReplies(rng, t, w, messagesOf(t))}`
    kind = "plausible"
  } else {
    const t = rng.pick(transcripts)
    w = working(t)
    const notes: Array<string> = []
    const kinds: Array<string> = []
    for (let n = rng.pick([1, 1, 1, 2, 3]); n > 0 && answered(w).length > 0; n--) {
      const [name, mutation] = rng.pick(MUTATIONS)
      const messages = w.map((e, i) => messagesOfAnswer(i, t.exchanges[i]!.client, e.server))
      notes.push(mutation(rng, w, messages))
      kinds.push(name)
    }
    origin = `${t.name}: ${notes.join("; ")}`
    kind = kinds.join("+")
  }
  const { how, steps } = pace(rng, w)
  return {
    origin: `${origin} (${how})`,
    kind,
    plan: { steps, end: rng.chance(0.75) ? "end" : "destroy", idleMs: rng.pick([30, 60, 100]) }
  }
}
