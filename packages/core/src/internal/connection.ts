import type * as Socket from "@effect/platform/Socket"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as ClientCodec from "../ClientCodec.js"
import * as NbdError from "../NbdError.js"
import * as Protocol from "../Protocol.js"
import type * as Transport from "../Transport.js"
import { concat } from "./bytes.js"
import type { OnBlockStatus } from "./blockStatus.js"
import type { Completion } from "./completion.js"

/** Tells the writer to shut the write side of the socket once everything before it is sent. */
const END_OF_WRITES = Symbol("END_OF_WRITES")
type Outgoing =
  | Uint8Array
  | { readonly bytes: Uint8Array; readonly payload: Uint8Array | undefined; readonly pending: Pending }
  | typeof END_OF_WRITES

/** What the writer writes to wait until the socket has sent what it holds. */
const EMPTY = new Uint8Array(0)

/** A write payload at least this big is written on its own, never copied into a group. */
const COPY_PAYLOAD_BELOW = 64 * 1024

/** How long an end that does not wait for the server lets the writer hand what is queued to the socket. */
export const FLUSH_ONLY = Duration.millis(20)

/** The most a direct write hands the transport at once (a bigger single item goes alone). */
const DIRECT_BATCH_BYTES = 64 * 1024

/** Writes are grouped into one socket write up to this size. */
const WRITE_GROUP_BYTES = 1024 * 1024

/** One chunk of a structured read (data, hole or error), as the chunk list records it. */
export type ReadChunk = ClientCodec.ReadChunk

/** What a command waiting for its reply holds. */
export interface Pending {
  readonly type: number
  readonly cookie: number
  readonly offset: number
  readonly count: number
  /** Where read data goes; cleared when the caller stops waiting, so late data is dropped. */
  buffer: Uint8Array | undefined
  /**
   * A read that makes its own buffer, when its first data arrives: the buffer then lives from the reply to
   * the caller, not for the whole round trip, and far fewer outlive a young-generation collection.
   */
  readonly fresh: boolean
  /** The first error a reply reported. */
  error: NbdError.NbdError | undefined
  dataSeen: number
  /** Set by the writer once the request is handed to the socket. */
  sent: boolean
  /** Set when the command was failed before being sent: the writer skips it. */
  abandoned: boolean
  /** Set when the caller stopped waiting: a reconnect does not replay it. */
  cancelled: boolean
  /** The request as encoded, and its payload: what a reconnect sends again. */
  readonly request: Uint8Array
  readonly payload: Uint8Array | undefined
  /** Forgets what a reply delivered so far (chunks, block status entries), before a replay. */
  readonly restart: (() => void) | undefined
  readonly operation: string
  readonly completion: Completion
  /** For structured reads: the chunks as they arrived (data, holes, errors with offsets). */
  readonly chunks: Array<ReadChunk> | undefined
  /** For block status: receives each BLOCK_STATUS or BLOCK_STATUS_EXT chunk payload. */
  readonly onBlockStatus: OnBlockStatus | undefined
}

/** What a server that closes the connection in the middle of the handshake is reported with. */
export const DISCONNECTED = "server disconnected unexpectedly"

const errnoOf = (cause: unknown): NbdError.Errno => NbdError.errnoOf(cause)

const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : "unknown error"

/** Maps why the reader stopped to the error the handle reports. */
const endError = (cause: unknown, inHandshake: boolean): NbdError.NbdError | undefined => {
  if (cause instanceof ClientCodec.DecodeError)
    return new NbdError.ProtocolError({ errno: cause.errno, operation: "recv", message: cause.message })
  const socketError = cause as { readonly _tag?: string; readonly reason?: string; readonly cause?: unknown }
  if (socketError?._tag === "SocketError" && socketError.reason === "Open")
    return new NbdError.ConnectionError({
      errno: errnoOf(socketError.cause),
      operation: "connect",
      message: describe(socketError.cause),
      cause: socketError.cause
    })
  if (socketError?._tag === "SocketError" && socketError.reason !== "Close")
    return new NbdError.ConnectionError({
      errno: errnoOf(socketError.cause) || "ECONNRESET",
      operation: socketError.reason === "Write" ? "send" : "recv",
      message: describe(socketError.cause),
      cause: socketError.cause
    })
  if (inHandshake)
    return new NbdError.ProtocolError({
      errno: "",
      operation: "recv",
      message: DISCONNECTED
    })
  return undefined
}

