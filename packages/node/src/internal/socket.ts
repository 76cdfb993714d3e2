/**
 * A `Socket.Socket` over a Node stream socket that reads into reused buffers (Node's `onread`), so the hot path
 * allocates nothing per read, with a synchronous `tryWrite` and an in-place STARTTLS upgrade.
 *
 * Reads and pulls: each read lands in a region of one of two 1 MiB buffers, and `pull` hands out every view
 * read since the last pull as one batch. A view stays valid until the next `pull` (the consumer copies what it
 * keeps, as the NBD decoders do): a region is read into again only once the views in it are pending for no
 * pull and were delivered by none but an earlier one. When no free region is left, the read callback returns
 * false, which pauses the socket (the kernel's window closes and the peer waits), and the pull that frees a
 * region resumes it: backpressure reaches the peer, and nothing is buffered above these two buffers.
 *
 * After a TLS upgrade the TLS socket is read in paused mode (`read()` on each pull): Node gives TLS no reused
 * buffer, so its chunks are fresh and stay valid.
 */
import type { Transport } from "@effect-nbd/core"
import type { NonEmptyReadonlyArray } from "effect/Array"
import * as Effect from "effect/Effect"
import * as Latch from "effect/Latch"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as Net from "node:net"
import * as Tls from "node:tls"

/** How much one buffer holds: big enough that a 256 KiB reply arrives in a few reads. */
const READ_BUFFER_SIZE = 1024 * 1024

/** The smallest region worth a read: below it, reads go on in the other buffer. */
const MIN_READ = 64 * 1024

/**
 * What a connection reads with (Node's `onread`): `buffer` gives the region the next read fills (Node asks for
 * it after each read), `callback` takes each read and returns false to pause the socket.
 */
export interface OnRead {
  readonly buffer: () => Uint8Array
  readonly callback: (length: number, buf: Uint8Array) => boolean
}

/**
 * How the reader gets its connection: options for `net.createConnection`, or a function that opens a
 * connected `net.Socket` reading through the given `onread`, for the scope of the reader (the other
 * transports: several addresses in turn, an inherited fd, a subprocess, socket activation).
 */
export type Connect =
  Net.NetConnectOpts | ((onread: OnRead) => Effect.Effect<Net.Socket, Socket.SocketError, Scope.Scope>)

/**
 * A socket from `makeUpgradable`, with the synchronous write and the STARTTLS hook of its live connection.
 */
export interface Upgradable {
  readonly socket: Socket.Socket
  /** Writes at once while a connection is open and not switching to TLS (the transport's `tryWrite`). */
  readonly tryWrite: Transport.TryWrite
  /**
   * Runs a TLS client handshake on the live connection (`tls.connect({ socket })`) with Node's own options
   * (what `Socket.TlsUpgradeOptions` cannot say: PSK, versions, ciphers, a host name check of its own) and,
   * once it succeeds, the reader pulls decrypted bytes and the writer writes through TLS. Writes wait while
   * the handshake runs. Fails with the TLS error, leaving the connection unusable. The reader's own
   * `upgrade` is this, with its options mapped.
   */
  readonly upgrade: (options: Tls.ConnectionOptions) => Effect.Effect<void, Socket.SocketError>
}

const socketError = (reason: Socket.SocketError["reason"]): Socket.SocketError => new Socket.SocketError({ reason })

/** An open failure (a connection that could not be made), as the transports report it. */
export const openError = (cause: unknown): Socket.SocketError =>
  socketError(new Socket.SocketOpenError({ kind: "Unknown", cause }))

const writeError = (cause: unknown): Socket.SocketError => socketError(new Socket.SocketWriteError({ cause }))

const closeError = (code: number): Socket.SocketError => socketError(new Socket.SocketCloseError({ code }))

const upgradeError = (cause: unknown): Socket.SocketError => socketError(new Socket.SocketUpgradeError({ cause }))

/**
 * A `Socket.Socket` over a Node stream socket, reading into reused buffers (see the module's notes): each
 * acquisition of its reader opens a new connection.
 */
export const make = (connect: Connect): Socket.Socket => makeUpgradable(connect).socket

type Resume = (effect: Effect.Effect<NonEmptyReadonlyArray<Uint8Array>, Socket.SocketError>) => void

