/**
 * The Effect driver of one connection's engine (`engine/transmission.ts`): a reader fiber pulls what the
 * socket receives and hands each chunk to the engine at once (a chunk may be a view into a buffer the socket
 * reuses, valid only until the next pull: the engine copies what it keeps), one sender sends what it queues (a microtask with the transport's `tryWrite` while the
 * socket keeps up, else the writer fiber), and the end of the reader or the writer ends the engine once.
 * Everything the protocol decides is the engine's; this file only moves bytes and wakes fibers.
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as ClientCodec from "../../ClientCodec.js"
import * as NbdError from "../../NbdError.js"
import type * as Transport from "../../Transport.js"
import { END_OF_WRITES, frame, unframe } from "../engine/outbox.js"
import { type EngineHost, type Stats, Transmission } from "../engine/transmission.js"

export type { Pending, ReadChunk } from "../engine/pending.js"
export type { Stats } from "../engine/transmission.js"

/** What the writer writes to wait until the socket has sent what it holds. */
const EMPTY = new Uint8Array(0)

/** How long an end that does not wait for the server lets the writer hand what is queued to the socket. */
export const FLUSH_ONLY = Duration.millis(20)

/** The most a flush hands the transport in one `tryWrite` (a bigger single item goes alone). */
const DIRECT_BATCH_BYTES = 64 * 1024

/** What a server that closes the connection in the middle of the handshake is reported with. */
export const DISCONNECTED = "server disconnected unexpectedly"

const encoder = new TextEncoder()

const errnoOf = (cause: unknown): NbdError.Errno => NbdError.errnoOf(cause)

/** The server closed the connection in the middle of the handshake: a drop, that a reconnect tries again. */
const disconnected = (): NbdError.ProtocolError =>
  new NbdError.ProtocolError({ errno: "", operation: "recv", message: DISCONNECTED, reason: "Disconnected" })

const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : "unknown error"

/** The socket's error as the connection error the handle reports; undefined for the server's clean close. */
const socketEndError = (error: Socket.SocketError): NbdError.ConnectionError | undefined => {
  const reason = error.reason
  switch (reason._tag) {
    case "SocketOpenError":
      return new NbdError.ConnectionError({
        errno: errnoOf(reason.cause) || (reason.kind === "Timeout" ? "ETIMEDOUT" : ""),
        operation: "connect",
        message: describe(reason.cause),
        cause: reason.cause
      })
    case "SocketCloseError":
      // 1000 is the end of the stream (the server closed); any other code, a connection torn down.
      if (reason.code === 1000) return undefined
      return new NbdError.ConnectionError({
        errno: "ECONNRESET",
        operation: "recv",
        message: "connection reset",
        cause: reason
      })
    default:
      return new NbdError.ConnectionError({
        errno: errnoOf(reason.cause) || "ECONNRESET",
        operation: reason._tag === "SocketWriteError" ? "send" : "recv",
        message: describe(reason.cause ?? reason),
        cause: reason.cause
      })
  }
}

/** Maps why the reader stopped to the error the handle reports. */
const endError = (cause: unknown, inHandshake: boolean): NbdError.NbdError | undefined => {
  if (cause instanceof ClientCodec.DecodeError)
    return new NbdError.ProtocolError({ errno: cause.errno, operation: "recv", message: cause.message })
  const error = Socket.isSocketError(cause) ? socketEndError(cause) : undefined
  if (error !== undefined) return error
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
  /**
   * The same, at once, for the state only: called before the commands still waiting fail, since a fiber
   * waiting on one resumes as soon as it settles, and must find the connection's end in the state.
   */
  readonly connectionEnding: (error: NbdError.NbdError | undefined) => void
}

/**
 * Who sends what the engine queues next. One field, so the two ways of writing never both run:
 * - `idle`: nothing is being sent; the next item queued schedules a flush (or hands over to the writer);
 * - `flush`: a microtask will send the queue with the transport's synchronous `tryWrite`;
 * - `writer`: the writer fiber sends it through the socket's writer (no `tryWrite`, the transport could not
 *   take it now, or the end of writes is next), until the queue is empty;
 * - `writing`: the same, while a socket write has not returned (a peer that stopped reading holds it here);
 * - `drain`: the same, after a `tryWrite` left the transport over its high-water mark: the writer first waits
 *   until the socket has sent what it holds, so a peer that stops reading stops us writing.
 */
type Sender = "idle" | "flush" | "writer" | "writing" | "drain"

/**
 * One connection: its engine, a reader that feeds it, and one sender of what it queues.
 */
