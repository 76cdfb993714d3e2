import * as Socket from "@effect/platform/Socket"
import type { Transport } from "@effect-nbd/core"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import * as Tls from "node:tls"

/** How much one read may take from the kernel: big enough that a 256 KiB reply arrives in a few reads. */
const READ_BUFFER_SIZE = 1024 * 1024

/**
 * A `Socket.Socket` over a Node stream socket that reads into one reused buffer (Node's `onread`), so the
 * hot path allocates nothing per read. The handler gets a view of that buffer, valid only during the call:
 * it must copy what it keeps, as the NBD decoders do.
 */
export const make = (connect: Connect): Socket.Socket => makeUpgradable(connect).socket

/** The reused buffer and the callback a connection reads with (Node's `onread`). */
export interface OnRead {
  readonly buffer: Buffer
  readonly callback: (length: number, buf: Buffer) => boolean
}

/**
 * How `run` gets its connection: options for `net.createConnection`, or a function that opens a connected
 * `net.Socket` reading through the given `onread`, for the scope of `run` (the other transports: several
 * addresses in turn, an inherited fd, a subprocess, socket activation).
 */
export type Connect =
  Net.NetConnectOpts | ((onread: OnRead) => Effect.Effect<Net.Socket, Socket.SocketError, Scope.Scope>)

/**
 * A socket from `make` that can also be switched to TLS while it runs.
 */
export interface Upgradable {
  readonly socket: Socket.Socket
  /** Writes at once while a connection is open and not switching to TLS (the transport's `tryWrite`). */
  readonly tryWrite: Transport.TryWrite
  /**
   * Runs a TLS client handshake on the live connection (`tls.connect({ socket })`) and, once it succeeds,
   * makes the TLS socket the one `run` reads from (decrypted, to the same handler) and the writer writes to.
   * Writes wait while the handshake runs. Fails with the TLS error, leaving the connection unusable.
   */
  readonly upgrade: (options: Tls.ConnectionOptions) => Effect.Effect<void, Socket.SocketError>
}

/**
 * Like `make`, with the hook a STARTTLS upgrade needs.
 */