/** One connection: the reader acquisition's state. */
interface Live {
  conn: Net.Socket
  /** False while a TLS handshake runs: writes wait. */
  writable: boolean
  readonly upgrade: (options: Tls.ConnectionOptions) => Effect.Effect<void, Socket.SocketError>
}

/**
 * Like `make`, with the synchronous write and the STARTTLS hook the transport service needs.
 */
export const makeUpgradable = (connect: Connect): Upgradable => {
  let live: Live | undefined
  // Open while a connection can take writes; writes made before one is open (or during a TLS switch) wait.
  const latch = Latch.makeUnsafe(false)

  const reader: Socket.Socket["reader"] = Effect.gen(function* () {
    const scope = yield* Effect.scope
    const buffers = [Buffer.allocUnsafe(READ_BUFFER_SIZE), Buffer.allocUnsafe(READ_BUFFER_SIZE)] as const
    /** The buffer reads go into, and where in it the next read starts. */
    let fill = 0
    let offset = 0
    /** Views read and not yet pulled, and the buffers they are in (bit i: buffers[i]). */
    let pending: Array<Uint8Array> = []
    let pendingMask = 0
    /** The buffers holding views the last pull delivered: valid until the next pull. */
    let lentMask = 0
    /** Whether the plaintext socket is paused, waiting for `fill` to be free. */
    let paused = false
    /** Set once the TLS socket reads instead. */
    let secure: Tls.TLSSocket | undefined
    let error: Socket.SocketError | undefined
    let waiter: Resume | undefined
    let conn: Net.Socket | undefined

    const take = (): NonEmptyReadonlyArray<Uint8Array> => {
      const batch = pending as unknown as NonEmptyReadonlyArray<Uint8Array>
      pending = []
      lentMask = pendingMask
      pendingMask = 0
      return batch
    }

    const resumeReading = (): void => {
      if (!paused || ((pendingMask | lentMask) & (1 << fill)) !== 0) return
      paused = false
      if (conn !== undefined && !conn.destroyed && secure === undefined) conn.resume()
    }

    /** Hands the waiting pull what there is: pending views first, then the error. */
    const drain = (): void => {
      if (waiter === undefined) return
      let batch: NonEmptyReadonlyArray<Uint8Array> | undefined
      if (pending.length > 0) batch = take()
      else if (secure !== undefined && error === undefined) {
        const chunk = secure.read() as Buffer | null
        if (chunk !== null) batch = [chunk]
      }
      if (batch === undefined && error === undefined) return
      const resume = waiter
      waiter = undefined
      resume(batch !== undefined ? Effect.succeed(batch) : Effect.fail(error!))
    }

    const onread: OnRead = {
      buffer: () => buffers[fill]!.subarray(offset),
      callback: (length, buf) => {
        pending.push(buf.subarray(0, length))
        pendingMask |= 1 << fill
        offset += length
        drain()
        if (buffers[fill]!.length - offset >= MIN_READ) return true
        fill = 1 - fill
        offset = 0
        if (((pendingMask | lentMask) & (1 << fill)) === 0) return true
        // Both buffers hold views someone may still read: stop until a pull frees this one.
        paused = true
        return false
      }
    }

    /** The end of the connection: what was read is still delivered, then the error. */
    const end = (err: Socket.SocketError): void => {
      error ??= err
      drain()
    }
    const onEnd = () => end(closeError(1000))
    const onError = (cause: Error) => end(socketError(new Socket.SocketReadError({ cause })))
    const onClose = (hadError: boolean) => end(closeError(hadError ? 1006 : 1000))
    const watch = (stream: Net.Socket): void => {
      stream.on("end", onEnd)
      stream.on("error", onError)
      stream.on("close", onClose)
    }
    const unwatch = (stream: Net.Socket): void => {
      stream.off("end", onEnd)
      stream.off("error", onError)
      stream.off("close", onClose)
    }

    // Closing the scope fails a pull that waits (the reader's contract), before the connection goes.
    yield* Scope.addFinalizer(
      scope,
      Effect.sync(() => {
        pending = []
        pendingMask = 0
        error ??= closeError(1006)
        drain()
        if (conn !== undefined) {
          unwatch(conn)
          conn.off("readable", drain)
          // Keep an error listener: a late error must not become an uncaught exception.
          conn.on("error", () => {})
          // The TLS socket over the connection goes with it (the connection's own release closes the rest).
          if (secure !== undefined) secure.destroy()
        }
        if (live === state) {
          live = undefined
          latch.closeUnsafe()
        }
      })
    )
    const state: Live = {
      conn: undefined as unknown as Net.Socket,
      writable: true,
      upgrade: (options) => upgrade(options)
    }
    const opened = yield* Scope.provide(typeof connect === "function" ? connect(onread) : open(connect, onread), scope)
    conn = opened
    watch(opened)
    state.conn = opened
    live = state
    latch.openUnsafe()

    const upgrade = (options: Tls.ConnectionOptions): Effect.Effect<void, Socket.SocketError> =>
      Effect.callback<void, Socket.SocketError>((resume) => {
        const raw = conn
        if (raw === undefined || raw.destroyed || secure !== undefined || error !== undefined || live !== state)
          return resume(Effect.fail(upgradeError(new Error("socket is already upgraded or closed"))))
        // No plaintext write may slip in while the session starts: writes wait for the latch.
        state.writable = false
        latch.closeUnsafe()
        unwatch(raw)
        // From here the TLS wrap owns the connection's reads: the plaintext `onread` sees nothing more.
        let tls: Tls.TLSSocket
        try {
          tls = Tls.connect({ ...options, socket: raw })
        } catch (cause) {
          const failure = upgradeError(cause)
          end(failure)
          return resume(Effect.fail(failure))
        }
        conn = tls
        state.conn = tls
        const cleanup = () => {
          tls.off("secureConnect", onSecure)
          tls.off("error", onFailure)
          tls.off("close", onUpgradeClose)
        }
        const onFailure = (cause: unknown): void => {
          cleanup()
          // Keep an error listener: a late error must not become an uncaught exception.
          tls.on("error", () => {})
          tls.destroy()
          const failure = upgradeError(cause)
          end(failure)
          resume(Effect.fail(failure))
        }
        const onUpgradeClose = () => onFailure(new Error("socket closed during TLS upgrade"))
        const onSecure = (): void => {
          cleanup()
          secure = tls
          watch(tls)
          tls.on("readable", drain)
          if (live === state) {
            state.writable = true
            latch.openUnsafe()
          }
          resume(Effect.void)
          drain()
        }
        tls.once("secureConnect", onSecure)
        tls.once("error", onFailure)
        tls.once("close", onUpgradeClose)
        return Effect.sync(() => {
          cleanup()
          tls.on("error", () => {})
          tls.destroy()
          end(closeError(1006))
        })
      })

    const pull = Effect.callback<NonEmptyReadonlyArray<Uint8Array>, Socket.SocketError>((resume) => {
      // The views of the last pull are done with: their buffers may be read into again.
      lentMask = 0
      waiter = resume
      drain()
      resumeReading()
      if (waiter !== resume) return
      return Effect.sync(() => {
        if (waiter === resume) waiter = undefined
      })
    })

    return {
      pull,
      upgrade: (options?: Socket.TlsUpgradeOptions) => upgrade(nodeOptions(options ?? {}))
    } satisfies Socket.Reader<Uint8Array>
  })

  const current = (): Live | undefined => {
    const l = live
    return l !== undefined && l.writable && !l.conn.destroyed ? l : undefined
  }

  /** Done once the socket took the bytes without going over its high-water mark, else once they are written. */
  const send = (
    conn: Net.Socket,
    chunks: ReadonlyArray<Uint8Array | string>
  ): Effect.Effect<void, Socket.SocketError> =>
    Effect.callback<void, Socket.SocketError>((resume) => {
      let settled = false
      const onWritten = (cause?: Error | null) => {
        if (settled) return
        settled = true
        resume(cause ? Effect.fail(writeError(cause)) : Effect.void)
      }
      let accepted = true
      try {
        if (chunks.length > 1) conn.cork()
        for (let i = 0; i < chunks.length; i++)
          accepted = i === chunks.length - 1 ? conn.write(chunks[i]!, onWritten) : conn.write(chunks[i]!)
        if (chunks.length > 1) conn.uncork()
      } catch (cause) {
        settled = true
        return resume(Effect.fail(writeError(cause)))
      }
      // The writer goes on at once, with no trip through the event loop. A later failure still ends the
      // connection, as an error event.
      if (accepted && !settled) {
        settled = true
        resume(Effect.void)
      }
    })

  const withConnection = (
    f: (conn: Net.Socket) => Effect.Effect<void, Socket.SocketError>
  ): Effect.Effect<void, Socket.SocketError> =>
    latch.whenOpen(
      Effect.suspend(() => {
        const l = current()
        return l === undefined ? Effect.fail(writeError(new Error("socket closed"))) : f(l.conn)
      })
    )

  const write = (chunk: Uint8Array | string | Socket.CloseEvent): Effect.Effect<void, Socket.SocketError> =>
    withConnection((conn) => {
      if (!Socket.isCloseEvent(chunk)) return send(conn, [chunk])
      conn.destroy()
      return Effect.void
    })

  const writeAll = (chunks: NonEmptyReadonlyArray<Uint8Array | string>): Effect.Effect<void, Socket.SocketError> =>
    withConnection((conn) => send(conn, chunks))

  const writer: Socket.Socket["writer"] = Effect.acquireRelease(Effect.succeed({ write, writeAll }), () =>
    Effect.sync(() => {
      const conn = live?.conn
      if (conn !== undefined && !conn.destroyed && !conn.writableEnded) conn.end()
    })
  )

  const upgrade = (options: Tls.ConnectionOptions): Effect.Effect<void, Socket.SocketError> =>
    Effect.suspend(() =>
      live === undefined ? Effect.fail(upgradeError(new Error("socket closed"))) : live.upgrade(options)
    )

  // One batch is corked into one writev. A failure shows later as the connection's error event.
  const tryWrite: Transport.TryWrite = (chunks) => {
    const l = current()
    if (l === undefined || l.conn.writableEnded) return "unavailable"
    const conn = l.conn
    if (chunks.length > 1) conn.cork()
    for (const chunk of chunks) conn.write(chunk)
    if (chunks.length > 1) conn.uncork()
    return conn.writableLength < conn.writableHighWaterMark ? "taken" : "full"
  }

  return { socket: Socket.make({ reader, writer }), upgrade, tryWrite }
}

