/**
 * The seam between the handshake and a transport that can encrypt its connection. After the server
 * accepts NBD_OPT_STARTTLS the handshake asks this service to run the TLS handshake on the live connection;
 * from then on the same `Socket.Socket` reads and writes through TLS. The core has no TLS of its own: a
 * transport (e.g. `@effect-nbd/node`'s TCP and Unix layers) provides the service together with its socket.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as NbdError from "./NbdError.js"

/**
 * What the handle's TLS settings ask of the upgrade, as libnbd's `set_tls_*` calls set them.
 * @since 0.1.0
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
}

/**
 * Upgrades the connection the handle is using to TLS. `upgrade` runs the TLS handshake right after the
 * server's ACK to NBD_OPT_STARTTLS and succeeds once the connection is encrypted; no plaintext may be read or
 * written across the switch.
 * @since 0.1.0
 * @category services
 */
export class StartTls extends Context.Tag("@effect-nbd/core/StartTls")<
  StartTls,
  { readonly upgrade: (settings: TlsSettings) => Effect.Effect<void, NbdError.NbdError> }
>() {}
