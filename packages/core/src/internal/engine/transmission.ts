/**
 * The client's protocol engine for one connection, with no I/O: bytes received go in (`receive`), what to
 * send comes out (`queue`, in order), and commands settle through their `Completion`. It owns the cookies,
 * the table of commands waiting for replies, the framing of requests, the matching of every reply chunk to
 * its command (read data copied once, straight into the caller's buffer), and the end of the connection,
 * where every waiting command completes exactly once. A driver runs it on a socket; a test feeds it bytes.
 */
import * as ClientCodec from "../../ClientCodec.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { Completion, failed, succeeded } from "./completion.js"
import type { Agreement } from "./agreement.js"
import { Handshake } from "./handshake.js"
import { END_OF_WRITES, type Outgoing } from "./outbox.js"
import {
  type Allocate,
  bufferFor,
  bufferOf,
  type CommandRequest,
  commandProtocolError,
  type Pending,
  serverError
} from "./pending.js"
import { uninitialized } from "./uninitialized.js"

/** The counters of bytes and chunks a connection moves (libnbd's stats_* calls). */
export interface Stats {
  bytesSent: number
  chunksSent: number
  bytesReceived: number
  chunksReceived: number
  /** Connections opened again after a drop, by the reconnect schedule. */
  reconnects: number
}

/** What the engine needs of the handle that owns it: where to count, and who keeps orphans. */
export interface EngineHost {
  readonly stats: Stats
  /**
   * Offered the commands still waiting when the connection ends, in the order they were queued: true when
   * the host keeps them for a reconnect to replay, false when they fail here with ENOTCONN.
   */
  readonly adopt: (error: NbdError.NbdError | undefined, waiting: Iterable<Pending>) => boolean
  /** Where fresh reads covered whole by one reply get their memory; by default, memory that is not cleared. */
  readonly allocate?: Allocate | undefined
}

/** What the engine tells its driver, as plain callbacks. */
export interface EngineEvents {
  /** Something was added to `queue`. */
  readonly queued: (item: Outgoing) => void
  /** Handshake bytes arrived: whoever waits for a handshake message may look again. */
  readonly handshakeBytes: () => void
}

export class Transmission {
  /** The handshake, which sends through this engine's queue and reads the bytes it receives first. */
  readonly handshake: Handshake
  /** What the handshake agreed: the reply format, and whether requests carry extended headers. */
  private readonly agreement: Agreement
  replies: ClientCodec.ReplyDecoder | undefined = undefined
  readonly pending = new Map<number, Pending>()
  /** Commands queued or waiting for a reply. */
  inFlight = 0
  /** What is still to be sent, in order: the driver takes from the front. */
  readonly queue: Array<Outgoing> = []
  private nextCookie: number
  private disconnecting = false
  private writesEnded = false
  private readonly allocate: Allocate

  constructor(
    private readonly host: EngineHost,
    private readonly events: EngineEvents,
    firstCookie = 1
  ) {
    this.nextCookie = firstCookie
    this.allocate = host.allocate ?? uninitialized
    this.handshake = new Handshake({
      send: (bytes) => this.send(bytes),
      endWrites: () => this.endWrites(),
      received: () => {
        host.stats.chunksReceived += 1
      }
    })
    this.agreement = this.handshake.agreement
  }

  /** Bytes from the server: handshake bytes are buffered, replies decoded and matched at once. */
  receive(chunk: Uint8Array): ClientCodec.DecodeError | undefined {
    this.host.stats.bytesReceived += chunk.length
    if (this.replies !== undefined) return this.replies.push(chunk)
    this.handshake.receive(chunk)
    this.events.handshakeBytes()
    return undefined
  }

  /** Switches to the transmission phase; bytes already buffered past the handshake are decoded at once. */
  startTransmission(): ClientCodec.DecodeError | undefined {
    const mode: ClientCodec.ReplyMode = this.agreement.extendedHeaders
      ? "extended"
      : this.agreement.structuredReplies
        ? "structured"
        : "simple"
    this.replies = new ClientCodec.ReplyDecoder(this.sink, mode)
    const rest = this.handshake.rest()
    return rest.length > 0 ? this.replies.push(rest) : undefined
  }