const toBuffers = (input: string | Uint8Array | ReadonlyArray<string | Uint8Array>): Array<Buffer> =>
  (Array.isArray(input) ? input : [input]).map((value: string | Uint8Array) => Buffer.from(value))

/** Node's client options for the standard upgrade options. */
const nodeOptions = (options: Socket.TlsUpgradeOptions): Tls.ConnectionOptions => {
  const key = options.key
  const out: Tls.ConnectionOptions = {}
  if (options.servername !== undefined) out.servername = options.servername
  if (key !== undefined)
    out.key = (Array.isArray(key) ? key : [key]).map((k: Redacted.Redacted<string | Uint8Array>) =>
      Buffer.from(Redacted.value(k))
    )
  if (options.cert !== undefined) out.cert = toBuffers(options.cert)
  if (options.ca !== undefined) out.ca = toBuffers(options.ca)
  if (options.passphrase !== undefined) out.passphrase = Redacted.value(options.passphrase)
  if (options.alpnProtocols !== undefined) out.ALPNProtocols = [...options.alpnProtocols]
  if (options.rejectUnauthorized !== undefined) out.rejectUnauthorized = options.rejectUnauthorized
  return out
}

const open = (
  options: Net.NetConnectOpts,
  onread: OnRead
): Effect.Effect<Net.Socket, Socket.SocketError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<Net.Socket, Socket.SocketError>((resume) => {
      const conn = Net.createConnection({ ...options, onread } as Net.NetConnectOpts)
      const onError = (cause: Error) => {
        conn.destroy()
        resume(Effect.fail(openError(cause)))
      }
      conn.once("error", onError)
      conn.once("connect", () => {
        conn.off("error", onError)
        resume(Effect.succeed(conn))
      })
      return Effect.sync(() => conn.destroy())
    }),
    (conn) => Effect.sync(() => conn.destroy())
  )