export class Connection {
  readonly engine: Transmission
  /** Set once the reader has stopped: the error it stopped with, or undefined for a clean end. */
  ended: { readonly error: NbdError.NbdError | undefined } | undefined = undefined
  readonly endedSignal: Deferred.Deferred<void>
  private wake: (() => void) | undefined = undefined
  private sender: Sender = "idle"
  /** Resumes the writer fiber, while it waits for the queue to be handed over. */
  private resumeWriter: (() => void) | undefined = undefined
  /** The transport's synchronous write, when it has one. */
  private readonly tryWrite: Transport.TryWrite | undefined
  private readerFiber: Fiber.Fiber<void> | undefined
  private writerFiber: Fiber.Fiber<void> | undefined

  private constructor(
    private readonly h: Host,
    endedSignal: Deferred.Deferred<void>,
    firstCookie: number
  ) {
    this.endedSignal = endedSignal
    this.tryWrite = h.transport?.tryWrite
    // The engine fails the commands still waiting when the handle does not keep them for a reconnect: the
    // state says the connection has ended first.
    const host: EngineHost = {
      stats: h.stats,
      adopt: (error, waiting) => {
        if (h.adopt(error, waiting)) return true
        h.connectionEnding(error)
        return false
      }
    }
    this.engine = new Transmission(
      host,
      { queued: () => this.queued(), handshakeBytes: () => this.wake?.() },
      firstCookie
    )
  }

  /**
   * Starts the reader and the writer on the socket, as fibers in the given scope. Each holds its side of the
   * socket in a scope of its own: the reader's (for a socket that connects when its reader is acquired, the
   * connection itself) closes when the reader stops, so a reconnect never leaves the last connection open;
   * the writer's closes after the end of writes, which shuts the write side (the FIN after NBD_CMD_DISC).
   * Cookies begin at `firstCookie`: a reconnect continues the numbering, so replayed commands keep theirs and
   * new ones never collide.
   */
  static start(h: Host, socket: Socket.Socket, scope: Scope.Scope, firstCookie = 1): Effect.Effect<Connection> {
    return Effect.gen(function* () {
      const conn = new Connection(h, yield* Deferred.make<void>(), firstCookie)
      conn.readerFiber = yield* Effect.scoped(
        Effect.flatMap(socket.reader, (reader) => conn.readLoop(reader.pull))
      ).pipe(
        Effect.matchCauseEffect({
          onSuccess: () => conn.terminate(undefined),
          onFailure: (cause) => conn.terminate(Cause.squash(cause))
        }),
        Effect.forkIn(scope)
      )
      conn.writerFiber = yield* Effect.scoped(Effect.flatMap(socket.writer, (writer) => conn.writeLoop(writer))).pipe(
        Effect.catch((error) => conn.terminate(error)),
        Effect.forkIn(scope)
      )
      return conn
    })
  }

  /**
   * The reader: pulls what the socket received and hands each chunk to the engine synchronously, until the
   * socket ends (its pull fails, at the end of the stream too) or the engine finds garbage.
   */
  private readLoop(
    pull: Effect.Effect<ReadonlyArray<Uint8Array | string>, Socket.SocketError>
  ): Effect.Effect<never, Socket.SocketError | ClientCodec.DecodeError> {
    const received = (chunks: ReadonlyArray<Uint8Array | string>): Effect.Effect<void, ClientCodec.DecodeError> => {
      for (const chunk of chunks) {
        const error = this.engine.receive(typeof chunk === "string" ? encoder.encode(chunk) : chunk)
        if (error !== undefined) return Effect.fail(error)
      }
      return Effect.void
    }
    // No yield of its own between pulls: a pull with nothing to give suspends anyway, and the scheduler's
    // budget still interrupts a long run of pulls that never wait.
    return Effect.forever(Effect.flatMap(pull, received), { disableYield: true })
  }

  /**
   * Waits until the reader and the writer have stopped. A socket runs one connection at a time: one that
   * runs again (a reconnect) must wait for the last run to finish, or the old run's end would close the new.
   */
  get stopped(): Effect.Effect<void> {
    const fibers = [this.readerFiber, this.writerFiber].filter((f): f is Fiber.Fiber<void> => f !== undefined)
    return Effect.forEach(fibers, (fiber) => Fiber.await(fiber), { discard: true })
  }

  /** True while a request is half-written or a reply half-read. */
  busy(): boolean {
    return this.writing || this.engine.readingReply
  }

  /**
   * True while a write has not been taken by the socket: the writer's, or a flush's that left the transport
   * over its high-water mark (a peer that stopped reading holds both).
   */
  get writing(): boolean {
    return this.sender === "writing" || this.sender === "drain"
  }

  /**
   * The engine queued an item. An idle sender starts: a flush from a microtask when the transport can write
   * at once, so the items queued in one turn of the event loop go out together with no fiber step; the
   * writer fiber otherwise. A busy sender takes the item with the rest.
   */
  private queued(): void {
    if (this.sender !== "idle") return
    if (this.tryWrite === undefined) return this.handOver("writer")
    this.sender = "flush"
    queueMicrotask(this.flush)
  }

