/**
 * The Effect driver of one connection's engine (`engine/transmission.ts`): a reader fiber feeds it what the
 * socket receives, a writer fiber (or, while the socket keeps up, a microtask) sends what it queues, and the
 * end of either ends the engine once. Everything the protocol decides is the engine's; this file only moves
 * bytes and wakes fibers.
 */
import type * as Socket from "@effect/platform/Socket"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as ClientCodec from "../../ClientCodec.js"
import * as NbdError from "../../NbdError.js"
import type * as Transport from "../../Transport.js"
import { END_OF_WRITES, frame, type Outgoing, unframe } from "../engine/outbox.js"
import { type EngineHost, type Stats, Transmission } from "../engine/transmission.js"

export type { Pending, ReadChunk } from "../engine/pending.js"
export type { Stats } from "../engine/transmission.js"

/** What the writer writes to wait until the socket has sent what it holds. */
const EMPTY = new Uint8Array(0)

/** How long an end that does not wait for the server lets the writer hand what is queued to the socket. */
export const FLUSH_ONLY = Duration.millis(20)

/** The most a direct write hands the transport at once (a bigger single item goes alone). */
const DIRECT_BATCH_BYTES = 64 * 1024

/** What a server that closes the connection in the middle of the handshake is reported with. */
export const DISCONNECTED = "server disconnected unexpectedly"

const errnoOf = (cause: unknown): NbdError.Errno => NbdError.errnoOf(cause)

/** The server closed the connection in the middle of the handshake: a drop, that a reconnect tries again. */
const disconnected = (): NbdError.ProtocolError =>
  new NbdError.ProtocolError({ errno: "", operation: "recv", message: DISCONNECTED, reason: "Disconnected" })

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
  if (inHandshake) return disconnected()
  return undefined
}

/**
 * What a connection needs of the handle that owns it, and no more: what the engine needs, what the transport
 * offers besides the socket (a synchronous write), and whom to tell that the connection has ended.
 */
export interface Host extends EngineHost {
  readonly stats: Stats
  readonly transport: Transport.Service | undefined
  /** The connection has ended, with the error that ended it (undefined for a clean end). */
  readonly connectionEnded: (error: NbdError.NbdError | undefined) => Effect.Effect<void>
}

/**
 * One connection: its engine, a reader that feeds it, and a writer that sends what it queues.
 */