  /** True while a reply is half-read. */
  get readingReply(): boolean {
    return this.replies !== undefined && !this.replies.idle
  }

  private enqueue(item: Outgoing): void {
    this.queue.push(item)
    this.events.queued(item)
  }

  /** Queues bytes (a handshake message). */
  send(bytes: Uint8Array): void {
    this.host.stats.chunksSent += 1
    this.enqueue(bytes)
  }

  /** Queues the end of the write side: the socket is half-closed once what is queued before it is sent. */
  endWrites(): void {
    if (this.writesEnded) return
    this.writesEnded = true
    this.enqueue(END_OF_WRITES)
  }

  /** Whether the end of writes was queued. */
  get writesEnding(): boolean {
    return this.writesEnded
  }

  /** Whether NBD_CMD_DISC has been queued: no command may follow it. */
  get disconnectRequested(): boolean {
    return this.disconnecting
  }

  /** The cookie of the next command, in the order commands are queued. */
  takeCookie(): number {
    return this.nextCookie++
  }

  /** The cookie the next command will get. */
  get cookieFloor(): number {
    return this.nextCookie
  }

  /**
   * Queues NBD_CMD_DISC and shuts the write side after it; answers its cookie, or undefined when one was
   * queued already.
   */
  disconnect(): number | undefined {
    if (this.disconnecting) return undefined
    this.disconnecting = true
    const cookie = this.takeCookie()
    this.send(
      ClientCodec.encodeRequest(
        { flags: 0, type: Protocol.Cmd.DISC, cookie, offset: 0, length: 0 },
        this.agreement.extendedHeaders
      )
    )
    this.endWrites()
    return cookie
  }

  /**
   * Gives a checked command the next cookie, frames its request for `offset` and `count` and queues it; its
   * replies settle the returned command's `completion`.
   */
  issue(command: CommandRequest, offset: number, count: number): Pending {
    const cookie = this.takeCookie()
    const header: ClientCodec.RequestHeader = {
      flags: command.flags,
      type: command.type,
      cookie,
      offset,
      length: command.requestLength ?? count
    }
    const pending: Pending = {
      type: command.type,
      cookie,
      offset,
      count,
      buffer: command.buffer,
      fresh: command.fresh ?? false,
      error: undefined,
      dataSeen: 0,
      sent: false,
      abandoned: false,
      cancelled: false,
      request: ClientCodec.encodeRequest(header, this.agreement.extendedHeaders),
      payload: command.payload,
      restart: command.restart,
      operation: command.operation,
      completion: new Completion(),
      chunks: command.chunks,
      onBlockStatus: command.onBlockStatus
    }
    this.submit(pending)
    return pending
  }

  /** Registers a command and queues its request; the reply completes `pending.completion`. */
  submit(pending: Pending): void {
    this.pending.set(pending.cookie, pending)
    this.inFlight += 1
    this.host.stats.chunksSent += 1
    this.enqueue({ bytes: pending.request, payload: pending.payload, pending })
  }

  /** Queues a command again, on this new connection, as if it had never been sent. */
  replay(pending: Pending): void {
    pending.error = undefined
    pending.dataSeen = 0
    // A fresh buffer may hold uncleared memory the first reply never reached: the new reply gets a new one.
    if (pending.fresh) pending.buffer = undefined
    pending.sent = false
    pending.chunks?.splice(0)
    pending.restart?.()
    this.submit(pending)
  }

  /** Fails with ENOTCONN every command not yet handed to the socket; they are never sent. */
  abandonUnsent(operation: string): void {
    for (const p of this.pending.values()) {
      if (p.sent) continue
      p.abandoned = true
      this.pending.delete(p.cookie)
      this.inFlight -= 1
      p.completion.done(
        failed(
          new NbdError.ConnectionError({
            errno: "ENOTCONN",
            operation: p.operation,
            message: `abandoned by ${operation} before it was sent`
          })
        )
      )
    }
  }