  /** Gives the queue to the writer fiber. */
  private handOver(sender: "writer" | "drain"): void {
    this.sender = sender
    const resume = this.resumeWriter
    if (resume === undefined) return
    this.resumeWriter = undefined
    resume()
  }

  /**
   * Writes the queue straight to the transport, about DIRECT_BATCH_BYTES at a time (a bigger single item
   * goes alone), one batch framed at a time, while the transport keeps up. The rest goes to the writer: the
   * end of writes, what the transport could not take now (a TLS switch, a closed socket), and everything
   * after a batch that left it over its high-water mark (the writer waits for the socket to drain first).
   */
  private readonly flush = (): void => {
    const tryWrite = this.tryWrite!
    const items = this.engine.queue
    while (items.length > 0 && this.ended === undefined) {
      if (items[0] === END_OF_WRITES) return this.handOver("writer")
      const chunks: Array<Uint8Array> = []
      let bytes = 0
      let at = 0
      while (at < items.length && items[at] !== END_OF_WRITES && bytes < DIRECT_BATCH_BYTES) {
        const framed = frame(items, at)
        for (const chunk of framed.chunks) {
          chunks.push(chunk)
          bytes += chunk.length
        }
        // The end of writes stays queued for the writer, which shuts the write side once it is reached.
        if (framed.end) {
          at = framed.next - 1
          break
        }
        at = framed.next
      }
      const outcome = chunks.length === 0 ? "taken" : tryWrite(chunks)
      if (outcome === "unavailable") {
        // Nothing was written: the writer sends it, or reports why it cannot.
        unframe(items, at)
        return this.handOver("writer")
      }
      items.splice(0, at)
      this.h.stats.bytesSent += bytes
      if (outcome === "full") return this.handOver("drain")
    }
    this.sender = "idle"
  }

  /**
   * The writer fiber: sleeps until the queue is handed over, then sends it through the socket's writer,
   * framing one write at a time so a command abandoned while an earlier write waits is never sent, until
   * the queue is empty (the sender is idle again) or the end of writes is sent (the writer's scope then
   * shuts the write side).
   */
  private writeLoop(writer: Socket.Writer): Effect.Effect<void, Socket.SocketError> {
    const self = this
    return Effect.gen(function* () {
      while (true) {
        yield* self.handedOver
        // A flush left the socket over its high-water mark: wait until what it took is sent.
        if (self.sender === "drain") yield* writer.write(EMPTY)
        self.sender = "writer"
        const items = self.engine.queue
        while (items.length > 0) {
          const framed = frame(items, 0)
          items.splice(0, framed.next)
          const [first, ...rest] = framed.chunks
          if (first !== undefined) {
            for (const chunk of framed.chunks) self.h.stats.bytesSent += chunk.length
            self.sender = "writing"
            // One batch, one corked write.
            yield* writer.writeAll([first, ...rest])
            self.sender = "writer"
          }
          if (framed.end) return
        }
        self.sender = "idle"
      }
    })
  }

  /**
   * Resumes once the queue is handed over to the writer. It wakes after the fibers already scheduled have
   * run, so the requests they queue in the meantime go out together: a resumed fiber would otherwise run at
   * once, inside the call that queued the first request.
   */
  private readonly handedOver: Effect.Effect<void> = Effect.callback<void>((resume) => {
    if (this.sender !== "idle" && this.sender !== "flush") return resume(Effect.void)
    this.resumeWriter = () => resume(Effect.yieldNow)
    return Effect.sync(() => {
      this.resumeWriter = undefined
    })
  })

  /** Waits, at most `timeout`, for the writer to send everything queued once the write side is ending. */
  drain(timeout: Duration.Input): Effect.Effect<void> {
    const writer = this.writerFiber
    if (writer === undefined || !this.engine.writesEnding) return Effect.void
    // `interruptible`: called from finalizers, where the timeout could not otherwise stop the wait.
    return Effect.ignore(Effect.timeout(Effect.interruptible(Fiber.await(writer)), timeout))
  }

  /**
   * Waits until bytes arrive for the handshake that it has not looked at yet (at once if some already have),
   * or fails once the connection has ended.
   */
  readonly awaitHandshakeBytes: Effect.Effect<void, NbdError.NbdError> = Effect.callback<void, NbdError.NbdError>(
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
      // After NBD_CMD_DISC nothing is kept for a reconnect: the engine fails what waits without asking.
      if (this.engine.disconnectRequested) this.h.connectionEnding(error)
      this.engine.end(error)
      const fibers = [this.readerFiber, this.writerFiber].filter((f): f is Fiber.Fiber<void> => f !== undefined)
      return Effect.andThen(
        this.h.connectionEnded(error),
        Effect.andThen(
          Deferred.succeed(this.endedSignal, undefined),
          Effect.sync(() => {
            for (const fiber of fibers) fiber.interruptUnsafe()
          })
        )
      )
    })
  }
}