/** The counters of bytes and chunks a connection moves (libnbd's stats_* calls). */
export interface Stats {
  bytesSent: number
  chunksSent: number
  bytesReceived: number
  chunksReceived: number
  /** Connections opened again after a drop, by the reconnect schedule. */
  reconnects: number
}

/**
 * What a connection needs of the handle that owns it, and no more: where to count, what the handshake
 * negotiated (how replies are framed), and whom to tell that the connection has ended.
 */
export interface Host {
  readonly stats: Stats
  /** What the transport offers besides the socket: here, a synchronous write. */
  readonly transport: Transport.Service | undefined
  readonly structuredReplies: boolean
  readonly extendedHeaders: boolean
  /** The connection has ended, with the error that ended it (undefined for a clean end). */
  readonly connectionEnded: (error: NbdError.NbdError | undefined) => Effect.Effect<void>
  /**
   * Offered the commands still waiting when the connection ends, in the order they were queued: true when
   * the host keeps them for a reconnect to replay, false when they fail here with ENOTCONN.
   */
  readonly adopt: (error: NbdError.NbdError | undefined, waiting: Iterable<Pending>) => boolean
}

/**
 * One connection: a reader that feeds the decoders, a writer that drains one queue, and the map of
 * commands waiting for replies.
 */
export class Connection {
  readonly handshake = new ClientCodec.HandshakeDecoder()
  replies: ClientCodec.ReplyDecoder | undefined = undefined
  readonly pending = new Map<number, Pending>()
  /** Commands queued or waiting for a reply. */
  inFlight = 0
  private nextCookie: number
  private disconnecting = false
  /** Set while the writer's socket write is in progress. */
  private writerWriting = false
  private writesEnded = false
  /** Set once the reader has stopped: the error it stopped with, or undefined for a clean end. */
  ended: { readonly error: NbdError.NbdError | undefined } | undefined = undefined
  readonly endedSignal: Deferred.Deferred<void>
  private wake: (() => void) | undefined = undefined
  /** What the writer has yet to send, in order; swapped out whole each time it wakes. */
  private outgoing: Array<Outgoing> = []
  /** Set while the writer sleeps with nothing to send: the next `enqueue` wakes it. */
  private wakeWriter: (() => void) | undefined = undefined
  /** The transport's synchronous write, when it has one. */
  private readonly tryWrite: Transport.TryWrite | undefined
  private flushScheduled = false
  /** A direct write left the socket over its high-water mark: the writer waits for it to drain. */
  private directBlocked = false
  private readerFiber: Fiber.RuntimeFiber<void> | undefined
  private writerFiber: Fiber.RuntimeFiber<void> | undefined

  private constructor(
    private readonly h: Host,
    endedSignal: Deferred.Deferred<void>,
    firstCookie: number
  ) {
    this.endedSignal = endedSignal
    this.nextCookie = firstCookie
    this.tryWrite = h.transport?.tryWrite
  }

  /**
   * Starts the reader and the writer on the socket, in the given scope. Cookies begin at `firstCookie`: a
   * reconnect continues the numbering, so replayed commands keep theirs and new ones never collide.
   */
  static start(h: Host, socket: Socket.Socket, scope: Scope.Scope, firstCookie = 1): Effect.Effect<Connection> {
    return Effect.gen(function* () {
      const conn = new Connection(h, yield* Deferred.make<void>(), firstCookie)
      conn.readerFiber = yield* socket.run(conn.onBytes).pipe(
        Effect.matchCauseEffect({
          onSuccess: () => conn.terminate(undefined),
          onFailure: (cause) => conn.terminate(Cause.squash(cause))
        }),
        Effect.forkIn(scope)
      )
      conn.writerFiber = yield* Effect.scoped(Effect.flatMap(socket.writer, (write) => conn.writeLoop(write))).pipe(
        Effect.catchAll((error) => conn.terminate(error)),
        Effect.forkIn(scope)
      )
      return conn
    })
  }

