/**
 * One client connection on a socket: the Effect driver of a `Session` (session/session.ts). It feeds the
 * session the socket's bytes, writes its replies through one writer, runs the services of its requests in a
 * fiber set, upgrades the socket to TLS after STARTTLS, and ends the connection as the session asks: at
 * once, or after the requests in flight are answered and flushed.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"
import type * as Net from "node:net"
import * as Tls from "node:tls"
import * as Flow from "./flow.js"
import * as ReplyWriter from "./replyWriter.js"
import * as Session from "./session/session.js"
import type * as Settings from "./session/settings.js"

/** What the server resolves from its configuration and serves connections with (session/settings.ts). */
export type { ResolvedExport, ResolvedFault, Settings, TlsSettings } from "./session/settings.js"

/** The socket a connection reads and writes: the accepted one, then its TLS layer after STARTTLS. */
interface Io {
  socket: Net.Socket
}

/**
 * Serves one connection until the client leaves, the protocol is broken, or the scope closes.
 * @internal
 */
export const serve = (settings: Settings.Settings, conn: Net.Socket): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const requests = yield* FiberSet.make<void, never>()
    const runRequest = yield* FiberSet.runtime(requests)<never>()
    const ending = yield* Deferred.make<Settings.Ending>()
    const closed = yield* Deferred.make<void>()
    const io: Io = { socket: conn }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        io.socket.removeAllListeners("data")
        if (!io.socket.destroyed) io.socket.destroy()
        if (!conn.destroyed) conn.destroy()
      })
    )

    const end = (how: Settings.Ending): void => {
      Deferred.doneUnsafe(ending, Effect.succeed(how))
    }
    const flow = new Flow.Flow(
      settings.flow,
      () => io.socket.pause(),
      () => {
        if (io.socket.destroyed) return
        io.socket.resume()
        session.resume()
      }
    )
    const writer = new ReplyWriter.ReplyWriter(() => io.socket, flow, settings.outOfOrder)
    yield* Effect.addFinalizer(() => Effect.sync(() => writer.close()))
    const send = (out: ReadonlyArray<Uint8Array>): void => {
      flow.queued(Flow.replyCost(out))
      writer.push(out)
    }
    const fork = (effect: Effect.Effect<void>, cost: number): void => {
      flow.startService(cost)
      void runRequest(
        Effect.ensuring(
          effect,
          Effect.sync(() => flow.endService(cost))
        )
      )
    }
    const onData = (chunk: Buffer): void =>
      session.receive(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length))
    const listen = (socket: Net.Socket): void => {
      socket.on("data", onData)
      socket.on("end", () => session.clientEnded())
      socket.on("error", () => end("hard"))
      socket.on("close", () => {
        end("hard")
        Deferred.doneUnsafe(closed, Effect.void)
      })
    }

    /** Hands every reply queued so far to the socket, and waits until the socket has written it. */
    const flushQueued = Effect.gen(function* () {
      const flushed = yield* Deferred.make<void>()
      writer.push(flushed)
      yield* Deferred.await(flushed)
      if (io.socket.writableLength > 0)
        yield* Effect.callback<void>((resume) => {
          io.socket.write(new Uint8Array(0), () => resume(Effect.void))
        })
    })

    const startTls = (received: Uint8Array): void => {
      const tls = settings.tls!
      // Nothing more is read in plaintext: what already arrived goes back to the socket for the TLS layer.
      conn.off("data", onData)
      conn.pause()
      if (received.length > 0) conn.unshift(Buffer.from(received))
      void runRequest(
        Effect.gen(function* () {
          // The ACK goes out in plaintext first.
          const flushed = yield* Deferred.make<void>()
          writer.push(flushed)
          yield* Deferred.await(flushed)
          if (conn.writableLength > 0)
            yield* Effect.callback<void>((resume) => {
              conn.write(new Uint8Array(0), () => resume(Effect.void))
            })
          if (conn.destroyed) return
          const secure = new Tls.TLSSocket(conn, { ...tls.options, isServer: true })
          // A TLSSocket made directly asks for the peer's certificate (and fails a peer without one) but
          // does not act on its verification: check it against the CA before the client is heard (the
          // handshake ends before any data is read).
          const verify = tls.verifyPeer
          if (verify !== undefined)
            secure.once("secure", () => {
              if (!verify(secure.getPeerX509Certificate())) secure.destroy()
            })
          io.socket = secure
          listen(secure)
          session.tlsStarted()
        })
      )
    }

    const session = new Session.Session(settings, flow, send, fork, end, startTls)
    listen(conn)
    // A socket server hands over its connections paused, so that no byte is lost before a reader is there.
    conn.resume()

    session.start()

    const how = yield* Deferred.await(ending)
    if (how === "hard") {
      // As when a server process dies: the replies it had already written still reach the client (the kernel
      // sends what was written before the death); the requests still being served are lost.
      io.socket.removeAllListeners("data")
      if (!io.socket.destroyed) yield* Effect.raceFirst(flushQueued, Deferred.await(closed))
      return
    }
    // A soft disconnect: finish the requests in flight, flush their replies, then close.
    io.socket.removeAllListeners("data")
    yield* Effect.raceFirst(
      Effect.gen(function* () {
        yield* FiberSet.awaitEmpty(requests)
        const flushed = yield* Deferred.make<void>()
        writer.push(flushed)
        yield* Deferred.await(flushed)
        yield* Effect.callback<void>((resume) => {
          io.socket.end(() => resume(Effect.void))
        })
      }),
      Deferred.await(closed)
    )
  })