export class Connection {
  readonly engine: Transmission
  /** Set while the writer's socket write is in progress. */
  private writerWriting = false
  /** Set once the reader has stopped: the error it stopped with, or undefined for a clean end. */
  ended: { readonly error: NbdError.NbdError | undefined } | undefined = undefined
  readonly endedSignal: Deferred.Deferred<void>
  private wake: (() => void) | undefined = undefined
  /** Set while the writer sleeps with nothing to send: the next item queued wakes it. */
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
    this.tryWrite = h.transport?.tryWrite
    this.engine = new Transmission(
      h,
      { queued: (item) => this.queued(item), handshakeBytes: () => this.wake?.() },
      firstCookie
    )
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
    return this.writing || this.engine.readingReply
  }

  /**
   * True while a write has not been taken by the kernel: the writer's, or a direct write that left the
   * socket over its high-water mark (a peer that stopped reading holds both).
   */
  get writing(): boolean {
    return this.writerWriting || this.directBlocked
  }

  /** A decoding error ends the run at once, as a failure the reader fiber handles (no fiber of its own). */
  private readonly onBytes = (chunk: Uint8Array): Exit.Exit<never, ClientCodec.DecodeError> | void => {
    const error = this.engine.receive(chunk)
    if (error !== undefined) return Exit.fail(error)
  }

  private writeLoop(
    write: (chunk: Uint8Array) => Effect.Effect<void, Socket.SocketError>
  ): Effect.Effect<void, Socket.SocketError> {
    const self = this
    return Effect.gen(function* () {
      while (true) {
        yield* self.nextBatch
        const items = self.engine.queue
        self.engine.queue = []
        // The direct path left the socket over its high-water mark: wait until what it took is sent.
        if (self.directBlocked) yield* write(EMPTY)
        // One write is framed at a time, so a command abandoned while an earlier write waits is never sent.
        let at = 0
        while (at < items.length) {
          const framed = frame(items, at)
          for (const chunk of framed.chunks) yield* self.writeGroup(write, chunk)
          if (framed.end) return
          at = framed.next
        }
        self.directBlocked = false
      }
    })
  }

  /**
   * Resumes once something is queued, or the direct path needs the socket drained. The writer wakes after
   * the fibers already scheduled have run, so the requests they queue in the meantime go out together.
   */
  private readonly nextBatch: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.engine.queue.length > 0 || this.directBlocked) return resume(Effect.void)
    this.wakeWriter = () => resume(Effect.void)
    return Effect.sync(() => {
      this.wakeWriter = undefined
    })
  })

  /**
   * The engine queued an item. While the writer sleeps and the transport can write at once, the items queued
   * in one turn of the event loop go out together from a microtask, with no fiber step; otherwise the writer
   * wakes.
   */
  private queued(item: Outgoing): void {
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
   * queued, unsent, until the socket has room, as they do with the writer.
   */
  private readonly flushDirect = (): void => {
    this.flushScheduled = false
    const tryWrite = this.tryWrite
    if (tryWrite === undefined) return
    while (this.wakeWriter !== undefined && !this.directBlocked && this.engine.queue.length > 0) {
      const items = this.engine.queue
      if (items[0] === END_OF_WRITES) return this.wakeTheWriter()
      const chunks: Array<Uint8Array> = []
      let bytes = 0
      let at = 0
      while (at < items.length && items[at] !== END_OF_WRITES && bytes < DIRECT_BATCH_BYTES) {
        const framed = frame(items, at)
        for (const chunk of framed.chunks) {
          chunks.push(chunk)
          bytes += chunk.length
        }
        at = framed.next
      }
      const outcome = chunks.length === 0 ? "taken" : tryWrite(chunks)
      if (outcome === "unavailable") {
        // Nothing was written (a TLS switch, a closed socket): the writer sends it, or reports why it cannot.
        unframe(items, at)
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

  /** Waits, at most `timeout`, for the writer to send everything queued once the write side is ending. */
  drain(timeout: Duration.DurationInput): Effect.Effect<void> {
    const writer = this.writerFiber
    if (writer === undefined || !this.engine.writesEnding) return Effect.void
    // `interruptible`: called from finalizers, where the timeout could not otherwise stop the wait.
    return Effect.ignore(Effect.timeout(Effect.interruptible(Fiber.await(writer)), timeout))
  }

  /**
   * Waits until bytes arrive for the handshake that it has not looked at yet (at once if some already have),
   * or fails once the connection has ended.
   */
  readonly awaitHandshakeBytes: Effect.Effect<void, NbdError.NbdError> = Effect.async<void, NbdError.NbdError>(
    (resume) => {
      const ready = (): Exit.Exit<void, NbdError.NbdError> | undefined => {
        if (this.engine.handshake.unread) return Exit.void
        if (this.ended !== undefined) return Exit.fail(this.ended.error ?? disconnected())
        return undefined
      }
      const now = ready()
      if (now !== undefined) return resume(now)
      this.wake = () => {
        const later = ready()
        if (later !== undefined) {
          this.wake = undefined
          resume(later)
        }
      }
      return Effect.sync(() => {
        this.wake = undefined
      })
    }
  )

  /** Switches the engine to the transmission phase; bytes already buffered are decoded at once. */
  startTransmission(): Effect.Effect<void, NbdError.NbdError> {
    const error = this.engine.startTransmission()
    return error === undefined ? Effect.void : this.terminate(error)
  }

  /** Ends the connection: the engine settles every waiting command, the state follows, reader and writer stop. */
  terminate(cause: unknown): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.ended !== undefined) return Effect.void
      const inHandshake = this.engine.replies === undefined
      const error = endError(cause, inHandshake)
      this.ended = { error }
      this.wake?.()
      this.engine.end(error)
      const fibers = [this.readerFiber, this.writerFiber].filter((f): f is Fiber.RuntimeFiber<void> => f !== undefined)
      return Effect.gen(this, function* () {
        yield* this.h.connectionEnded(error)
        yield* Deferred.succeed(this.endedSignal, undefined)
        for (const fiber of fibers) yield* Fiber.interruptFork(fiber)
      })
    })
  }
}
