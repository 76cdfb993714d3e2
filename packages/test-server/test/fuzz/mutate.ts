/**
 * Hostile client streams from a seed: recorded transcripts with mutations (bit flips, field changes at
 * magic, length, offset, type, flags and cookie, truncation, duplication, drops, splices, garbage, floods),
 * or random bytes; delivered whole, split or trickled; ended with a FIN, abruptly, or after a spell of not
 * reading. Every case is a plain `Plan`, so a failing one can be saved and replayed exactly.
 */
import { type Message, type ServerKind, serverKinds, type Transcript } from "./transcript.js"

/** A small seeded PRNG (mulberry32): the same seed gives the same cases on every machine. */
export class Rng {
  private state: number
  constructor(seed: number) {
    this.state = seed >>> 0
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
  /** An integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1)
  }
  chance(p: number): boolean {
    return this.next() < p
  }
  pick<A>(items: ReadonlyArray<A>): A {
    return items[this.int(items.length)]!
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) out[i] = this.int(256)
    return out
  }
}

/** One socket write, after a pause. */
export interface Write {
  readonly bytes: Uint8Array
  readonly delayMs: number
}

/**
 * How a client ends once it has written everything: a FIN, then reading until the server closes; a
 * destroy at once; or a spell of not reading (`holdMs`) first, then either.
 */
export type End = "fin" | "destroy" | "hold-then-fin" | "hold-then-destroy"

export interface Plan {
  readonly server: ServerKind
  readonly writes: ReadonlyArray<Write>
  readonly end: End
  readonly holdMs: number
}

export interface Case {
  /** Where it came from: the transcript, or "random". */
  readonly origin: string
  /** The mutations and the pacing applied, for the report. */
  readonly kinds: ReadonlyArray<string>
  readonly plan: Plan
}

const MiB = 1024 * 1024

const u16Values = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x20, 0x3f, 0xff, 0x7fff, 0x8000, 0x8001, 0xffff]
const u32Values = [
  0,
  1,
  2,
  7,
  11,
  12,
  4096,
  65536,
  65537,
  32 * MiB,
  32 * MiB + 1,
  64 * MiB + 9,
  0x7fffffff,
  0x80000000,
  0x80000001,
  0xfffffffe,
  0xffffffff
]
const u64Values = [
  0n,
  1n,
  4095n,
  4096n,
  BigInt(16 * MiB - 1),
  BigInt(16 * MiB),
  BigInt(16 * MiB + 1),
  BigInt(64 * MiB),
  2n ** 32n,
  2n ** 53n,
  2n ** 53n + 1n,
  2n ** 63n - 1n,
  2n ** 63n,
  2n ** 64n - 1n
]

type Field = { readonly at: number; readonly size: 2 | 4 | 8; readonly name: string }

/** The fields worth changing in a message, by what it is. */
const fieldsOf = (m: Message): ReadonlyArray<Field> => {
  const n = m.bytes.length
  const fit = (fields: ReadonlyArray<Field>) => fields.filter((f) => f.at >= 0 && f.at + f.size <= n)
  switch (m.kind) {
    case "flags":
      return fit([{ at: 0, size: 4, name: "client-flags" }])
    case "option":
      return fit([
        { at: 0, size: 8, name: "option-magic" },
        { at: 8, size: 4, name: "option-code" },
        { at: 12, size: 4, name: "option-length" },
        { at: 16, size: 4, name: "option-name-length" },
        { at: n - 2, size: 2, name: "option-tail" },
        { at: n - 4, size: 4, name: "option-tail" }
      ])
    case "request": {
      const extended = n >= 32 && m.bytes[0] === 0x21
      return fit([
        { at: 0, size: 4, name: "request-magic" },
        { at: 4, size: 2, name: "request-flags" },
        { at: 6, size: 2, name: "request-type" },
        { at: 8, size: 8, name: "request-cookie" },
        { at: 16, size: 8, name: "request-offset" },
        extended ? { at: 24, size: 8, name: "request-length" } : { at: 24, size: 4, name: "request-length" }
      ])
    }
    case "rest":
      return []
  }
}

const setField = (rng: Rng, bytes: Uint8Array, f: Field): void => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length)
  if (f.size === 2) view.setUint16(f.at, rng.chance(0.8) ? rng.pick(u16Values) : rng.int(0x10000))
  else if (f.size === 4) view.setUint32(f.at, rng.chance(0.8) ? rng.pick(u32Values) : rng.int(0x100000000))
  else
    view.setBigUint64(
      f.at,
      rng.chance(0.8) ? rng.pick(u64Values) : (BigInt(rng.int(0x100000000)) << 32n) | BigInt(rng.int(0x100000000))
    )
}

const copy = (m: Message): Message => ({ kind: m.kind, bytes: new Uint8Array(m.bytes) })

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let size = 0
  for (const p of parts) size += p.length
  const out = new Uint8Array(size)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** Repeats small requests (reads and writes of at most 64 KiB): a pipelining flood of bounded cost. */
const flood = (rng: Rng, messages: Array<Message>): void => {
  const small = messages.filter((m) => m.kind === "request" && m.bytes.length <= 28 + 64 * 1024)
  if (small.length === 0) return
  const times = rng.between(20, 400)
  const extra: Array<Message> = []
  let bytes = 0
  for (let i = 0; i < times && bytes < 512 * 1024; i++) {
    const m = copy(rng.pick(small))
    bytes += m.bytes.length
    extra.push(m)
  }
  messages.splice(rng.int(messages.length + 1), 0, ...extra)
}

