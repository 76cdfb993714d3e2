/**
 * A hand-written NBD client over node:net for tests that must misbehave on purpose: pipeline without
 * reading, trickle bytes, stop mid-message. Promise-based, so it can be driven from plain loops.
 */
import * as Net from "node:net"

/** Option and command codes these tests use. */
export const OPT_EXPORT_NAME = 1
export const OPT_GO = 7
export const CMD_READ = 0
export const CMD_WRITE = 1
export const CMD_FLUSH = 3

const REQUEST_MAGIC = 0x25609513
const SIMPLE_REPLY_MAGIC = 0x67446698

export class RawClient {
  private chunks: Array<Buffer> = []
  private size = 0
  private waiter: (() => void) | undefined = undefined
  closed = false
  /** Bytes received in total. */
  received = 0

  private constructor(readonly socket: Net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk)
      this.size += chunk.length
      this.received += chunk.length
      this.wake()
    })
    socket.on("close", () => {
      this.closed = true
      this.wake()
    })
    socket.on("error", () => {})
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = Net.createConnection({ path })
      socket.once("connect", () => resolve(new RawClient(socket)))
      socket.once("error", reject)
    })
  }

  private wake(): void {
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }

  /** Stops taking bytes from the socket: the kernel buffers fill and the server must hold back. */
  hold(): void {
    this.socket.pause()
  }

  release(): void {
    this.socket.resume()
  }

  /** Exactly `n` bytes; rejects if the connection closes first. */
  async read(n: number): Promise<Buffer> {
    while (this.size < n) {
      if (this.closed) throw new Error(`connection closed with ${this.size} of ${n} bytes`)
      await new Promise<void>((resolve) => {
        this.waiter = resolve
      })
    }
    const first = this.chunks[0]!
    if (first.length >= n) {
      const out = first.subarray(0, n)
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      this.size -= n
      return out
    }
    const out = Buffer.allocUnsafe(n)
    let at = 0
    while (at < n) {
      const c = this.chunks[0]!
      const step = Math.min(c.length, n - at)
      c.copy(out, at, 0, step)
      at += step
      if (step === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(step)
    }
    this.size -= n
    return out
  }

  /** Resolves once the connection is closed. */
  async waitClosed(): Promise<void> {
    while (!this.closed) {
      this.chunks = []
      this.size = 0
      await new Promise<void>((resolve) => {
        this.waiter = resolve
      })
    }
  }

  /** Writes and waits until the socket's buffer has room again (or the connection is gone). */
  write(bytes: Uint8Array): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve()
    if (this.socket.write(bytes)) return Promise.resolve()
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off("drain", done)
        this.socket.off("close", done)
        resolve()
      }
      this.socket.on("drain", done)
      this.socket.on("close", done)
    })
  }

  destroy(): void {
    this.socket.destroy()
  }
}

/**
 * The shortest way into transmission with compact requests and simple replies: NBD_OPT_EXPORT_NAME with the
 * handshake flags the server offers (fixed newstyle, NO_ZEROES), or just the greeting from an oldstyle
 * server. Gives the export size.
 */
export const handshakeSimple = async (client: RawClient, exportName = ""): Promise<bigint> => {
  const greeting = await client.read(18)
  const magic = greeting.subarray(0, 8).toString("latin1")
  if (magic !== "NBDMAGIC") throw new Error("bad greeting")
  if (greeting.subarray(8, 16).toString("latin1") !== "IHAVEOPT") {
    // Oldstyle: size, flags and 124 zeroes follow.
    const rest = await client.read(152 - 18)
    return Buffer.concat([greeting, rest]).readBigUInt64BE(16)
  }
  const flags = greeting.readUInt16BE(16) & 3
  await client.write(u32(flags))
  const name = Buffer.from(exportName)
  await client.write(Buffer.concat([option(OPT_EXPORT_NAME, name.length), name]))
  const reply = await client.read((flags & 2) !== 0 ? 10 : 134)
  return reply.readBigUInt64BE(0)
}

export const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v >>> 0)
  return b
}

/** An option header (IHAVEOPT, option, length); the data follows. */
export const option = (code: number, length: number): Buffer => {
  const b = Buffer.alloc(16)
  b.write("IHAVEOPT", 0, "latin1")
  b.writeUInt32BE(code, 8)
  b.writeUInt32BE(length, 12)
  return b
}

/** A compact request header. */
export const request = (type: number, cookie: number, offset: number, length: number, flags = 0): Buffer => {
  const b = Buffer.alloc(28)
  b.writeUInt32BE(REQUEST_MAGIC, 0)
  b.writeUInt16BE(flags, 4)
  b.writeUInt16BE(type, 6)
  b.writeBigUInt64BE(BigInt(cookie), 8)
  b.writeBigUInt64BE(BigInt(offset), 16)
  b.writeUInt32BE(length, 24)
  return b
}

/** Reads one simple reply header: its error and cookie. */
export const simpleReply = async (client: RawClient): Promise<{ error: number; cookie: number }> => {
  const h = await client.read(16)
  if (h.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error(`bad reply magic 0x${h.readUInt32BE(0).toString(16)}`)
  return { error: h.readUInt32BE(4), cookie: Number(h.readBigUInt64BE(8)) }
}

/** What the pattern backend holds at `offset`: every 8-byte word its own offset, big-endian. */
export const patternBytes = (offset: number, length: number): Buffer => {
  const start = Math.floor(offset / 8) * 8
  const words = Buffer.allocUnsafe(Math.ceil((offset + length - start) / 8) * 8)
  for (let at = 0; at < words.length; at += 8) {
    const value = start + at
    words.writeUInt32BE(Math.floor(value / 0x100000000), at)
    words.writeUInt32BE(value >>> 0, at + 4)
  }
  return words.subarray(offset - start, offset - start + length)
}

/** Bytes the process holds: the JS heap plus array buffers (where socket data and read replies live). */
export const memoryInUse = (): number => {
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