export const makeUpgradable = (connect: Connect): Upgradable => {
  let current: Net.Socket | undefined
  /** Set by `run`: hands a TLS socket the running handler and end signals. */
  let adopt: ((secure: Tls.TLSSocket) => void) | undefined
  const latch = Effect.unsafeMakeLatch(false)
  /** Whether the latch is open: what `tryWrite` checks without an effect. */
  let writable = false
  /** Counts runs: a run that ends after a newer one began (a reconnect) must not touch the newer one's state. */
  let runs = 0

  const run = <_, E = never, R = never>(
    handler: (data: Uint8Array) => Effect.Effect<_, E, R> | void,
    options?: { readonly onOpen?: Effect.Effect<void> | undefined }
  ): Effect.Effect<void, Socket.SocketError | E, R> =>
    Effect.suspend(() => {
      const generation = ++runs
      return Effect.scoped(
        Effect.gen(function* () {
          const runtime = yield* Effect.runtime<R>()
          const done = yield* Deferred.make<void, Socket.SocketError | E>()
          const buffer = Buffer.allocUnsafe(READ_BUFFER_SIZE)
          const deliver = (data: Uint8Array): void => {
            const result = handler(data)
            if (!Effect.isEffect(result)) return
            // A failure the handler already holds ends the run at once, with no fiber.
            if (Exit.isExit(result)) {
              if (Exit.isFailure(result)) Deferred.unsafeDone(done, result as Exit.Exit<never, E>)
              return
            }
            // The fiber ends with the handler's exit as its value: its failure is the run's, never a fiber
            // that ends unobserved (which Effect reports as an unhandled error).
            const fiber = Runtime.runFork(runtime)(Effect.exit(result))
            fiber.addObserver((exit) => {
              const outcome: Exit.Exit<unknown, unknown> = Exit.isSuccess(exit) ? exit.value : exit
              if (Exit.isFailure(outcome)) Deferred.unsafeDone(done, outcome as Exit.Exit<never, E>)
            })
          }
          const onRead = (length: number, buf: Buffer): boolean => {
            deliver(buf.subarray(0, length))
            return true
          }
          const watch = (stream: Net.Socket): void => {
            stream.on("end", () => Deferred.unsafeDone(done, Exit.void))
            stream.on("error", (cause) =>
              Deferred.unsafeDone(done, Exit.fail(new Socket.SocketGenericError({ reason: "Read", cause })))
            )
            stream.on("close", () => Deferred.unsafeDone(done, Exit.void))
          }
          const conn = yield* typeof connect === "function"
            ? connect({ buffer, callback: onRead })
            : open(connect, buffer, onRead)
          watch(conn)
          current = conn
          adopt = (secure) => {
            // TLS reads allocate per chunk (Node offers no reused buffer for TLS); the handler copies anyway.
            secure.on("data", deliver)
            watch(secure)
            current = secure
          }
          yield* latch.open
          writable = true
          if (options?.onOpen) yield* options.onOpen
          return yield* Deferred.await(done)
        })
      ).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            if (generation !== runs) return
            latch.unsafeClose()
            writable = false
            current = undefined
            adopt = undefined
          })
        ),
        Effect.interruptible
      )
    })

  const write = (chunk: Uint8Array | string | Socket.CloseEvent): Effect.Effect<void, Socket.SocketError> =>
    latch.whenOpen(
      Effect.async<void, Socket.SocketError>((resume) => {
        const conn = current
        if (conn === undefined || conn.destroyed)
          return resume(
            Effect.fail(new Socket.SocketGenericError({ reason: "Write", cause: new Error("socket closed") }))
          )
        if (Socket.isCloseEvent(chunk)) {
          conn.destroy()
          return resume(Effect.void)
        }
        // Done once the socket has taken the bytes without going over its high-water mark: the writer goes on
        // at once, with no trip through the event loop. A later failure still ends the run, as an error event.
        let settled = false
        const accepted = conn.write(chunk, (cause) => {
          if (settled) return
          settled = true
          resume(cause ? Effect.fail(new Socket.SocketGenericError({ reason: "Write", cause })) : Effect.void)
        })
        if (accepted && !settled) {
          settled = true
          resume(Effect.void)
        }
      })
    )

  const writer = Effect.acquireRelease(Effect.succeed(write), () =>
    Effect.sync(() => {
      if (current !== undefined && !current.writableEnded) current.end()
    })
  )

  const upgrade = (options: Tls.ConnectionOptions): Effect.Effect<void, Socket.SocketError> =>
    Effect.async<void, Socket.SocketError>((resume) => {
      const raw = current
      const take = adopt
      if (raw === undefined || raw.destroyed || take === undefined)
        return resume(Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause: new Error("socket closed") })))
      // No plaintext write may slip in while the session starts: writes wait for the latch.
      latch.unsafeClose()
      writable = false
      // From here the TLS wrap owns the connection's reads: the plaintext `onread` handler sees nothing more.
      const secure = Tls.connect({ ...options, socket: raw })
      const onError = (cause: Error): void => {
        secure.off("secureConnect", onSecure)
        // Keep an error listener: a late error must not become an uncaught exception.
        secure.on("error", () => {})
        secure.destroy()
        resume(Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause })))
      }
      const onSecure = (): void => {
        secure.off("error", onError)
        take(secure)
        latch.unsafeOpen()
        writable = true
        resume(Effect.void)
      }
      secure.once("error", onError)
      secure.once("secureConnect", onSecure)
      return Effect.sync(() => {
        secure.off("error", onError)
        secure.off("secureConnect", onSecure)
        secure.on("error", () => {})
        secure.destroy()
      })
    })

  // One batch is corked into one writev. A failure shows later as the connection's error event.
  const tryWrite: Transport.TryWrite = (chunks) => {
    const conn = current
    if (!writable || conn === undefined || conn.destroyed || conn.writableEnded) return "unavailable"
    if (chunks.length > 1) conn.cork()
    for (const chunk of chunks) conn.write(chunk)
    if (chunks.length > 1) conn.uncork()
    return conn.writableLength < conn.writableHighWaterMark ? "taken" : "full"
  }

  return {
    socket: Socket.Socket.of({ [Socket.TypeId]: Socket.TypeId, run, runRaw: run, writer }),
    upgrade,
    tryWrite
  }
}

const open = (
  options: Net.NetConnectOpts,
  buffer: Buffer,
  callback: (length: number, buf: Buffer) => boolean
): Effect.Effect<Net.Socket, Socket.SocketError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<Net.Socket, Socket.SocketError>((resume) => {
      const conn = Net.createConnection({ ...options, onread: { buffer, callback } } as Net.NetConnectOpts)
      const onError = (cause: Error) => resume(Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause })))
      conn.once("error", onError)
      conn.once("connect", () => {
        conn.off("error", onError)
        resume(Effect.succeed(conn))
      })
    }),
    (conn) => Effect.sync(() => conn.destroy())
  )
