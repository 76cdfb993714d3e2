import * as Socket from "@effect/platform/Socket"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"

/** How much one read may take from the kernel: big enough that a 256 KiB reply arrives in a few reads. */
const READ_BUFFER_SIZE = 1024 * 1024

/**
 * A `Socket.Socket` over a Node stream socket that reads into one reused buffer (Node's `onread`), so the
 * hot path allocates nothing per read. The handler gets a view of that buffer, valid only during the call:
 * it must copy what it keeps, as the NBD decoders do.
 */
export const make = (connectOptions: Net.NetConnectOpts): Socket.Socket => {
  let current: Net.Socket | undefined
  const latch = Effect.unsafeMakeLatch(false)

  const run = <_, E = never, R = never>(
    handler: (data: Uint8Array) => Effect.Effect<_, E, R> | void,
    options?: { readonly onOpen?: Effect.Effect<void> | undefined }
  ): Effect.Effect<void, Socket.SocketError | E, R> =>
    Effect.scoped(
      Effect.gen(function* () {
        const runtime = yield* Effect.runtime<R>()
        const done = yield* Deferred.make<void, Socket.SocketError | E>()
        const buffer = Buffer.allocUnsafe(READ_BUFFER_SIZE)
        const onRead = (length: number, buf: Buffer): boolean => {
          const result = handler(buf.subarray(0, length))
          if (Effect.isEffect(result)) {
            const fiber = Runtime.runFork(runtime)(result)
            fiber.addObserver((exit) => {
              if (Exit.isFailure(exit)) Deferred.unsafeDone(done, exit as Exit.Exit<never, E>)
            })
          }
          return true
        }
        const conn = yield* open(connectOptions, buffer, onRead)
        conn.on("end", () => Deferred.unsafeDone(done, Exit.void))
        conn.on("error", (cause) =>
          Deferred.unsafeDone(done, Exit.fail(new Socket.SocketGenericError({ reason: "Read", cause })))
        )
        conn.on("close", () => Deferred.unsafeDone(done, Exit.void))
        current = conn
        yield* latch.open
        if (options?.onOpen) yield* options.onOpen
        return yield* Deferred.await(done)
      })
    ).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          latch.unsafeClose()
          current = undefined
        })
      ),
      Effect.interruptible
    )

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
        conn.write(chunk, (cause) =>
          resume(cause ? Effect.fail(new Socket.SocketGenericError({ reason: "Write", cause })) : Effect.void)
        )
      })
    )

  const writer = Effect.acquireRelease(Effect.succeed(write), () =>
    Effect.sync(() => {
      if (current !== undefined && !current.writableEnded) current.end()
    })
  )

  return Socket.Socket.of({ [Socket.TypeId]: Socket.TypeId, run, runRaw: run, writer })
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