const mutations = [
  "bit-flip",
  "field",
  "field",
  "field",
  "truncate",
  "duplicate",
  "drop",
  "splice",
  "garbage",
  "flood"
] as const
type Mutation = (typeof mutations)[number]

/** Applies one mutation; gives the kind it applied (or undefined when it did not apply). */
const mutate = (
  rng: Rng,
  mutation: Mutation,
  messages: Array<Message>,
  transcripts: ReadonlyArray<Transcript>
): string | undefined => {
  if (messages.length === 0 && mutation !== "garbage" && mutation !== "splice") return undefined
  const at = rng.int(messages.length)
  switch (mutation) {
    case "bit-flip": {
      const m = (messages[at] = copy(messages[at]!))
      if (m.bytes.length === 0) return undefined
      for (let i = rng.between(1, 4); i > 0; i--) {
        const bit = rng.int(m.bytes.length * 8)
        m.bytes[bit >> 3]! ^= 1 << (bit & 7)
      }
      return "bit-flip"
    }
    case "field": {
      const m = (messages[at] = copy(messages[at]!))
      const fields = fieldsOf(m)
      if (fields.length === 0) return undefined
      const f = rng.pick(fields)
      setField(rng, m.bytes, f)
      return `field:${f.name}`
    }
    case "truncate": {
      // Cut inside a message: the stream ends mid-way through it.
      const m = messages[at]!
      messages.length = at + 1
      messages[at] = { kind: m.kind, bytes: m.bytes.slice(0, rng.int(m.bytes.length)) }
      return "truncate"
    }
    case "duplicate": {
      const copies = Array.from({ length: rng.between(1, 3) }, () => copy(messages[at]!))
      messages.splice(at, 0, ...copies)
      return "duplicate"
    }
    case "drop":
      messages.splice(at, 1)
      return "drop"
    case "splice": {
      const other = rng.pick(transcripts).messages
      if (other.length === 0) return undefined
      const from = rng.int(other.length)
      const slice = other.slice(from, from + rng.between(1, 4)).map(copy)
      messages.splice(rng.int(messages.length + 1), 0, ...slice)
      return "splice"
    }
    case "garbage":
      messages.splice(rng.int(messages.length + 1), 0, { kind: "rest", bytes: rng.bytes(rng.between(1, 64)) })
      return "garbage"
    case "flood":
      flood(rng, messages)
      return "flood"
  }
}

/** Cuts a stream into writes: whole, split at random points, or with a stretch trickled a byte at a time. */
const pace = (rng: Rng, stream: Uint8Array): { writes: Array<Write>; kind: string } => {
  const r = rng.next()
  if (r < 0.4 || stream.length < 2) return { writes: [{ bytes: stream, delayMs: 0 }], kind: "whole" }
  if (r < 0.75) {
    const cuts = Array.from({ length: rng.between(1, 8) }, () => rng.between(1, stream.length - 1)).sort(
      (a, b) => a - b
    )
    const writes: Array<Write> = []
    let from = 0
    for (const cut of [...cuts, stream.length]) {
      if (cut <= from) continue
      writes.push({ bytes: stream.subarray(from, cut), delayMs: rng.chance(0.3) ? rng.between(1, 5) : 0 })
      from = cut
    }
    return { writes, kind: "split" }
  }
  // A stretch of at most 400 bytes, one byte per write.
  const start = rng.int(stream.length)
  const end = Math.min(stream.length, start + rng.between(1, 400))
  const writes: Array<Write> = []
  if (start > 0) writes.push({ bytes: stream.subarray(0, start), delayMs: 0 })
  for (let i = start; i < end; i++) writes.push({ bytes: stream.subarray(i, i + 1), delayMs: 0 })
  if (end < stream.length) writes.push({ bytes: stream.subarray(end), delayMs: 0 })
  return { writes, kind: "trickle" }
}

const ending = (rng: Rng): { end: End; holdMs: number } => {
  const r = rng.next()
  const end: End = r < 0.5 ? "fin" : r < 0.7 ? "destroy" : r < 0.85 ? "hold-then-fin" : "hold-then-destroy"
  return { end, holdMs: end.startsWith("hold") ? rng.between(20, 200) : 0 }
}

/** The next case: mostly a mutated transcript against its own kind of server, sometimes random bytes. */
export const makeCase = (rng: Rng, transcripts: ReadonlyArray<Transcript>): Case => {
  const kinds: Array<string> = []
  let origin: string
  let server: ServerKind
  let stream: Uint8Array
  if (rng.chance(0.1)) {
    origin = "random"
    server = rng.pick(serverKinds)
    // Random bytes, after valid client flags half the time, so they reach the option parser.
    const prefix = rng.chance(0.5) ? [new Uint8Array([0, 0, 0, 3])] : []
    stream = concat([...prefix, rng.bytes(rng.between(0, 2048))])
    kinds.push(prefix.length > 0 ? "random-after-flags" : "random")
  } else {
    const t = rng.pick(transcripts)
    origin = t.name
    server = rng.chance(0.8) ? t.server : rng.pick(serverKinds)
    if (server !== t.server) kinds.push("other-server")
    const messages = t.messages.map(copy)
    const count = rng.chance(0.1) ? 0 : rng.between(1, 3)
    for (let i = 0; i < count; i++) {
      const kind = mutate(rng, rng.pick(mutations), messages, transcripts)
      if (kind !== undefined) kinds.push(kind)
    }
    if (count === 0) kinds.push("unmutated")
    stream = concat(messages.map((m) => m.bytes))
  }
  const paced = pace(rng, stream)
  kinds.push(paced.kind)
  const { end, holdMs } = ending(rng)
  kinds.push(end)
  return { origin, kinds, plan: { server, writes: paced.writes, end, holdMs } }
}
