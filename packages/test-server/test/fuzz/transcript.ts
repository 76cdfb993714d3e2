/**
 * Recorded client streams: what real NBD clients (libnbd's tools, qemu's, ours) sent to the test server,
 * cut into messages, stored as JSON with hex. The hostile-client fuzz mutates them.
 *
 * This file knows the wire layout on its own, not through the server's decoder: a splitter that shared the
 * decoder's bugs could not find them.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

/** The server configurations the fuzz runs against, by name (see hostile-clients.ts). */
export type ServerKind = "extended" | "structured" | "simple" | "oldstyle" | "newstyle" | "faults"

export const serverKinds: ReadonlyArray<ServerKind> = [
  "extended",
  "structured",
  "simple",
  "oldstyle",
  "newstyle",
  "faults"
]

/** One message a client sent, and what it is. */
export interface Message {
  readonly kind: "flags" | "option" | "request" | "rest"
  readonly bytes: Uint8Array
}

/** One recorded client connection. */
export interface Transcript {
  readonly name: string
  /** The client program and what it did. */
  readonly client: string
  /** The server configuration it was recorded against. */
  readonly server: ServerKind
  readonly messages: ReadonlyArray<Message>
}

interface TranscriptJson {
  readonly name: string
  readonly client: string
  readonly server: ServerKind
  readonly messages: ReadonlyArray<{ readonly kind: Message["kind"]; readonly hex: string }>
}

export const fromHex = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex, "hex"))
export const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString("hex")

/** The package this file belongs to: the nearest directory up with a package.json. */
const packageRoot = (): string => {
  let dir = Path.dirname(fileURLToPath(import.meta.url))
  while (!Fs.existsSync(Path.join(dir, "package.json"))) {
    const parent = Path.dirname(dir)
    if (parent === dir) throw new Error("no package.json above the fuzz sources")
    dir = parent
  }
  return dir
}

/** The sources' fuzz directory, whether this runs from the sources (vitest) or compiled (build/fuzz). */
export const fuzzDirectory = (): string => Path.join(packageRoot(), "test", "fuzz")

export const transcriptsFile = (): string => Path.join(fuzzDirectory(), "transcripts.json")

export const encodeTranscripts = (ts: ReadonlyArray<Transcript>): ReadonlyArray<TranscriptJson> =>
  ts.map((t) => ({
    name: t.name,
    client: t.client,
    server: t.server,
    messages: t.messages.map((m) => ({ kind: m.kind, hex: toHex(m.bytes) }))
  }))

/** Every committed transcript. */
export const loadTranscripts = (): ReadonlyArray<Transcript> => {
  const json = JSON.parse(Fs.readFileSync(transcriptsFile(), "utf8")) as ReadonlyArray<TranscriptJson>
  return json.map((t) => ({
    name: t.name,
    client: t.client,
    server: t.server,
    messages: t.messages.map((m) => ({ kind: m.kind, bytes: fromHex(m.hex) }))
  }))
}

// -----------------------------------------------------------------------------
// cutting a client's stream into messages
// -----------------------------------------------------------------------------

const IHAVEOPT = Buffer.from("IHAVEOPT", "latin1")
const OPT_EXPORT_NAME = 1
const OPT_GO = 7
const OPT_EXTENDED_HEADERS = 11
const REQUEST_MAGIC = 0x25609513
const EXTENDED_REQUEST_MAGIC = 0x21e41c71
const CMD_WRITE = 1
const FLAG_PAYLOAD_LEN = 0x20

/**
 * Cuts what a client sent into messages: the client flags and options (newstyle), then requests. Assumes
 * NBD_OPT_GO or NBD_OPT_EXPORT_NAME succeeded and started transmission, and that extended headers were
 * agreed once asked for if the server offers them (`extendedOffered`), as they were while recording.
 * Bytes it cannot place end up in one "rest" message.
 */
export const splitClientStream = (
  stream: Uint8Array,
  options: { readonly oldstyle: boolean; readonly extendedOffered: boolean }
): Array<Message> => {
  const oldstyle = options.oldstyle
  const b = Buffer.from(stream.buffer, stream.byteOffset, stream.length)
  const out: Array<Message> = []
  let at = 0
  const take = (kind: Message["kind"], n: number): void => {
    out.push({ kind, bytes: new Uint8Array(b.subarray(at, at + n)) })
    at += n
  }
  let extended = false
  let transmission = oldstyle
  if (!oldstyle) {
    if (b.length < 4) return b.length === 0 ? [] : [{ kind: "rest", bytes: new Uint8Array(b) }]
    take("flags", 4)
  }
  while (!transmission && at + 16 <= b.length && b.subarray(at, at + 8).equals(IHAVEOPT)) {
    const option = b.readUInt32BE(at + 8)
    const length = b.readUInt32BE(at + 12)
    if (at + 16 + length > b.length) break
    take("option", 16 + length)
    if (option === OPT_EXTENDED_HEADERS && options.extendedOffered) extended = true
    if (option === OPT_GO || option === OPT_EXPORT_NAME) transmission = true
  }
  while (transmission && at + 28 <= b.length) {
    const magic = b.readUInt32BE(at)
    if (magic !== (extended ? EXTENDED_REQUEST_MAGIC : REQUEST_MAGIC)) break
    const flags = b.readUInt16BE(at + 4)
    const type = b.readUInt16BE(at + 6)
    const header = extended ? 32 : 28
    if (at + header > b.length) break
    const length = extended ? Number(b.readBigUInt64BE(at + 24)) : b.readUInt32BE(at + 24)
    const payload = extended ? ((flags & FLAG_PAYLOAD_LEN) !== 0 ? length : 0) : type === CMD_WRITE ? length : 0
    if (at + header + payload > b.length) break
    take("request", header + payload)
  }
  if (at < b.length) take("rest", b.length - at)
  return out
}