  /**
   * The connection has ended with `error` (undefined for a clean end): the commands still waiting go to the
   * host when it keeps them for a reconnect, else each fails with ENOTCONN, once.
   */
  end(error: NbdError.NbdError | undefined): void {
    if (!this.disconnecting && this.host.adopt(error, this.pending.values())) {
      this.pending.clear()
      this.inFlight = 0
      return
    }
    this.failPending("the connection was closed before the server replied")
  }

  /** Fails every command still waiting with ENOTCONN. */
  failPending(message: string): void {
    // The books first: a listener may look at them (or issue a command) as soon as its command settles.
    const waiting = [...this.pending.values()]
    this.pending.clear()
    this.inFlight = 0
    for (const p of waiting) {
      p.completion.done(failed(new NbdError.ConnectionError({ errno: "ENOTCONN", operation: p.operation, message })))
    }
  }

  private complete(p: Pending): void {
    this.pending.delete(p.cookie)
    this.inFlight -= 1
    if (p.error !== undefined) return p.completion.done(failed(p.error))
    if (p.type === Protocol.Cmd.READ && p.dataSeen !== p.count)
      return p.completion.done(
        failed(
          commandProtocolError(p, `server replied with ${p.dataSeen} bytes of data for a read of ${p.count} bytes`)
        )
      )
    p.completion.done(succeeded(p.type === Protocol.Cmd.READ ? bufferOf(p) : undefined))
  }

  private setError(p: Pending, error: NbdError.NbdError): void {
    if (p.error === undefined) p.error = error
  }

  private readonly sink: ClientCodec.ReplySink = {
    simpleReply: (cookie, error) => {
      this.host.stats.chunksReceived += 1
      const p = cookie === undefined ? undefined : this.pending.get(cookie)
      if (p === undefined) {
        // A successful simple reply to a read we don't know may carry data of unknown length.
        if (error !== 0 || this.agreement.structuredReplies) return { length: 0, target: undefined }
        return new ClientCodec.DecodeError({ errno: "EPROTO", message: "no matching cookie found for server reply" })
      }
      if (error !== 0) {
        this.setError(p, serverError(p, error, ""))
        this.complete(p)
        return { length: 0, target: undefined }
      }
      if (p.type === Protocol.Cmd.READ) {
        if (this.agreement.structuredReplies) {
          this.setError(p, commandProtocolError(p, "server sent a simple reply to a read with structured replies on"))
          this.complete(p)
          return { length: 0, target: undefined }
        }
        p.dataSeen = p.count
        const buffer = bufferFor(p, 0, p.count, this.allocate)
        return { length: p.count, target: buffer === undefined ? undefined : { buffer, at: 0, owner: p } }
      }
      this.complete(p)
      return { length: 0, target: undefined }
    },
    simpleDataDone: (cookie) => {
      const p = cookie === undefined ? undefined : this.pending.get(cookie)
      if (p !== undefined) this.complete(p)
    },
    dataChunk: (header, offset, length) => {
      this.host.stats.chunksReceived += 1
      const p = this.lookup(header)
      if (p === undefined || this.wrongOffset(p, header)) return undefined
      if (p.type !== Protocol.Cmd.READ) {
        this.setError(p, commandProtocolError(p, "server sent read data in reply to a command that is not a read"))
        return undefined
      }
      const at = Number(offset) - p.offset
      if (at < 0 || at + length > p.count)
        return new ClientCodec.DecodeError({ errno: "EPROTO", message: "server sent read data outside the request" })
      p.dataSeen += length
      p.chunks?.push({ _tag: "Data", offset: p.offset + at, length })
      const buffer = bufferFor(p, at, length, this.allocate)
      return buffer === undefined ? undefined : { buffer, at, owner: p }
    },
    dataChunkDone: (header) => {
      const p = this.lookup(header)
      if (p !== undefined && (header.flags & Protocol.REPLY_FLAG_DONE) !== 0) this.complete(p)
    },
    chunk: (header, payload) => {
      this.host.stats.chunksReceived += 1
      const p = this.lookup(header)
      if (p === undefined) return
      if (!this.wrongOffset(p, header)) {
        const result = this.onChunk(p, header, payload)
        if (result instanceof ClientCodec.DecodeError) return result
      }
      if ((header.flags & Protocol.REPLY_FLAG_DONE) !== 0) this.complete(p)
    }
  }