  /**
   * Waits until the reader and the writer have stopped. A socket runs one connection at a time: one that
   * runs again (a reconnect) must wait for the last run to finish, or the old run's end would close the new.
   */
  get stopped(): Effect.Effect<void> {
    const fibers = [this.readerFiber, this.writerFiber].filter((f): f is Fiber.RuntimeFiber<void> => f !== undefined)
    return Effect.forEach(fibers, (fiber) => Fiber.await(fiber), { discard: true })
  }

  /** True while a request is half-written or a reply half-read. */
  busy(): boolean {
    return this.writing || (this.replies !== undefined && !this.replies.idle)
  }

  /**
   * True while a write has not been taken by the kernel: the writer's, or a direct write that left the
   * socket over its high-water mark (a peer that stopped reading holds both).
   */
  get writing(): boolean {
    return this.writerWriting || this.directBlocked
  }

  private readonly onBytes = (chunk: Uint8Array): Effect.Effect<never, ClientCodec.DecodeError> | void => {
    this.h.stats.bytesReceived += chunk.length
    if (this.replies !== undefined) {
      const error = this.replies.push(chunk)
      if (error !== undefined) return Effect.fail(error)
      return
    }
    this.handshake.push(chunk)
    this.wake?.()
  }

  private writeLoop(
    write: (chunk: Uint8Array) => Effect.Effect<void, Socket.SocketError>
  ): Effect.Effect<void, Socket.SocketError> {
    const self = this
    return Effect.gen(function* () {
      while (true) {
        yield* self.nextBatch
        const items = self.outgoing
        self.outgoing = []
        // The direct path left the socket over its high-water mark: wait until what it took is sent.
        if (self.directBlocked) yield* write(EMPTY)
        // One write is framed at a time, so a command abandoned while an earlier write waits is never sent.
        let at = 0
        while (at < items.length) {
          const framed = self.nextWrite(items, at)
          for (const chunk of framed.chunks) yield* self.writeGroup(write, chunk)
          if (framed.end) return
          at = framed.next
        }
        self.directBlocked = false
      }
    })
  }

  /**
   * Frames the next socket write from `items[from]`: small items joined up to WRITE_GROUP_BYTES, then a big
   * payload on its own (never copied). Abandoned commands are skipped, the others marked sent. `end` says the
   * end of writes was reached: nothing after it is sent.
   */
  private nextWrite(
    items: ReadonlyArray<Outgoing>,
    from: number
  ): { readonly chunks: Array<Uint8Array>; readonly next: number; readonly end: boolean } {
    const group: Array<Uint8Array> = []
    let groupBytes = 0
    let big: Uint8Array | undefined
    let at = from
    let end = false
    while (at < items.length && groupBytes < WRITE_GROUP_BYTES && big === undefined) {
      const item = items[at++]!
      if (item === END_OF_WRITES) {
        end = true
        break
      }
      if (item instanceof Uint8Array) {
        group.push(item)
        groupBytes += item.length
        continue
      }
      if (item.pending.abandoned) continue
      item.pending.sent = true
      group.push(item.bytes)
      groupBytes += item.bytes.length
      const payload = item.payload
      if (payload === undefined) continue
      if (payload.length >= COPY_PAYLOAD_BELOW) big = payload
      else {
        group.push(payload)
        groupBytes += payload.length
      }
    }
    const chunks: Array<Uint8Array> = []
    if (group.length > 0) chunks.push(group.length === 1 ? group[0]! : concat(group))
    if (big !== undefined) chunks.push(big)
    return { chunks, next: at, end }
  }

