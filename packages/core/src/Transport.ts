/**
 * The seam between a handle and the transport that connected it. A transport's layer gives a
 * `Socket.Socket` and, beside it, this service: what else the handle may ask of the connection. The core has
 * no TLS, addresses or processes of its own; the transport says what it can do:
 *
 * - `startTls`: after the server accepts NBD_OPT_STARTTLS, run the TLS handshake on the live connection, so
 *   that from then on the same `Socket.Socket` reads and writes through TLS;
 * - `address`: where the connection goes, so `Nbd.getUri` can build a URI that reconnects the same way;
 * - `subprocess`: the server process the transport started for this connection (`nbdkit -s`, socket
 *   activation), for `Nbd.getSubprocessPid` and `Nbd.killSubprocess`; the transport reaps it.
 *
 * A socket without the service connects in plaintext with no address: "allow" TLS stays in plaintext,
 * "require" fails with ENOTSUP, and `getUri` fails with EINVAL.
 *
 * What a connection asks of the `Socket.Socket` itself:
 *
 * - it acquires the socket's `reader` once per connection (a reconnect acquires it again), and releases it
 *   when the connection ends: a socket that opens its connection when its reader is acquired (as
 *   `NodeSocket`'s do) opens one per acquisition, and closes it on release;
 * - it hands every chunk of each batch `pull` gives to the decoder at once, before it pulls again, and the
 *   decoder copies what it keeps: a socket may give views into a buffer it reuses, valid only until the
 *   next `pull`. A `pull` that fails ends the connection: with `SocketCloseError` code 1000 (the server
 *   closed the stream) cleanly, with anything else as a ConnectionError;
 * - it writes each batch of requests with one `writeAll` (one corked write), and releases the writer's
 *   scope after the end of writes (NBD_CMD_DISC), which must shut the write side (a FIN, as `NodeSocket`'s
 *   writer does with `end()`): some servers close only once they see it.
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as NbdError from "./NbdError.js"
import type * as NbdUri from "./NbdUri.js"

/**
 * What the handle's TLS settings ask of the upgrade, as libnbd's `set_tls_*` calls set them.
 * @since 0.2.0
 * @category models
 */
export interface TlsSettings {
  /** Directory with `ca-cert.pem` and optionally `client-cert.pem` + `client-key.pem` (X.509). */
  readonly certificates: string | undefined
  /** Whether the server's certificate (and host name, when one is known) is checked; default true. */
  readonly verifyPeer: boolean
  /** The PSK identity; undefined means the local login name. */
  readonly username: string | undefined
  /** The name the server's certificate must carry; undefined means the host the transport connected to. */
  readonly hostname: string | undefined
  /** A PSK keys file (`username:hexkey` lines, as psktool writes); when set, PSK is used instead of X.509. */
  readonly pskFile: string | undefined
  /**
   * The GnuTLS priority string (`Nbd.setTlsPriority`; "NORMAL" by default), checked when it was set: a
   * transport maps it with `TlsPriority.parse`, the function that checked it.
   */
  readonly priority: string
}

/**
 * A server process a transport started for its connection.
 * @since 0.2.0
 * @category models
 */
export interface Subprocess {
  /** The process id, once the process has started; undefined before. */
  readonly pid: () => number | undefined
  /** Sends `signal` to the process; false when it has exited (or never started). */
  readonly kill: (signal: string) => boolean
}

/**
 * What a transport offers besides its socket.
 * @since 0.2.0
 * @category models
 */
export interface Service {
  /**
   * Upgrades the connection to TLS right after the server's ACK to NBD_OPT_STARTTLS; succeeds once the
   * connection is encrypted. No plaintext may be read or written across the switch. Undefined when the
   * connection cannot be encrypted.
   */
  readonly startTls: ((settings: TlsSettings) => Effect.Effect<void, NbdError.NbdError>) | undefined
  /**
   * Where the connection goes, as a URI's transport part; undefined when unknown (an inherited socket). A
   * function, as some transports learn it only once connected (socket activation names its socket then).
   */
  readonly address: () => NbdUri.Transport | undefined
  /** The server process serving this connection, when the transport started one. */
  readonly subprocess: Subprocess | undefined
  /**
   * Writes at once, without an effect, when the transport can: what lets a connection send the requests of
   * one turn of the event loop with no fiber step. Undefined when it cannot; the socket's writer is used.
   */
  readonly tryWrite: TryWrite | undefined
}

/**
 * A synchronous write of chunks, in order and as one batch: "taken" when the transport took them and has room
 * for more, "full" when it took them but is over its high-water mark (nothing more should be written until
 * it drains), "unavailable" when it took nothing (no open connection, or a TLS switch in progress).
 * @since 0.2.0
 * @category models
 */
export type TryWrite = (chunks: ReadonlyArray<Uint8Array>) => "taken" | "full" | "unavailable"

/**
 * The transport service a socket layer provides with its `Socket.Socket`.
 * @since 0.2.0
 * @category services
 */
export class Transport extends Context.Service<Transport, Service>()("@effect-nbd/core/Transport") {}

/**
 * A transport service; what is not given is not offered.
 * @since 0.2.0
 * @category constructors
 */
export const make = (service: Partial<Service>): Service => ({
  startTls: service.startTls,
  address: service.address ?? (() => undefined),
  subprocess: service.subprocess,
  tryWrite: service.tryWrite
})