  private lookup(header: ClientCodec.ChunkHeader): Pending | undefined {
    if (header.cookie === undefined) return undefined
    return this.pending.get(header.cookie)
  }

  /**
   * With extended headers a chunk echoes its request's offset. One that does not is skipped, as libnbd
   * resyncs past it, and fails its command with EPROTO; its DONE flag still ends the command.
   */
  private wrongOffset(p: Pending, header: ClientCodec.ChunkHeader): boolean {
    if (header.offset === undefined || Number(header.offset) === p.offset) return false
    this.setError(p, commandProtocolError(p, "server sent a reply chunk with the wrong offset"))
    return true
  }

  private onChunk(p: Pending, header: ClientCodec.ChunkHeader, payload: Uint8Array): ClientCodec.DecodeError | void {
    switch (header.type) {
      case Protocol.ReplyType.NONE:
        if (payload.length !== 0 || (header.flags & Protocol.REPLY_FLAG_DONE) === 0)
          this.setError(p, commandProtocolError(p, "server sent an invalid NBD_REPLY_TYPE_NONE chunk"))
        return
      case Protocol.ReplyType.OFFSET_HOLE:
        return this.onHole(p, payload)
      case Protocol.ReplyType.ERROR:
      case Protocol.ReplyType.ERROR_OFFSET:
        return this.onErrorChunk(p, header.type, payload)
      case Protocol.ReplyType.BLOCK_STATUS:
      case Protocol.ReplyType.BLOCK_STATUS_EXT: {
        const expected = this.agreement.extendedHeaders
          ? Protocol.ReplyType.BLOCK_STATUS_EXT
          : Protocol.ReplyType.BLOCK_STATUS
        if (p.onBlockStatus === undefined || header.type !== expected) {
          this.setError(p, commandProtocolError(p, "server sent an unexpected block status chunk"))
          return
        }
        const error = p.onBlockStatus(header.type, payload)
        if (error !== undefined) this.setError(p, error)
        return
      }
      case Protocol.ReplyType.OFFSET_DATA:
        // Only reached when the chunk is too short to hold its offset.
        this.setError(p, commandProtocolError(p, "server sent a data chunk that is too short"))
        return
      default:
        if (Protocol.isErrorChunk(header.type)) {
          const error = payload.length >= 4 ? new DataView(payload.buffer, payload.byteOffset).getUint32(0) : 0
          this.setError(p, serverError(p, error || Protocol.NbdErrno.EINVAL, ""))
        } else this.setError(p, commandProtocolError(p, `server sent an unexpected reply chunk of type ${header.type}`))
    }
  }

  private onHole(p: Pending, payload: Uint8Array): ClientCodec.DecodeError | void {
    if (p.type !== Protocol.Cmd.READ || payload.length !== 12) {
      this.setError(p, commandProtocolError(p, "server sent an unexpected hole chunk"))
      return
    }
    const view = new DataView(payload.buffer, payload.byteOffset, 12)
    const at = Number(view.getBigUint64(0)) - p.offset
    const size = view.getUint32(8)
    if (at < 0 || at + size > p.count || size === 0)
      return new ClientCodec.DecodeError({ errno: "EPROTO", message: "server sent a hole outside the request" })
    p.dataSeen += size
    if (p.buffer !== undefined) p.buffer.fill(0, at, at + size)
    else bufferOf(p)
    p.chunks?.push({ _tag: "Hole", offset: p.offset + at, length: size })
  }

  private onErrorChunk(p: Pending, type: number, payload: Uint8Array): void {
    const parsed = ClientCodec.decodeErrorChunk(type, payload)
    if (parsed instanceof ClientCodec.DecodeError) return this.setError(p, commandProtocolError(p, parsed.message))
    if (parsed.error === 0)
      return this.setError(p, commandProtocolError(p, "server sent an error chunk with error value 0"))
    const error = serverError(p, parsed.error, parsed.message)
    this.setError(p, error)
    if (parsed.offset !== undefined)
      p.chunks?.push({ _tag: "Error", offset: Number(parsed.offset), errno: error.errno, message: parsed.message })
  }
}