  /**
   * Resumes once something is queued, or the direct path needs the socket drained. The writer wakes after
   * the fibers already scheduled have run, so the requests they queue in the meantime go out together.
   */
  private readonly nextBatch: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.outgoing.length > 0 || this.directBlocked) return resume(Effect.void)
    this.wakeWriter = () => resume(Effect.void)
    return Effect.sync(() => {
      this.wakeWriter = undefined
    })
  })

  /**
   * Queues an item. While the writer sleeps and the transport can write at once, the items queued in one
   * turn of the event loop go out together from a microtask, with no fiber step; otherwise the writer wakes.
   */
  private enqueue(item: Outgoing): void {
    this.outgoing.push(item)
    if (this.wakeWriter === undefined) return
    if (this.tryWrite !== undefined && !this.directBlocked && item !== END_OF_WRITES) {
      if (!this.flushScheduled) {
        this.flushScheduled = true
        queueMicrotask(this.flushDirect)
      }
      return
    }
    this.wakeTheWriter()
  }

  private wakeTheWriter(): void {
    const wake = this.wakeWriter
    if (wake === undefined) return
    this.wakeWriter = undefined
    wake()
  }

  /**
   * Writes what is queued straight to the transport, about DIRECT_BATCH_BYTES at a time, while it keeps up.
   * Once it is over its high-water mark, or cannot write now, the rest is left to the writer: requests stay
   * queued here, unsent, until the socket has room, as they do with the writer.
   */
  private readonly flushDirect = (): void => {
    this.flushScheduled = false
    const tryWrite = this.tryWrite
    if (tryWrite === undefined) return
    while (this.wakeWriter !== undefined && !this.directBlocked && this.outgoing.length > 0) {
      const items = this.outgoing
      if (items[0] === END_OF_WRITES) return this.wakeTheWriter()
      const chunks: Array<Uint8Array> = []
      let bytes = 0
      let at = 0
      while (at < items.length && items[at] !== END_OF_WRITES && bytes < DIRECT_BATCH_BYTES) {
        const framed = this.nextWrite(items, at)
        for (const chunk of framed.chunks) {
          chunks.push(chunk)
          bytes += chunk.length
        }
        at = framed.next
      }
      const outcome = chunks.length === 0 ? "taken" : tryWrite(chunks)
      if (outcome === "unavailable") {
        // Nothing was written (a TLS switch, a closed socket): the writer sends it, or reports why it cannot.
        for (let i = 0; i < at; i++) {
          const item = items[i]!
          if (typeof item === "object" && !(item instanceof Uint8Array)) item.pending.sent = false
        }
        return this.wakeTheWriter()
      }
      items.splice(0, at)
      this.h.stats.bytesSent += bytes
      if (outcome === "full") {
        this.directBlocked = true
        return this.wakeTheWriter()
      }
    }
  }

  private writeGroup(
    write: (chunk: Uint8Array) => Effect.Effect<void, Socket.SocketError>,
    bytes: Uint8Array
  ): Effect.Effect<void, Socket.SocketError> {
    this.writerWriting = true
    this.h.stats.bytesSent += bytes.length
    return Effect.ensuring(
      write(bytes),
      Effect.sync(() => {
        this.writerWriting = false
      })
    )
  }

  /** Queues bytes for the writer. */
  send(bytes: Uint8Array): void {
    this.h.stats.chunksSent += 1
    this.enqueue(bytes)
  }

  /** Queues the end of the write side: the socket is half-closed once what is queued before it is sent. */
  endWrites(): void {
    if (this.writesEnded) return
    this.writesEnded = true
    this.enqueue(END_OF_WRITES)
  }

  /** Waits, at most `timeout`, for the writer to send everything queued once the write side is ending. */
  drain(timeout: Duration.DurationInput): Effect.Effect<void> {
    const writer = this.writerFiber
    if (writer === undefined || !this.writesEnded) return Effect.void
    // `interruptible`: called from finalizers, where the timeout could not otherwise stop the wait.
    return Effect.ignore(Effect.timeout(Effect.interruptible(Fiber.await(writer)), timeout))
  }

  /** Waits until `decode` yields a message from the handshake bytes, or the connection ends. */
  awaitMessage<A>(decode: () => A | ClientCodec.DecodeError | undefined): Effect.Effect<A, NbdError.NbdError> {
    const attempt = (): Exit.Exit<A, NbdError.NbdError> | undefined => {
      const result = decode()
      if (result instanceof ClientCodec.DecodeError)
        return Exit.fail(
          new NbdError.ProtocolError({ errno: result.errno, operation: "handshake", message: result.message })
        )
      if (result !== undefined) {
        this.h.stats.chunksReceived += 1
        return Exit.succeed(result)
      }
      if (this.ended !== undefined)
        return Exit.fail(
          this.ended.error ??
            new NbdError.ProtocolError({
              errno: "",
              operation: "recv",
              message: DISCONNECTED
            })
        )
      return undefined
    }
    return Effect.async<A, NbdError.NbdError>((resume) => {
      const now = attempt()
      if (now !== undefined) return resume(now)
      this.wake = () => {
        const later = attempt()
        if (later !== undefined) {
          this.wake = undefined
          resume(later)
        }
      }
      return Effect.sync(() => {
        this.wake = undefined
      })
    })
  }

  /** Switches the reader to the transmission phase; bytes already buffered are decoded at once. */
  startTransmission(): Effect.Effect<void, NbdError.NbdError> {
    const mode: ClientCodec.ReplyMode = this.h.extendedHeaders
      ? "extended"
      : this.h.structuredReplies
        ? "structured"
        : "simple"
    this.replies = new ClientCodec.ReplyDecoder(this.sink, mode)
    const rest = this.handshake.rest()
    const error = rest.length > 0 ? this.replies.push(rest) : undefined
    return error === undefined ? Effect.void : this.terminate(error)
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
        this.h.extendedHeaders
      )
    )
    this.endWrites()
    return cookie
  }

  /** Registers a command and queues its request; the reply completes `pending.completion`. */
  submit(pending: Pending): void {
    this.pending.set(pending.cookie, pending)
    this.inFlight += 1
    this.h.stats.chunksSent += 1
    this.enqueue({ bytes: pending.request, payload: pending.payload, pending })
  }

  /** Queues a command again, on this new connection, as if it had never been sent. */
  replay(pending: Pending): void {
    pending.error = undefined
    pending.dataSeen = 0
    pending.sent = false
    pending.chunks?.splice(0)
    pending.restart?.()
    this.submit(pending)
  }

  /** Fails with ENOTCONN every command the writer has not yet handed to the socket; they are never sent. */
  abandonUnsent(operation: string): void {
    for (const p of this.pending.values()) {
      if (p.sent) continue
      p.abandoned = true
      this.pending.delete(p.cookie)
      this.inFlight -= 1
      p.completion.done(
        Exit.fail(
          new NbdError.ConnectionError({
            errno: "ENOTCONN",
            operation: p.operation,
            message: `abandoned by ${operation} before it was sent`
          })
        )
      )
    }
  }

  /** Ends the connection: fails every command still waiting, settles the state, stops reader and writer. */
  terminate(cause: unknown): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.ended !== undefined) return Effect.void
      const inHandshake = this.replies === undefined
      const error = endError(cause, inHandshake)
      this.ended = { error }
      this.wake?.()
      this.handOver(error)
      const fibers = [this.readerFiber, this.writerFiber].filter((f): f is Fiber.RuntimeFiber<void> => f !== undefined)
      return Effect.gen(this, function* () {
        yield* this.h.connectionEnded(error)
        yield* Deferred.succeed(this.endedSignal, undefined)
        for (const fiber of fibers) yield* Fiber.interruptFork(fiber)
      })
    })
  }

  /** Gives the commands still waiting to the host when it keeps them for a reconnect; else fails them. */
  private handOver(error: NbdError.NbdError | undefined): void {
    if (!this.disconnecting && this.h.adopt(error, this.pending.values())) {
      this.pending.clear()
      this.inFlight = 0
      return
    }
    this.failPending("the connection was closed before the server replied")
  }

  /** Fails every command still waiting with ENOTCONN. */
  failPending(message: string): void {
    for (const p of this.pending.values()) {
      p.completion.done(Exit.fail(new NbdError.ConnectionError({ errno: "ENOTCONN", operation: p.operation, message })))
    }
    this.pending.clear()
    this.inFlight = 0
  }

  private complete(p: Pending): void {
    this.pending.delete(p.cookie)
    this.inFlight -= 1
    if (p.error !== undefined) {
      p.completion.done(Exit.fail(p.error))
      return
    }
    if (p.type === Protocol.Cmd.READ && p.dataSeen !== p.count) {
      p.completion.done(
        Exit.fail(
          commandProtocolError(p, `server replied with ${p.dataSeen} bytes of data for a read of ${p.count} bytes`)
        )
      )
      return
    }
    p.completion.done(Exit.succeed(p.type === Protocol.Cmd.READ ? bufferOf(p) : undefined))
  }

  private setError(p: Pending, error: NbdError.NbdError): void {
    if (p.error === undefined) p.error = error
  }

  private readonly sink: ClientCodec.ReplySink = {
    simpleReply: (cookie, error) => {
      this.h.stats.chunksReceived += 1
      const p = cookie === undefined ? undefined : this.pending.get(cookie)
      if (p === undefined) {
        // A successful simple reply to a read we don't know may carry data of unknown length.
        if (error !== 0 || this.h.structuredReplies) return { length: 0, target: undefined }
        return new ClientCodec.DecodeError({ errno: "EPROTO", message: "no matching cookie found for server reply" })
      }
      if (error !== 0) {
        this.setError(p, serverError(p, error, ""))
        this.complete(p)
        return { length: 0, target: undefined }
      }
      if (p.type === Protocol.Cmd.READ) {
        if (this.h.structuredReplies) {
          this.setError(p, commandProtocolError(p, "server sent a simple reply to a read with structured replies on"))
          this.complete(p)
          return { length: 0, target: undefined }
        }
        p.dataSeen = p.count
        const buffer = bufferOf(p)
        return { length: p.count, target: buffer === undefined ? undefined : { buffer, at: 0 } }
      }
      this.complete(p)
      return { length: 0, target: undefined }
    },
    simpleDataDone: (cookie) => {
      const p = cookie === undefined ? undefined : this.pending.get(cookie)
      if (p !== undefined) this.complete(p)
    },
    dataChunk: (header, offset, length) => {
      this.h.stats.chunksReceived += 1
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
      const buffer = bufferOf(p)
      return buffer === undefined ? undefined : { buffer, at }
    },
    dataChunkDone: (header) => {
      const p = this.lookup(header)
      if (p !== undefined && (header.flags & Protocol.REPLY_FLAG_DONE) !== 0) this.complete(p)
    },
    chunk: (header, payload) => {
      this.h.stats.chunksReceived += 1
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
      case Protocol.ReplyType.OFFSET_HOLE: {
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
        return
      }
      case Protocol.ReplyType.ERROR:
      case Protocol.ReplyType.ERROR_OFFSET: {
        const parsed = ClientCodec.decodeErrorChunk(header.type, payload)
        if (parsed instanceof ClientCodec.DecodeError) {
          this.setError(p, commandProtocolError(p, parsed.message))
          return
        }
        if (parsed.error === 0) {
          this.setError(p, commandProtocolError(p, "server sent an error chunk with error value 0"))
          return
        }
        const error = serverError(p, parsed.error, parsed.message)
        this.setError(p, error)
        if (parsed.offset !== undefined)
          p.chunks?.push({ _tag: "Error", offset: Number(parsed.offset), errno: error.errno, message: parsed.message })
        return
      }
      case Protocol.ReplyType.BLOCK_STATUS:
      case Protocol.ReplyType.BLOCK_STATUS_EXT: {
        const expected = this.h.extendedHeaders ? Protocol.ReplyType.BLOCK_STATUS_EXT : Protocol.ReplyType.BLOCK_STATUS
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
}

/** A fresh read's buffer, made when it is first needed; undefined once the caller has stopped waiting. */
const bufferOf = (p: Pending): Uint8Array | undefined => {
  if (p.buffer === undefined && p.fresh && !p.cancelled) p.buffer = new Uint8Array(p.count)
  return p.buffer
}

/** A command error carrying the server's errno. */
export const serverError = (p: Pending, wire: number, message: string): NbdError.CommandError => {
  const name = Protocol.commandName(p.type)
  return new NbdError.CommandError({
    errno: Protocol.errnoOfWire(wire),
    operation: p.operation,
    command: name,
    message: `${name}: command failed${message ? `: ${message}` : ""}`
  })
}

const commandProtocolError = (p: Pending, message: string): NbdError.ProtocolError =>
  new NbdError.ProtocolError({ errno: "EPROTO", operation: p.operation, message })
