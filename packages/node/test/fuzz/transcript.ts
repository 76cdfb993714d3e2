/**
 * Recorded client sessions: the byte exchange between our client and a real NBD server, one exchange per
 * client message (the bytes the client sent, then what the server sent in answer), stored as JSON with hex.
 *
 * This file knows the wire layout on its own, not through the codec under test: a recording tool that shared
 * the decoders' bugs could not catch them.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

/** One client message and the server's answer to it (possibly nothing, e.g. the client flags). */
export interface Exchange {
  readonly client: Uint8Array
  readonly server: Uint8Array
}

/** A recorded session. */
export interface Transcript {
  readonly name: string
  /** The server and how it was started. */
  readonly peer: string
  readonly exchanges: ReadonlyArray<Exchange>
  /** What the client's session returned while recording, step by step. */
  readonly result: unknown
}

interface TranscriptJson {
  readonly name: string
  readonly peer: string
  readonly exchanges: ReadonlyArray<{ readonly client: string; readonly server: string }>
  readonly result: unknown
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

/** The recorded transcripts live with the core package, whose engine tests replay them with no socket. */
export const transcriptsDirectory = (): string => Path.join(packageRoot(), "..", "core", "test", "transcripts")

export const encodeTranscript = (t: Transcript): TranscriptJson => ({
  name: t.name,
  peer: t.peer,
  exchanges: t.exchanges.map((e) => ({ client: toHex(e.client), server: toHex(e.server) })),
  result: t.result
})

export const decodeTranscript = (json: TranscriptJson): Transcript => ({
  name: json.name,
  peer: json.peer,
  exchanges: json.exchanges.map((e) => ({ client: fromHex(e.client), server: fromHex(e.server) })),
  result: json.result
})

/** Every committed transcript, by file name order. */
export const loadTranscripts = (): ReadonlyArray<Transcript> => {
  const dir = transcriptsDirectory()
  return Fs.readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => decodeTranscript(JSON.parse(Fs.readFileSync(Path.join(dir, f), "utf8")) as TranscriptJson))
}

// ---------------------------------------------------------------------------------------------------------------
// Splitting the client's byte stream into messages
// ---------------------------------------------------------------------------------------------------------------

const IHAVEOPT = Buffer.from("IHAVEOPT")
const OLDSTYLE_MAGIC = Buffer.from("0000420281861253", "hex")
const REQUEST_MAGIC = 0x25609513
const EXTENDED_REQUEST_MAGIC = 0x21e41c71
const OPT_EXPORT_NAME = 1
const OPT_GO = 7
const CMD_WRITE = 1
const FLAG_PAYLOAD_LEN = 0x20

/**
 * Cuts what a client sends into messages: the client flags, options (16 bytes + data), then requests
 * (compact or extended, with their payloads). It starts in transmission after an oldstyle greeting, and
 * assumes the handshake succeeded after NBD_OPT_GO or NBD_OPT_EXPORT_NAME, as it does in a recorded session.
 */
export class ClientSplitter {
  private buffer: Buffer = Buffer.alloc(0)
  private phase: "flags" | "options" | "transmission"

  constructor(oldstyle: boolean) {
    this.phase = oldstyle ? "transmission" : "flags"
  }

  /** Whether a server greeting is oldstyle. */
  static isOldstyle(greeting: Uint8Array): boolean {
    return greeting.length >= 16 && Buffer.from(greeting.subarray(8, 16)).equals(OLDSTYLE_MAGIC)
  }

  /** Adds bytes; returns the messages they complete. */
  push(chunk: Uint8Array): Array<Uint8Array> {
    this.buffer = Buffer.concat([this.buffer, chunk])
    const out: Array<Uint8Array> = []
    for (let size = this.nextSize(); size !== undefined && size <= this.buffer.length; size = this.nextSize()) {
      const message = new Uint8Array(this.buffer.subarray(0, size))
      this.buffer = this.buffer.subarray(size)
      this.advance(message)
      out.push(message)
    }
    return out
  }

  /** Bytes received that do not make a whole message yet. */
  get pending(): number {
    return this.buffer.length
  }

  private nextSize(): number | undefined {
    const b = this.buffer
    switch (this.phase) {
      case "flags":
        return 4
      case "options":
        if (b.length < 16) return undefined
        if (!b.subarray(0, 8).equals(IHAVEOPT)) throw new Error("client sent an option without IHAVEOPT")
        return 16 + b.readUInt32BE(12)
      case "transmission": {
        if (b.length < 4) return undefined
        const magic = b.readUInt32BE(0)
        if (magic === REQUEST_MAGIC) {
          if (b.length < 28) return undefined
          return 28 + (b.readUInt16BE(6) === CMD_WRITE ? b.readUInt32BE(24) : 0)
        }
        if (magic === EXTENDED_REQUEST_MAGIC) {
          if (b.length < 32) return undefined
          return 32 + ((b.readUInt16BE(4) & FLAG_PAYLOAD_LEN) !== 0 ? Number(b.readBigUInt64BE(24)) : 0)
        }
        throw new Error(`client sent a request with magic 0x${magic.toString(16)}`)
      }
    }
  }

  private advance(message: Uint8Array): void {
    if (this.phase === "flags") this.phase = "options"
    else if (this.phase === "options") {
      const option = Buffer.from(message).readUInt32BE(8)
      if (option === OPT_GO || option === OPT_EXPORT_NAME) this.phase = "transmission"
    }
  }
}
