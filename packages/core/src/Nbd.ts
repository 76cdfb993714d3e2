/**
 * The NBD client handle: libnbd's `nbd_*` calls as Effect functions over a handle whose life is a `Scope`.
 *
 * @since 0.1.0
 */
import * as Socket from "effect/socket/Socket"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Inspectable from "effect/Inspectable"
import * as Option from "effect/Option"
import type * as Pipeable from "effect/Pipeable"
import * as Predicate from "effect/Predicate"
import type * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import * as ClientCodec from "./ClientCodec.js"
import * as HandleState from "./HandleState.js"
import { invalidArgument } from "./internal/engine/arguments.js"
import * as Call from "./internal/api/call.js"
import { calls, type Spec } from "./internal/api/calls.js"
import * as commandCalls from "./internal/api/commandCalls.js"
import * as commands from "./internal/api/commands.js"
import * as connect from "./internal/session/connect.js"
import { Connection } from "./internal/session/connection.js"
import * as debug from "./internal/api/debug.js"
import { payloadMaximum } from "./internal/engine/agreement.js"
import * as internal from "./internal/session/handle.js"
import * as handshake from "./internal/session/handshake.js"
import * as lifecycle from "./internal/session/lifecycle.js"
import * as optionCalls from "./internal/api/optionCalls.js"
import { uriOf } from "./internal/session/uri.js"
import * as settingRules from "./internal/session/settings.js"
import { StateCell } from "./internal/session/stateCell.js"
import * as version from "./internal/api/version.js"
import * as NbdError from "./NbdError.js"
import * as Protocol from "./Protocol.js"
import * as Transport from "./Transport.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("@effect-nbd/core/Nbd/Handle") as never

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * An NBD handle: one connection to one export, from `make` until its scope closes. A value: it pipes, and
 * inspects (and serialises) as its name and state.
 * @since 0.1.0
 * @category models
 */
export interface Handle extends Pipeable.Pipeable, Inspectable.Inspectable {
  readonly [TypeId]: TypeId
}

/**
 * Whether a value is a handle.
 * @since 0.2.0
 * @category guards
 */
export const isHandle = (u: unknown): u is Handle => Predicate.hasProperty(u, TypeId)

/**
 * A command queued in order with its cookie; `await` gives its result or its typed error.
 * @since 0.1.0
 * @category models
 */
export interface Command<A> {
  readonly cookie: bigint
  readonly await: Effect.Effect<A, NbdError.NbdError>
}

/**
 * TLS modes, as libnbd's LIBNBD_TLS_*.
 * @since 0.1.0
 * @category models
 */
export type TlsMode = "disable" | "allow" | "require"

/**
 * The settings a handle can be made with; every one has libnbd's default.
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  readonly exportName?: string
  readonly handleName?: string
  readonly tls?: TlsMode
  readonly tlsCertificates?: string
  readonly tlsVerifyPeer?: boolean
  readonly tlsUsername?: string
  readonly tlsHostname?: string
  readonly tlsPskFile?: string
  /** The GnuTLS priority string (default "NORMAL"); see `setTlsPriority`. */
  readonly tlsPriority?: string
  readonly optMode?: boolean
  readonly requestStructuredReplies?: boolean
  readonly requestExtendedHeaders?: boolean
  readonly requestMetaContext?: boolean
  readonly metaContexts?: ReadonlyArray<string>
  readonly fullInfo?: boolean
  readonly requestBlockSize?: boolean
  readonly handshakeFlags?: number
  readonly strictMode?: number
  /**
   * How long closing the handle's scope waits for a graceful end (NBD_CMD_DISC or NBD_OPT_ABORT written and
   * the server closing the connection) before it releases the socket anyway. Default 2 seconds. A close while
   * commands are still waiting for replies (interrupted, timed out, or never awaited) or while a write is
   * stuck on a peer that stopped reading does not wait: it fails them with ENOTCONN and releases the socket
   * at once.
   */
  readonly closeGrace?: Duration.Input
  /**
   * Count and time every call through Effect's `Metric` (default false, so the hot path pays nothing):
   * `nbd_calls_total` by `call` and `outcome`, `nbd_bytes_total` by `call`, and the `nbd_call_duration`
   * timer by `call`. Any metrics layer (Prometheus, OpenTelemetry) sees them.
   */
  readonly metrics?: boolean
  /** Whether reads zero their buffer before any check (default true); see `setPreadInitialize`. */
  readonly preadInitialize?: boolean
  /** Debug messages through Effect's logger (default false); see `setDebug`. */
  readonly debug?: boolean
  /**
   * Reconnect when the connection drops (qemu's reconnect-delay), on this schedule; default: never. The
   * handle must connect through something that can be opened again: a URI, a Unix or TCP address, a command
   * line, or any `Socket` layer whose socket opens a new connection each time it runs.
   *
   * When the connection ends by EOF or a socket error while the handle is connected, the commands still
   * waiting for replies wait on, and new commands wait with them. The handle goes to Connecting, opens the
   * socket again and repeats the handshake with the same settings (TLS, export name, meta contexts,
   * structured replies, extended headers). If the export is the same (size, flags, meta contexts and their
   * ids, reply format), the waiting commands are sent again in their original order and complete as if
   * nothing had happened; the handle is Ready again and `stats` counts the reconnect. If it is not, they all
   * fail with `ExportChangedError` (ESTALE), nothing is sent, and the handle is Dead. Each failed try
   * (connect refused, dropped handshake) is fed to the schedule; when the schedule ends, they all fail with
   * ENOTCONN, the last error as the cause, and the handle is Dead.
   *
   * A server's error reply (EIO, ENOSPC, ...) is not a drop: it fails its command, as without reconnect, as
   * does a protocol error. A command whose caller stops waiting (interrupted, or `Effect.timeout`) is
   * released at once and not sent again. Writes are sent again too: NBD writes, zeroes and trims land at
   * their offset, so repeating one gives the same result.
   *
   * @example
   * ```ts
   * import { Nbd } from "@effect-nbd/core"
   * import { NodeNbd } from "@effect-nbd/node"
   * import * as Effect from "effect/Effect"
   * import * as Schedule from "effect/Schedule"
   *
   * // Ride out a server restart of up to 30 seconds, trying every 250 ms.
   * const backup = Effect.scoped(
   *   Effect.gen(function* () {
   *     const h = yield* Nbd.make({
   *       reconnect: Schedule.spaced("250 millis").pipe(Schedule.upTo({ duration: "30 seconds" })),
   *       openTimeout: "30 seconds"
   *     })
   *     yield* NodeNbd.connectUri(h, "nbd+unix:///?socket=/tmp/nbd.sock")
   *     return yield* Nbd.pread(h, 65536, 0)
   *   })
   * )
   * ```
   */
  readonly reconnect?: Schedule.Schedule<unknown, NbdError.NbdError>
  /**
   * How long the first connect keeps trying (qemu's open-timeout): while the socket cannot connect or the
   * server drops the handshake, the connect is tried again on the `reconnect` schedule (every 100 ms without
   * one) until this much time has passed. Default: one try. A refusal (an unknown export, TLS refused) fails
   * at once.
   */
  readonly openTimeout?: Duration.Input
}

/**
 * libnbd's strict-mode flags (LIBNBD_STRICT_*); the default is all of them. The same object as
 * `Protocol.Strict`, where the flags are described.
 * @since 0.1.0
 * @category constants
 */
export const Strict = Protocol.Strict

/**
 * libnbd's handshake flags (LIBNBD_HANDSHAKE_FLAG_*).
 * @since 0.1.0
 * @category constants
 */
export const HandshakeFlag = { FIXED_NEWSTYLE: 0x01, NO_ZEROES: 0x02, MASK: 0x03 } as const

/**
 * Command flags a call may be given (LIBNBD_CMD_FLAG_*).
 * @since 0.1.0
 * @category constants
 */
export const CmdFlag = Protocol.CmdFlag

/** Every handle is the record `make` built. */
const toImpl = (h: Handle): internal.HandleImpl => h as unknown as internal.HandleImpl

/** The record `make` built, as callers see it: the two TypeIds are the one registered symbol. */
const toHandle = (impl: internal.HandleImpl): Handle => impl as unknown as Handle

/** How long a close waits for a graceful end unless the settings say otherwise. */
const DEFAULT_CLOSE_GRACE = Duration.seconds(2)

/** nbd_close, when the handle's scope closes: NBD_CMD_DISC (or NBD_OPT_ABORT), then Closed. */
const closeHandle = (h: internal.HandleImpl): Effect.Effect<void> =>
  Effect.suspend(() =>
    lifecycle.end(h, h.connection, { farewell: true, awaitServer: true, error: undefined, stateFirst: false })
  )

/**
 * Makes a handle (nbd_create). Closing the scope closes it (nbd_close): a connected handle sends
 * NBD_CMD_DISC, commands still waiting fail with ENOTCONN, and the socket is released. Every setting is
 * checked by its setter's rule first: a bad one fails with `InvalidArgumentError` (operation "nbd_create",
 * the setting named in the message, the setter's errno) and no handle is made.
 *
 * @example
 * ```ts
 * import { Nbd } from "@effect-nbd/core"
 * import { NodeNbd } from "@effect-nbd/node"
 * import * as Effect from "effect/Effect"
 *
 * // The handle lives as long as its scope: closing the scope disconnects and releases the socket.
 * const size = Effect.scoped(
 *   Effect.gen(function* () {
 *     const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
 *     yield* NodeNbd.connectUri(h, "nbd://localhost/disk")
 *     return yield* Nbd.getSize(h) // bigint
 *   })
 * )
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const make = (settings: Settings = {}): Effect.Effect<Handle, NbdError.NbdError, Scope.Scope> =>
  Effect.gen(function* () {
    const invalid = settingRules.validate(calls.make.name, settings)
    if (invalid !== undefined) return yield* invalid
    // The handle's own scope closes in order, whatever the caller's does (a pool closes its handles in
    // parallel): first the close, which waits for the server's end, then the connection's reader and writer.
    // In parallel the reader would be gone before the server's end arrived, and every close would wait out
    // its whole grace.
    const scope = yield* Scope.fork(yield* Effect.scope, "sequential")
    const connectionScope = yield* Scope.fork(scope, "sequential")
    const state = yield* StateCell.make
    const { metaContexts, ...rest } = settings
    const impl = new internal.HandleImpl(state, connectionScope, {
      ...(rest as Partial<internal.Settings>),
      ...(metaContexts ? { metaContexts: [...metaContexts] } : {}),
      closeGrace:
        settings.closeGrace === undefined ? DEFAULT_CLOSE_GRACE : Duration.fromInputUnsafe(settings.closeGrace),
      openTimeout: settings.openTimeout === undefined ? undefined : Duration.fromInputUnsafe(settings.openTimeout)
    })
    yield* Scope.addFinalizer(scope, closeHandle(impl))
    if (impl.settings.debug) yield* debug.watchState(impl)
    return toHandle(impl)
  })

/**
 * Runs a call under its record (`calls.pread`) through the one wrapper: nothing happens until the effect
 * runs, then the state check, the flag check, the span, the debug log and the metrics. The body is given the
 * call's libnbd name, which its errors carry.
 */
const call = <A, E, R>(
  h: Handle,
  spec: Spec,
  body: (impl: internal.HandleImpl, operation: string) => Effect.Effect<A, E, R>,
  details?: Call.Details
): Effect.Effect<A, E | NbdError.NbdError, R> => {
  const impl = toImpl(h)
  return Call.call(impl, spec, () => body(impl, spec.name), details)
}

// ---------------------------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------------------------

/**
 * The handle's state. Ready shows as Processing while a request is half-sent or a reply half-received.
 * @since 0.1.0
 * @category state
 */
export const state = (h: Handle): Effect.Effect<HandleState.HandleState> => toImpl(h).currentState

/**
 * The handle's states as they change, starting with the current one.
 * @since 0.1.0
 * @category state
 */
export const stateChanges = (h: Handle): Stream.Stream<HandleState.HandleState> => toImpl(h).state.changes

const predicate =
  (p: (s: HandleState.HandleState) => boolean) =>
  (h: Handle): Effect.Effect<boolean> =>
    Effect.map(state(h), p)

/**
 * @since 0.1.0
 * @category state
 */
export const aioIsCreated = predicate(HandleState.isCreated)
/**
 * @since 0.1.0
 * @category state
 */
export const aioIsConnecting = predicate(HandleState.isConnecting)
/**
 * @since 0.1.0
 * @category state
 */
export const aioIsNegotiating = predicate(HandleState.isNegotiating)
/**
 * @since 0.1.0
 * @category state
 */
export const aioIsReady = predicate(HandleState.isReady)
/**
 * @since 0.1.0
 * @category state
 */
export const aioIsProcessing = predicate(HandleState.isProcessing)
/**
 * @since 0.1.0
 * @category state
 */
export const aioIsDead = predicate(HandleState.isDead)
/**
 * @since 0.1.0
 * @category state
 */
export const aioIsClosed = predicate(HandleState.isClosed)

// ---------------------------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------------------------

/**
 * libnbd's connect calls, by name: the call a connect on a socket is made as (see `ConnectOptions`).
 * @since 0.3.0
 * @category models
 */
export type ConnectCall =
  | "nbd_aio_connect_socket"
  | "nbd_connect_socket"
  | "nbd_aio_connect_uri"
  | "nbd_connect_uri"
  | "nbd_aio_connect_unix"
  | "nbd_connect_unix"
  | "nbd_aio_connect_tcp"
  | "nbd_connect_tcp"
  | "nbd_aio_connect_command"
  | "nbd_connect_command"
  | "nbd_aio_connect_systemd_socket_activation"
  | "nbd_connect_systemd_socket_activation"

/**
 * Each connect call's record, by its libnbd name: `satisfies` makes the two agree, so every name a
 * transport can pass has its record, under that very name.
 */
const connectCalls = {
  nbd_aio_connect_socket: calls.aioConnectSocket,
  nbd_connect_socket: calls.connectSocket,
  nbd_aio_connect_uri: calls.aioConnectUri,
  nbd_connect_uri: calls.connectUri,
  nbd_aio_connect_unix: calls.aioConnectUnix,
  nbd_connect_unix: calls.connectUnix,
  nbd_aio_connect_tcp: calls.aioConnectTcp,
  nbd_connect_tcp: calls.connectTcp,
  nbd_aio_connect_command: calls.aioConnectCommand,
  nbd_connect_command: calls.connectCommand,
  nbd_aio_connect_systemd_socket_activation: calls.aioConnectSystemdSocketActivation,
  nbd_connect_systemd_socket_activation: calls.connectSystemdSocketActivation
} as const satisfies { readonly [N in ConnectCall]: Spec & { readonly name: N } }

/**
 * Options of a connect on a socket.
 * @since 0.1.0
 * @category models
 */
export interface ConnectOptions {
  /**
   * The libnbd call the errors, span and state check of this connect name (default `nbd_aio_connect_socket`,
   * or `nbd_connect_socket` for `connectSocket`): a transport that wraps these calls passes its own
   * (`nbd_connect_unix`, `nbd_aio_connect_tcp`, ...), so a failure names the call the user made.
   */
  readonly operation?: ConnectCall
}

/**
 * Begins the handshake on the socket the `Socket` layer gives, and returns at once: the state is
 * Connecting right after. `connectSocket` waits for the end of the handshake. When the context also holds a
 * `Transport` service for that socket, TLS ("allow" or "require") upgrades the connection after
 * NBD_OPT_STARTTLS; without one, "allow" stays in plaintext and "require" fails with ENOTSUP.
 *
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectSocket = (
  h: Handle,
  options: ConnectOptions = {}
): Effect.Effect<void, NbdError.NbdError, Socket.Socket> =>
  beginConnect(h, connectCalls[options.operation ?? "nbd_aio_connect_socket"])

const beginConnect = (h: Handle, spec: Spec): Effect.Effect<void, NbdError.NbdError, Socket.Socket> =>
  call(h, spec, (impl, operation) => connect.startHandshake(impl, operation))

/**
 * Connects on the socket the `Socket` layer gives and waits until the handle is Ready (Negotiating in
 * option mode), or fails with the error that ended the handshake.
 *
 * @example
 * ```ts
 * import { Nbd } from "@effect-nbd/core"
 * import * as NodeSocket from "@effect/platform-node/NodeSocket"
 * import * as Effect from "effect/Effect"
 *
 * // Any layer that gives a Socket works; NodeNbd's transports are such layers.
 * const connect = (h: Nbd.Handle) =>
 *   Nbd.connectSocket(h).pipe(Effect.provide(NodeSocket.layerNet({ host: "localhost", port: 10809 })))
 * ```
 * @since 0.1.0
 * @category connecting
 */
export const connectSocket = (
  h: Handle,
  options: ConnectOptions = {}
): Effect.Effect<void, NbdError.NbdError, Socket.Socket> =>
  Effect.andThen(beginConnect(h, connectCalls[options.operation ?? "nbd_connect_socket"]), awaitConnected(h))

/**
 * Waits for a handshake begun by `aioConnectSocket` to finish.
 * @since 0.1.0
 * @category connecting
 */
export const awaitConnected = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() => {
    const done = toImpl(h).handshakeDone
    return done === undefined
      ? Effect.fail(
          new NbdError.InvalidStateError({
            errno: "ENOTCONN",
            operation: calls.awaitConnected.name,
            message: "invalid state: START: the handle must be connecting"
          })
        )
      : Deferred.await(done)
  })

/**
 * A URI that reconnects to the same export the same way (nbd_get_uri). Fails with EINVAL, as libnbd does, when the handle
 * was connected on a socket whose address is unknown.
 * @since 0.1.0
 * @category connecting
 */
export const getUri = (h: Handle): Effect.Effect<string, NbdError.NbdError> =>
  call(h, calls.getUri, (impl, operation) =>
    Effect.suspend(() => {
      const uri = uriOf(impl)
      return uri === undefined
        ? Effect.fail(invalidArgument(operation, "cannot construct a URI for this connection type"))
        : Effect.succeed(uri)
    })
  )

/**
 * The server process the handle's transport started for it (`NodeNbd.connectCommand`,
 * `connectSystemdSocketActivation`), by pid (nbd_get_subprocess_pid); ESRCH when there is none (yet).
 * @since 0.2.0
 * @category connecting
 */
export const getSubprocessPid = (h: Handle): Effect.Effect<number, NbdError.NbdError> =>
  call(h, calls.getSubprocessPid, (impl, operation) => {
    const pid = impl.transport?.subprocess?.pid()
    return pid === undefined ? Effect.fail(noSubprocess(operation)) : Effect.succeed(pid)
  })

/**
 * Sends a signal (default SIGTERM) to the handle's server process (nbd_kill_subprocess); ESRCH when there
 * is none or it has exited.
 * @since 0.2.0
 * @category connecting
 */
export const killSubprocess = (h: Handle, signal: string = "SIGTERM"): Effect.Effect<void, NbdError.NbdError> =>
  call(h, calls.killSubprocess, (impl, operation) =>
    impl.transport?.subprocess?.kill(signal) === true ? Effect.void : Effect.fail(noSubprocess(operation))
  )

const noSubprocess = (operation: string): NbdError.InvalidStateError =>
  new NbdError.InvalidStateError({ errno: "ESRCH", operation, message: "handle does not have a subprocess" })

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

const describeValue = (value: unknown): string =>
  typeof value === "string" ? JSON.stringify(value) : Array.isArray(value) ? `[${value.length}]` : String(value)

/**
 * A setter: in libnbd's order, the state check, then the setting's rule (the one `make` applies too), then
 * the change.
 */
const setting =
  <A>(rule: settingRules.Rule, apply: (impl: internal.HandleImpl, value: A) => void) =>
  (h: Handle, value: A): Effect.Effect<void, NbdError.NbdError> =>
    call(
      h,
      rule.call,
      (impl, operation) => {
        const error = rule.check(operation, value)
        if (error !== undefined) return Effect.fail(error)
        apply(impl, value)
        return Effect.void
      },
      { attributes: () => ({ value: describeValue(value) }) }
    )

/** A getter permitted in any state: it cannot fail, whatever the wrapper's type says. */
const getter =
  <A>(spec: Spec, get: (impl: internal.HandleImpl) => A) =>
  (h: Handle): Effect.Effect<A> =>
    call(h, spec, (impl) => Effect.sync(() => get(impl))) as Effect.Effect<A>

const rules = settingRules.rules

/**
 * The export to connect to (default ""). In option mode, changing it forgets what `optInfo` learned.
 * @since 0.1.0
 * @category settings
 */
export const setExportName: (h: Handle, name: string) => Effect.Effect<void, NbdError.NbdError> = setting<string>(
  rules.exportName,
  (impl, v) => {
    if (impl.settings.exportName !== v) {
      impl.agreement.info = undefined
      impl.agreement.metaValid = false
    }
    impl.settings.exportName = v
  }
)
/**
 * @since 0.1.0
 * @category settings
 */
export const getExportName = getter(calls.getExportName, (i) => i.settings.exportName)

/**
 * The name the handle's debug messages carry (default "nbd1", "nbd2", ...).
 * @since 0.1.0
 * @category settings
 */
export const setHandleName = setting<string>(rules.handleName, (i, v) => {
  i.settings.handleName = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getHandleName = getter(calls.getHandleName, (i) => i.settings.handleName)

/**
 * Whether to pause in the Negotiating state after the handshake's automatic steps (default false).
 * @since 0.1.0
 * @category settings
 */
export const setOptMode = setting<boolean>(rules.optMode, (i, v) => {
  i.settings.optMode = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getOptMode = getter(calls.getOptMode, (i) => i.settings.optMode)

/**
 * TLS: "disable" (default), "allow" or "require".
 * @since 0.1.0
 * @category settings
 */
export const setTls = setting<TlsMode>(rules.tls, (i, v) => {
  i.settings.tls = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getTls: (h: Handle) => Effect.Effect<TlsMode> = getter(calls.getTls, (i) => i.settings.tls)

/**
 * The X.509 certificates directory: `ca-cert.pem`, and optionally `client-cert.pem` with `client-key.pem`.
 * Unset, the transport looks where libnbd does (`$HOME/.pki/libnbd`, `$HOME/.config/pki/libnbd`, or
 * `/etc/pki/libnbd` for root) and falls back to the system's CAs.
 * @since 0.1.0
 * @category settings
 */
export const setTlsCertificates = setting<string>(rules.tlsCertificates, (i, v) => {
  i.settings.tlsCertificates = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getTlsCertificates = getter(calls.getTlsCertificates, (i) => i.settings.tlsCertificates)

/**
 * Whether the server's certificate is verified against the CA, and its name against the TLS host name
 * (default true).
 * @since 0.1.0
 * @category settings
 */
export const setTlsVerifyPeer = setting<boolean>(rules.tlsVerifyPeer, (i, v) => {
  i.settings.tlsVerifyPeer = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getTlsVerifyPeer = getter(calls.getTlsVerifyPeer, (i) => i.settings.tlsVerifyPeer)

/**
 * The PSK identity (default: the local login name).
 * @since 0.1.0
 * @category settings
 */
export const setTlsUsername = setting<string>(rules.tlsUsername, (i, v) => {
  i.settings.tlsUsername = v
})
/**
 * The PSK identity set, or undefined when the transport will use the local login name.
 * @since 0.1.0
 * @category settings
 */
export const getTlsUsername = getter(calls.getTlsUsername, (i) => i.settings.tlsUsername)

/**
 * The name the server's certificate must carry, in preference to the host the transport connected to (and
 * the only one for Unix sockets).
 * @since 0.1.0
 * @category settings
 */
export const setTlsHostname = setting<string>(rules.tlsHostname, (i, v) => {
  i.settings.tlsHostname = v
})
/**
 * The TLS host name set, or "" when none is (as libnbd).
 * @since 0.1.0
 * @category settings
 */
export const getTlsHostname = getter(calls.getTlsHostname, (i) => i.settings.tlsHostname ?? "")

/**
 * A PSK keys file (`username:hexkey` lines, as `psktool` writes); when set, TLS uses PSK instead of X.509.
 * @since 0.1.0
 * @category settings
 */
export const setTlsPskFile = setting<string>(rules.tlsPskFile, (i, v) => {
  i.settings.tlsPskFile = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getTlsPskFile = getter(calls.getTlsPskFile, (i) => i.settings.tlsPskFile)

/**
 * The TLS priority string, in GnuTLS's syntax as libnbd takes it (default "NORMAL"): which protocol
 * versions and ciphers TLS may use. It is mapped onto the transport's TLS options (`TlsPriority.parse`) and
 * checked now, not at connect: the keywords NORMAL, PERFORMANCE, SECURE128, PFS, SECURE192 and SECURE256
 * and the protocol versions map ("NORMAL:-VERS-TLS1.3" is TLS 1.0 to 1.2); a string GnuTLS would refuse
 * fails with EINVAL, and one GnuTLS accepts but the mapping cannot express (single algorithms, % flags, a
 * set of versions with a hole) with ENOTSUP (`UnsupportedError`), rather than be honoured in part. With a
 * PSK file, PSK runs on TLS 1.2 and only the versions apply.
 * @example
 * ```ts
 * import { Nbd } from "@effect-nbd/core"
 *
 * // TLS 1.3 only.
 * const make = Nbd.make({ tls: "require", tlsPriority: "NORMAL:-VERS-ALL:+VERS-TLS1.3" })
 * ```
 * @since 0.3.0
 * @category settings
 */
export const setTlsPriority = setting<string>(rules.tlsPriority, (i, v) => {
  i.settings.tlsPriority = v
})
/**
 * The TLS priority string set, or "NORMAL" (libnbd's default) when none is.
 * @since 0.3.0
 * @category settings
 */
export const getTlsPriority = getter(calls.getTlsPriority, (i) => i.settings.tlsPriority)

/**
 * @since 0.1.0
 * @category settings
 */
export const setRequestStructuredReplies = setting<boolean>(rules.requestStructuredReplies, (i, v) => {
  i.settings.requestStructuredReplies = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getRequestStructuredReplies = getter(
  calls.getRequestStructuredReplies,
  (i) => i.settings.requestStructuredReplies
)

/**
 * @since 0.1.0
 * @category settings
 */
export const setRequestExtendedHeaders = setting<boolean>(rules.requestExtendedHeaders, (i, v) => {
  i.settings.requestExtendedHeaders = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getRequestExtendedHeaders = getter(
  calls.getRequestExtendedHeaders,
  (i) => i.settings.requestExtendedHeaders
)

/**
 * Whether connect, `optGo` and `optInfo` send NBD_OPT_SET_META_CONTEXT for the added contexts (default true).
 * @since 0.1.0
 * @category settings
 */
export const setRequestMetaContext = setting<boolean>(rules.requestMetaContext, (i, v) => {
  i.settings.requestMetaContext = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getRequestMetaContext = getter(calls.getRequestMetaContext, (i) => i.settings.requestMetaContext)

/**
 * Adds a meta context to request, e.g. "base:allocation".
 * @since 0.1.0
 * @category settings
 */
export const addMetaContext = setting<string>({ call: calls.addMetaContext, check: settingRules.checkName }, (i, v) => {
  i.settings.metaContexts.push(v)
})
/**
 * @since 0.1.0
 * @category settings
 */
export const clearMetaContexts = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  setting<void>({ call: calls.clearMetaContexts, check: () => undefined }, (i) => {
    i.settings.metaContexts = []
  })(h, undefined)
/**
 * The meta contexts that will be requested.
 * @since 0.1.0
 * @category settings
 */
export const getMetaContexts = getter(calls.getMetaContexts, (i): ReadonlyArray<string> => [...i.settings.metaContexts])

/**
 * Whether INFO and GO also ask for the canonical name and description (default false).
 * @since 0.1.0
 * @category settings
 */
export const setFullInfo = setting<boolean>(rules.fullInfo, (i, v) => {
  i.settings.fullInfo = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getFullInfo = getter(calls.getFullInfo, (i) => i.settings.fullInfo)

/**
 * Whether INFO and GO ask for block sizes (default true).
 * @since 0.1.0
 * @category settings
 */
export const setRequestBlockSize = setting<boolean>(rules.requestBlockSize, (i, v) => {
  i.settings.requestBlockSize = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getRequestBlockSize = getter(calls.getRequestBlockSize, (i) => i.settings.requestBlockSize)

/**
 * The handshake flags the client offers (FIXED_NEWSTYLE | NO_ZEROES by default).
 * @since 0.1.0
 * @category settings
 */
export const setHandshakeFlags = setting<number>(rules.handshakeFlags, (i, v) => {
  i.settings.handshakeFlags = v
})
/**
 * Before connecting, the flags the client will offer; after, the flags agreed with the server.
 * @since 0.1.0
 * @category settings
 */
export const getHandshakeFlags = getter(
  calls.getHandshakeFlags,
  (i) => i.agreement.handshakeFlags ?? i.settings.handshakeFlags
)

/**
 * Client-side checks (`Strict.*`; default all). Allowed in any state.
 * @since 0.1.0
 * @category settings
 */
export const setStrictMode = setting<number>(rules.strictMode, (i, v) => {
  i.settings.strictMode = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getStrictMode = getter(calls.getStrictMode, (i) => i.settings.strictMode)

/**
 * Whether a read zeroes its buffer before any check (nbd_set_pread_initialize; default true), so a read
 * that fails, even for a bad state, never leaves old bytes in a buffer the caller passed. Turning it off
 * saves the zeroing when buffers are reused and failed reads are discarded. Allowed in any state.
 * @since 0.1.0
 * @category settings
 */
export const setPreadInitialize = setting<boolean>(rules.preadInitialize, (i, v) => {
  i.settings.preadInitialize = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getPreadInitialize = getter(calls.getPreadInitialize, (i) => i.settings.preadInitialize)

/**
 * Debug messages (nbd_set_debug; default false): each call with its arguments and result, each state change,
 * and each option and command sent and reply received, logged with `Effect.logDebug` and annotated with
 * `nbd.handle` (the handle name) and `nbd.call` (the call), so any `Logger` receives them. Effect's default
 * minimum log level is Info: lower it (`Logger.withMinimumLogLevel(LogLevel.Debug)`) to see them. Allowed
 * in any state.
 * @since 0.1.0
 * @category settings
 */
export const setDebug = (h: Handle, debugOn: boolean): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(
    setting<boolean>(rules.debug, (i, v) => {
      i.settings.debug = v
    })(h, debugOn),
    Effect.suspend(() => (debugOn ? debug.watchState(toImpl(h)) : Effect.void))
  )
/**
 * @since 0.1.0
 * @category settings
 */
export const getDebug = getter(calls.getDebug, (i) => i.settings.debug)

// ---------------------------------------------------------------------------------------------------------------
// Option mode
// ---------------------------------------------------------------------------------------------------------------

/** Runs one option exchange from Negotiating, with the handle Connecting meanwhile, as libnbd does. */
const optionCall = <A>(
  h: Handle,
  spec: Spec,
  body: (impl: internal.HandleImpl, conn: Connection, operation: string) => Effect.Effect<A, NbdError.NbdError>
): Effect.Effect<A, NbdError.NbdError> =>
  call(h, spec, (impl, operation) =>
    optionCalls.runOption(impl, operation, (impl, conn) => body(impl, conn, operation))
  )

/**
 * Ends option mode: NBD_OPT_GO (or NBD_OPT_EXPORT_NAME on a non-fixed newstyle server); Ready on success,
 * still Negotiating when the server refuses.
 * @since 0.1.0
 * @category option mode
 */
export const optGo = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  optionCall(h, calls.optGo, (impl, conn, operation) => handshake.goOrInfo(impl, conn, operation, Protocol.Opt.GO))

/**
 * NBD_OPT_INFO for the current export name: learns its size, flags and block sizes without leaving option mode.
 * @since 0.1.0
 * @category option mode
 */
export const optInfo = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  optionCall(h, calls.optInfo, (impl, conn, operation) => handshake.goOrInfo(impl, conn, operation, Protocol.Opt.INFO))

/**
 * NBD_OPT_ABORT: ends the negotiation and the connection; the handle is Closed.
 * @since 0.1.0
 * @category option mode
 */
export const optAbort = (h: Handle): Effect.Effect<void, NbdError.NbdError> => abortNegotiation(h, calls.optAbort)

/** NBD_OPT_ABORT for `optAbort`, and for `shutdown` in option mode (errors name the call that was made). */
const abortNegotiation = (h: Handle, spec: Spec): Effect.Effect<void, NbdError.NbdError> =>
  optionCall(h, spec, (impl, conn, operation) => {
    if (impl.agreement.protocol === "newstyle") return Effect.fail(handshake.notFixedNewstyle(operation))
    // NBD_OPT_ABORT, Closed at once (libnbd does not wait for the ACK), then the server's close.
    handshake.sendAbort(conn)
    return lifecycle.end(impl, conn, { farewell: false, awaitServer: true, error: undefined, stateFirst: true })
  })

/**
 * An export the server lists.
 * @since 0.1.0
 * @category models
 */
export interface ExportEntry {
  readonly name: string
  readonly description: string
}

/**
 * NBD_OPT_LIST: the exports the server offers, with their descriptions.
 * @since 0.1.0
 * @category option mode
 */
export const optList = (h: Handle): Effect.Effect<ReadonlyArray<ExportEntry>, NbdError.NbdError> =>
  optionCall(h, calls.optList, (impl, conn, operation) =>
    Effect.andThen(optionCalls.requireFixed(impl, operation), optionCalls.listExports(impl, conn))
  )

/**
 * NBD_OPT_LIST_META_CONTEXT with the given queries (default: the added meta contexts): the contexts the
 * server offers. Stateless.
 * @since 0.1.0
 * @category option mode
 */
export const optListMetaContext = (
  h: Handle,
  queries?: ReadonlyArray<string>
): Effect.Effect<ReadonlyArray<string>, NbdError.NbdError> =>
  optionCall(h, calls.optListMetaContext, (impl, conn, operation) =>
    Effect.andThen(
      optionCalls.requireFixed(impl, operation),
      handshake.metaContextExchange(
        impl,
        conn,
        operation,
        Protocol.Opt.LIST_META_CONTEXT,
        queries ?? impl.settings.metaContexts
      )
    )
  )

/**
 * NBD_OPT_SET_META_CONTEXT with the given queries (default: the added meta contexts): selects the contexts
 * block status reports, replacing any earlier selection, and returns them.
 * @since 0.1.0
 * @category option mode
 */
export const optSetMetaContext = (
  h: Handle,
  queries?: ReadonlyArray<string>
): Effect.Effect<ReadonlyArray<string>, NbdError.NbdError> =>
  optionCall(h, calls.optSetMetaContext, (impl, conn, operation) =>
    Effect.gen(function* () {
      yield* optionCalls.requireFixed(impl, operation)
      if (!impl.agreement.structuredReplies)
        return yield* new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation,
          message: "server lacks structured replies"
        })
      return yield* handshake.metaContextExchange(
        impl,
        conn,
        operation,
        Protocol.Opt.SET_META_CONTEXT,
        queries ?? impl.settings.metaContexts
      )
    })
  )

/**
 * NBD_OPT_STRUCTURED_REPLY: true when the server agreed.
 * @since 0.1.0
 * @category option mode
 */
export const optStructuredReply = (h: Handle): Effect.Effect<boolean, NbdError.NbdError> =>
  optionCall(h, calls.optStructuredReply, (impl, conn, operation) =>
    Effect.andThen(
      optionCalls.requireFixed(impl, operation),
      handshake.negotiateFeature(impl, conn, Protocol.Opt.STRUCTURED_REPLY)
    )
  )

/**
 * NBD_OPT_EXTENDED_HEADERS: true when the server agreed.
 * @since 0.1.0
 * @category option mode
 */
export const optExtendedHeaders = (h: Handle): Effect.Effect<boolean, NbdError.NbdError> =>
  optionCall(h, calls.optExtendedHeaders, (impl, conn, operation) =>
    Effect.andThen(
      optionCalls.requireFixed(impl, operation),
      handshake.negotiateFeature(impl, conn, Protocol.Opt.EXTENDED_HEADERS)
    )
  )

/**
 * NBD_OPT_STARTTLS (nbd_opt_starttls): true when the server accepted and the connection is now encrypted,
 * false when it refused (the connection goes on in plaintext). After an upgrade, structured replies,
 * extended headers and meta contexts must be negotiated again. Needs a transport that provides `Transport`;
 * without one it fails with ENOTSUP and sends nothing.
 * @since 0.1.0
 * @category option mode
 */
export const optStarttls = (h: Handle): Effect.Effect<boolean, NbdError.NbdError> =>
  optionCall(h, calls.optStarttls, (impl, conn, operation) =>
    Effect.gen(function* () {
      yield* optionCalls.requireFixed(impl, operation)
      const startTls = impl.transport?.startTls
      if (startTls === undefined)
        return yield* new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation,
          message: "TLS is not available on this transport"
        })
      return yield* handshake.starttls(impl, conn, operation, startTls)
    })
  )

// ---------------------------------------------------------------------------------------------------------------
// Export info
// ---------------------------------------------------------------------------------------------------------------

/** A call that answers from the export info, or fails with EINVAL while the server has not sent it. */
const withInfo =
  <A>(
    spec: Spec,
    f: (
      info: internal.ExportInfo,
      impl: internal.HandleImpl,
      operation: string
    ) => A | Effect.Effect<A, NbdError.NbdError>
  ) =>
  (h: Handle): Effect.Effect<A, NbdError.NbdError> =>
    call(h, spec, (impl, operation) =>
      Effect.flatMap(internal.requireInfo(impl, operation), (info) => {
        const result = f(info, impl, operation)
        return Effect.isEffect(result) ? result : Effect.succeed(result)
      })
    )

const flagGetter = (spec: Spec, flag: number) => withInfo(spec, (info) => (info.flags & flag) !== 0)

/**
 * The export's size in bytes.
 * @since 0.1.0
 * @category export info
 */
export const getSize = withInfo(calls.getSize, (info) => info.size)

/**
 * Which block size to ask `getBlockSize` for.
 * @since 0.1.0
 * @category models
 */
export type BlockSizeKind = "minimum" | "preferred" | "maximum" | "payload"

/**
 * A block size the server advertised (0 when it did not), or the payload maximum this client uses.
 * @since 0.1.0
 * @category export info
 */
export const getBlockSize = (h: Handle, kind: BlockSizeKind): Effect.Effect<number, NbdError.NbdError> =>
  withInfo(calls.getBlockSize, (info) => (kind === "payload" ? payloadMaximum(info) : (info.blockSizes?.[kind] ?? 0)))(
    h
  )

/**
 * @since 0.1.0
 * @category export info
 */
export const isReadOnly = flagGetter(calls.isReadOnly, Protocol.TFlag.READ_ONLY)
/**
 * @since 0.1.0
 * @category export info
 */
export const canFlush = flagGetter(calls.canFlush, Protocol.TFlag.SEND_FLUSH)
/**
 * @since 0.1.0
 * @category export info
 */
export const canFua = flagGetter(calls.canFua, Protocol.TFlag.SEND_FUA)
/**
 * @since 0.1.0
 * @category export info
 */
export const isRotational = flagGetter(calls.isRotational, Protocol.TFlag.ROTATIONAL)
/**
 * @since 0.1.0
 * @category export info
 */
export const canTrim = flagGetter(calls.canTrim, Protocol.TFlag.SEND_TRIM)
/**
 * @since 0.1.0
 * @category export info
 */
export const canZero = flagGetter(calls.canZero, Protocol.TFlag.SEND_WRITE_ZEROES)
/**
 * @since 0.1.0
 * @category export info
 */
export const canFastZero = flagGetter(calls.canFastZero, Protocol.TFlag.SEND_FAST_ZERO)
/**
 * @since 0.1.0
 * @category export info
 */
export const canDf = flagGetter(calls.canDf, Protocol.TFlag.SEND_DF)
/**
 * @since 0.1.0
 * @category export info
 */
export const canMultiConn = flagGetter(calls.canMultiConn, Protocol.TFlag.CAN_MULTI_CONN)
/**
 * @since 0.1.0
 * @category export info
 */
export const canCache = flagGetter(calls.canCache, Protocol.TFlag.SEND_CACHE)
/**
 * @since 0.1.0
 * @category export info
 */
export const canBlockStatusPayload = flagGetter(calls.canBlockStatusPayload, Protocol.TFlag.BLOCK_STATUS_PAYLOAD)

/**
 * Whether the server agreed to the named meta context (nbd_can_meta_context), as libnbd answers it: in
 * option mode, connected or closed, without needing the export's size and flags. Fails with EINVAL ("need a
 * successful server meta context request first") only while contexts were added and none of their
 * negotiation has succeeded yet (no SET_META_CONTEXT acknowledged, and no INFO or GO that made "none" the
 * answer because structured replies are off or no contexts were added).
 * @since 0.1.0
 * @category export info
 */
export const canMetaContext = (h: Handle, name: string): Effect.Effect<boolean, NbdError.NbdError> =>
  call(
    h,
    calls.canMetaContext,
    (impl, operation) =>
      Effect.suspend(() => {
        if (impl.settings.metaContexts.length > 0 && !impl.agreement.metaValid)
          return Effect.fail(invalidArgument(operation, "need a successful server meta context request first"))
        for (const context of impl.agreement.metaContexts?.values() ?? [])
          if (context === name) return Effect.succeed(true)
        return Effect.succeed(false)
      }),
    { attributes: () => ({ context: name }) }
  )

/**
 * "oldstyle", "newstyle" or "newstyle-fixed".
 * @since 0.1.0
 * @category export info
 */
export const getProtocol = (h: Handle): Effect.Effect<string, NbdError.NbdError> =>
  call(h, calls.getProtocol, (impl) => Effect.sync(() => impl.agreement.protocol ?? ""))

/**
 * The canonical export name the server reported (needs `setFullInfo(true)`); ENOTSUP when it sent none.
 * @since 0.1.0
 * @category export info
 */
export const getCanonicalExportName = withInfo(calls.getCanonicalExportName, (info, impl, operation) =>
  info.canonicalName !== undefined
    ? info.canonicalName
    : impl.settings.fullInfo
      ? Effect.fail(
          new NbdError.UnsupportedError({
            errno: "ENOTSUP",
            operation,
            message: "server did not advertise a canonical name"
          })
        )
      : impl.settings.exportName
)

/**
 * The export description the server reported (needs `setFullInfo(true)`); ENOTSUP when it sent none.
 * @since 0.1.0
 * @category export info
 */
export const getExportDescription = withInfo(calls.getExportDescription, (info, _impl, operation) =>
  info.description !== undefined
    ? info.description
    : Effect.fail(
        new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation,
          message: "server did not advertise a description"
        })
      )
)

const negotiated =
  (spec: Spec, f: (impl: internal.HandleImpl) => boolean) =>
  (h: Handle): Effect.Effect<boolean, NbdError.NbdError> =>
    call(h, spec, (impl) => Effect.sync(() => f(impl)))

/**
 * @since 0.1.0
 * @category export info
 */
export const getStructuredRepliesNegotiated = negotiated(
  calls.getStructuredRepliesNegotiated,
  (i) => i.agreement.structuredReplies
)
/**
 * @since 0.1.0
 * @category export info
 */
export const getExtendedHeadersNegotiated = negotiated(
  calls.getExtendedHeadersNegotiated,
  (i) => i.agreement.extendedHeaders
)
/**
 * @since 0.1.0
 * @category export info
 */
export const getTlsNegotiated = negotiated(calls.getTlsNegotiated, (i) => i.agreement.tlsNegotiated)

/**
 * Bytes and protocol chunks sent and received so far, and the reconnects.
 * @since 0.1.0
 * @category export info
 */
export interface Stats {
  readonly bytesSent: number
  readonly chunksSent: number
  readonly bytesReceived: number
  readonly chunksReceived: number
  /** How many times the connection was brought back after a drop (see `Settings.reconnect`). */
  readonly reconnects: number
}

/**
 * @since 0.1.0
 * @category export info
 */
export const stats = (h: Handle): Effect.Effect<Stats> => getter(calls.stats, (i): Stats => ({ ...i.stats }))(h)

// ---------------------------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------------------------

/**
 * Options of a read.
 * @since 0.1.0
 * @category models
 */
export interface ReadOptions {
  /**
   * Read into this buffer (its length is the count) instead of a new one. With `setPreadInitialize(true)`
   * (the default) it is zeroed before any check, so a failed read never leaves old bytes in it.
   */
  readonly buffer?: Uint8Array
  readonly flags?: number
}

/**
 * Queues a read of `count` bytes at `offset`.
 * @since 0.1.0
 * @category commands
 */
export const aioPread = (
  h: Handle,
  count: number,
  offset: number | bigint,
  options: ReadOptions = {}
): Effect.Effect<Command<Uint8Array>, NbdError.NbdError> =>
  call(
    h,
    calls.aioPread,
    (impl, operation) => commandCalls.read(impl, operation, count, offset, options),
    commandCalls.describeRange(count, offset, options.flags, { first: commandCalls.zeroFirst(options) })
  )

/**
 * Reads `count` bytes at `offset`: all or nothing. Without `buffer` the result is a new buffer the caller
 * owns: its `.buffer` is memory of its own, which nothing else holds or writes.
 * @example
 * ```ts
 * import { Nbd } from "@effect-nbd/core"
 * import * as Effect from "effect/Effect"
 *
 * const read = (h: Nbd.Handle) =>
 *   Effect.gen(function* () {
 *     const sector = yield* Nbd.pread(h, 512, 0) // a new buffer
 *     const buffer = new Uint8Array(1024 * 1024)
 *     yield* Nbd.pread(h, buffer.length, 1n << 30n, { buffer }) // into a buffer you reuse
 *     return { sector, buffer }
 *   })
 * ```
 * @since 0.1.0
 * @category commands
 */
export const pread = (
  h: Handle,
  count: number,
  offset: number | bigint,
  options: ReadOptions = {}
): Effect.Effect<Uint8Array, NbdError.NbdError> =>
  call(
    h,
    calls.pread,
    (impl, operation) =>
      Effect.flatMap(commandCalls.read(impl, operation, count, offset, options), commandCalls.awaitCommand),
    commandCalls.describeRange(count, offset, options.flags, { first: commandCalls.zeroFirst(options) })
  )

/**
 * Options of a command that takes only flags.
 * @since 0.1.0
 * @category models
 */
export interface FlagOptions {
  readonly flags?: number
}

/**
 * Queues a write of `data` at `offset` (flags: FUA).
 * @since 0.1.0
 * @category commands
 */
export const aioPwrite = (
  h: Handle,
  data: Uint8Array,
  offset: number | bigint,
  options: FlagOptions = {}
): Effect.Effect<Command<void>, NbdError.NbdError> =>
  call(
    h,
    calls.aioPwrite,
    (impl, operation) => commandCalls.write(impl, operation, data, offset, options),
    commandCalls.describeRange(data.length, offset, options.flags)
  )

/**
 * Writes `data` at `offset` (flags: FUA).
 * @example
 * ```ts
 * import { Nbd, Protocol } from "@effect-nbd/core"
 *
 * // Written through to stable storage before the reply (FUA), where the server can.
 * const write = (h: Nbd.Handle) =>
 *   Nbd.pwrite(h, new TextEncoder().encode("hello"), 4096, { flags: Protocol.CmdFlag.FUA })
 * ```
 * @since 0.1.0
 * @category commands
 */
export const pwrite = (
  h: Handle,
  data: Uint8Array,
  offset: number | bigint,
  options: FlagOptions = {}
): Effect.Effect<void, NbdError.NbdError> =>
  call(
    h,
    calls.pwrite,
    (impl, operation) =>
      Effect.flatMap(commandCalls.write(impl, operation, data, offset, options), commandCalls.awaitCommand),
    commandCalls.describeRange(data.length, offset, options.flags)
  )

/** The aio call and the blocking call of a range command: `[aioX, x]`, each under its own record. */
const rangeCommands = (aioSpec: Spec, blockingSpec: Spec, type: number) => {
  const aio = (
    h: Handle,
    count: number | bigint,
    offset: number | bigint,
    options: FlagOptions = {}
  ): Effect.Effect<Command<void>, NbdError.NbdError> =>
    call(
      h,
      aioSpec,
      (impl, operation) => commandCalls.rangeCommand(impl, operation, type, count, offset, options),
      commandCalls.describeRange(count, offset, options.flags)
    )
  const blocking = (
    h: Handle,
    count: number | bigint,
    offset: number | bigint,
    options: FlagOptions = {}
  ): Effect.Effect<void, NbdError.NbdError> =>
    call(
      h,
      blockingSpec,
      (impl, operation) =>
        Effect.flatMap(
          commandCalls.rangeCommand(impl, operation, type, count, offset, options),
          commandCalls.awaitCommand
        ),
      commandCalls.describeRange(count, offset, options.flags)
    )
  return [aio, blocking] as const
}

/**
 * Queues NBD_CMD_FLUSH.
 * @since 0.1.0
 * @category commands
 */
export const aioFlush = (h: Handle, options: FlagOptions = {}): Effect.Effect<Command<void>, NbdError.NbdError> =>
  call(
    h,
    calls.aioFlush,
    (impl, operation) => commandCalls.rangeCommand(impl, operation, Protocol.Cmd.FLUSH, 0, 0, options),
    {
      flags: () => options.flags ?? 0
    }
  )

/**
 * NBD_CMD_FLUSH: makes earlier writes durable.
 * @since 0.1.0
 * @category commands
 */
export const flush = (h: Handle, options: FlagOptions = {}): Effect.Effect<void, NbdError.NbdError> =>
  call(
    h,
    calls.flush,
    (impl, operation) =>
      Effect.flatMap(
        commandCalls.rangeCommand(impl, operation, Protocol.Cmd.FLUSH, 0, 0, options),
        commandCalls.awaitCommand
      ),
    { flags: () => options.flags ?? 0 }
  )

/**
 * One chunk of a structured read: data, a hole (reads as zeroes), or an error at an offset.
 * @since 0.1.0
 * @category models
 */
export type ReadChunk = ClientCodec.ReadChunk

/**
 * The result of a structured read: the data (holes zeroed) and the chunks the server sent, in order.
 * Without structured replies the whole read is one data chunk.
 * @since 0.1.0
 * @category models
 */
export interface StructuredRead {
  readonly data: Uint8Array
  readonly chunks: ReadonlyArray<ReadChunk>
}

/**
 * Queues a read that reports the server's chunks (flags: DF, which asks for one data chunk).
 * @since 0.1.0
 * @category commands
 */
export const aioPreadStructured = (
  h: Handle,
  count: number,
  offset: number | bigint,
  options: FlagOptions = {}
): Effect.Effect<Command<StructuredRead>, NbdError.NbdError> =>
  call(
    h,
    calls.aioPreadStructured,
    (impl, operation) => commandCalls.readStructured(impl, operation, count, offset, options),
    commandCalls.describeRange(count, offset, options.flags)
  )

/**
 * A read that reports the server's chunks: data, holes and errors with their offsets.
 * @since 0.1.0
 * @category commands
 */
export const preadStructured = (
  h: Handle,
  count: number,
  offset: number | bigint,
  options: FlagOptions = {}
): Effect.Effect<StructuredRead, NbdError.NbdError> =>
  call(
    h,
    calls.preadStructured,
    (impl, operation) =>
      Effect.flatMap(commandCalls.readStructured(impl, operation, count, offset, options), commandCalls.awaitCommand),
    commandCalls.describeRange(count, offset, options.flags)
  )

const [trimAio, trimBlocking] = rangeCommands(calls.aioTrim, calls.trim, Protocol.Cmd.TRIM)
const [cacheAio, cacheBlocking] = rangeCommands(calls.aioCache, calls.cache, Protocol.Cmd.CACHE)
const [zeroAio, zeroBlocking] = rangeCommands(calls.aioZero, calls.zero, Protocol.Cmd.WRITE_ZEROES)

/**
 * Queues NBD_CMD_TRIM of `count` bytes at `offset` (flags: FUA).
 * @since 0.1.0
 * @category commands
 */
export const aioTrim = trimAio
/**
 * NBD_CMD_TRIM: the server may discard the range (flags: FUA).
 * @since 0.1.0
 * @category commands
 */
export const trim = trimBlocking

/**
 * Queues NBD_CMD_CACHE of `count` bytes at `offset`.
 * @since 0.1.0
 * @category commands
 */
export const aioCache = cacheAio
/**
 * NBD_CMD_CACHE: asks the server to prefetch the range.
 * @since 0.1.0
 * @category commands
 */
export const cache = cacheBlocking

/**
 * Queues NBD_CMD_WRITE_ZEROES of `count` bytes at `offset` (flags: FUA, NO_HOLE, FAST_ZERO).
 * @since 0.1.0
 * @category commands
 */
export const aioZero = zeroAio
/**
 * NBD_CMD_WRITE_ZEROES: the range reads as zeroes afterwards (flags: FUA, NO_HOLE, FAST_ZERO).
 * @since 0.1.0
 * @category commands
 */
export const zero = zeroBlocking

/**
 * One block-status extent: its length and its flags in the context (for base:allocation, `STATE_HOLE`
 * and `STATE_ZERO`).
 * @since 0.1.0
 * @category models
 */
export type Extent = ClientCodec.Extent

/**
 * The extents one meta context reported, starting at the request's offset.
 * @since 0.1.0
 * @category models
 */
export type BlockStatusEntry = ClientCodec.BlockStatusEntry

/**
 * Queues NBD_CMD_BLOCK_STATUS for every negotiated meta context (flags: REQ_ONE).
 * @since 0.1.0
 * @category commands
 */
export const aioBlockStatus = (
  h: Handle,
  count: number | bigint,
  offset: number | bigint,
  options: FlagOptions = {}
): Effect.Effect<Command<ReadonlyArray<BlockStatusEntry>>, NbdError.NbdError> =>
  call(
    h,
    calls.aioBlockStatus,
    (impl, operation) => commandCalls.blockStatusOf(impl, operation, count, offset, options),
    commandCalls.describeRange(count, offset, options.flags)
  )

/**
 * NBD_CMD_BLOCK_STATUS: the extents of every negotiated meta context over the range (flags: REQ_ONE).
 * @example
 * ```ts
 * import { Nbd, Protocol } from "@effect-nbd/core"
 * import { NodeNbd } from "@effect-nbd/node"
 * import * as Effect from "effect/Effect"
 *
 * // Ask for base:allocation before connecting: without a negotiated context, blockStatus fails (ENOTSUP).
 * const holes = Effect.scoped(
 *   Effect.gen(function* () {
 *     const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
 *     yield* NodeNbd.connectUri(h, "nbd+unix:///?socket=/tmp/nbd.sock")
 *     const [allocation] = yield* Nbd.blockStatus(h, 1024 * 1024, 0)
 *     return (allocation?.extents ?? []).filter((e) => (e.flags & Protocol.STATE_HOLE) !== 0).length
 *   })
 * )
 * ```
 * @since 0.1.0
 * @category commands
 */
export const blockStatus = (
  h: Handle,
  count: number | bigint,
  offset: number | bigint,
  options: FlagOptions = {}
): Effect.Effect<ReadonlyArray<BlockStatusEntry>, NbdError.NbdError> =>
  call(
    h,
    calls.blockStatus,
    (impl, operation) =>
      Effect.flatMap(commandCalls.blockStatusOf(impl, operation, count, offset, options), commandCalls.awaitCommand),
    commandCalls.describeRange(count, offset, options.flags)
  )

/**
 * Queues NBD_CMD_BLOCK_STATUS limited to the named contexts (needs extended headers and a server that
 * advertises block-status payloads; flags: REQ_ONE, PAYLOAD_LEN).
 * @since 0.1.0
 * @category commands
 */
export const aioBlockStatusFilter = (
  h: Handle,
  count: number | bigint,
  offset: number | bigint,
  contexts: ReadonlyArray<string>,
  options: FlagOptions = {}
): Effect.Effect<Command<ReadonlyArray<BlockStatusEntry>>, NbdError.NbdError> =>
  call(
    h,
    calls.aioBlockStatusFilter,
    (impl, operation) => commandCalls.blockStatusFiltered(impl, operation, count, offset, contexts, options),
    commandCalls.describeRange(count, offset, options.flags)
  )

/**
 * Block status limited to the named contexts (extended headers with the block-status payload).
 * @since 0.1.0
 * @category commands
 */
export const blockStatusFilter = (
  h: Handle,
  count: number | bigint,
  offset: number | bigint,
  contexts: ReadonlyArray<string>,
  options: FlagOptions = {}
): Effect.Effect<ReadonlyArray<BlockStatusEntry>, NbdError.NbdError> =>
  call(
    h,
    calls.blockStatusFilter,
    (impl, operation) =>
      Effect.flatMap(
        commandCalls.blockStatusFiltered(impl, operation, count, offset, contexts, options),
        commandCalls.awaitCommand
      ),
    commandCalls.describeRange(count, offset, options.flags)
  )

/**
 * Commands queued or waiting for a reply.
 * @since 0.1.0
 * @category commands
 */
export const aioInFlight = (h: Handle): Effect.Effect<number, NbdError.NbdError> =>
  call(h, calls.aioInFlight, (impl) =>
    Effect.sync(() => (impl.recovery?.waiting.length ?? 0) + (impl.connection?.engine.inFlight ?? 0))
  )

/**
 * Queues NBD_CMD_DISC after the commands already queued; later commands fail with EINVAL. The handle
 * becomes Closed once the server closes the connection.
 * @since 0.1.0
 * @category commands
 */
export const aioDisconnect = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  call(h, calls.aioDisconnect, (impl, operation) => commands.disconnect(impl, operation))

/**
 * Ends the connection gracefully: in option mode NBD_OPT_ABORT; otherwise NBD_CMD_DISC after the commands
 * already queued, then waits until the server has closed the connection. With `abandonPending`, commands
 * not yet sent fail with ENOTCONN and are never sent.
 * @example
 * ```ts
 * import { Nbd } from "@effect-nbd/core"
 *
 * // NBD_CMD_DISC after what is queued; closing the handle's scope does the same.
 * const done = (h: Nbd.Handle) => Nbd.shutdown(h)
 * // Or drop what was not sent yet: those commands fail with ENOTCONN.
 * const now = (h: Nbd.Handle) => Nbd.shutdown(h, { abandonPending: true })
 * ```
 * @since 0.1.0
 * @category commands
 */
export const shutdown = (
  h: Handle,
  options: { readonly abandonPending?: boolean } = {}
): Effect.Effect<void, NbdError.NbdError> =>
  call(h, calls.shutdown, (impl, operation) =>
    Effect.gen(function* () {
      const s = yield* impl.state.get
      if (HandleState.isNegotiating(s)) return yield* abortNegotiation(h, calls.shutdown)
      const conn = impl.connection!
      if (options.abandonPending) conn.engine.abandonUnsent(operation)
      if (!conn.engine.disconnectRequested) yield* commands.disconnect(impl, operation)
      yield* Deferred.await(conn.endedSignal)
    })
  )

/**
 * Waits for the connection's reader to stop (used by tests and tools that need the socket gone).
 * @since 0.1.0
 * @category commands
 */
export const awaitClosed = (h: Handle): Effect.Effect<void> =>
  Effect.suspend(() => {
    const conn = toImpl(h).connection
    return conn === undefined ? Effect.void : Deferred.await(conn.endedSignal)
  })

// ---------------------------------------------------------------------------------------------------------------
// The library
// ---------------------------------------------------------------------------------------------------------------

/**
 * The name of this library (nbd_get_package_name): "effect-nbd".
 * @since 0.1.0
 * @category library
 */
export const getPackageName = (_h: Handle): Effect.Effect<string> => Effect.succeed(version.PACKAGE_NAME)

/**
 * The version of this library, "major.minor.release" (nbd_get_version).
 * @since 0.1.0
 * @category library
 */
export const getVersion = (_h: Handle): Effect.Effect<string> => Effect.succeed(version.VERSION)

/**
 * The extra version of this library (nbd_get_version_extra): free text a packager sets at build time to
 * tell their build apart (a distribution's package release, say), "" for an upstream build, as this is.
 * @since 0.3.0
 * @category library
 */
export const getVersionExtra = (_h: Handle): Effect.Effect<string> => Effect.succeed(version.VERSION_EXTRA)

/**
 * Whether TLS is possible (nbd_supports_tls). The core has no TLS of its own: a transport upgrades its
 * connection through the `Transport` service it provides with its socket. So this is true where the context
 * holds a `Transport` service (inside a transport's layer), false elsewhere; `NodeNbd.supportsTls` answers
 * for the node transports, which always can.
 * @since 0.1.0
 * @category library
 */
export const supportsTls = (_h: Handle): Effect.Effect<boolean> =>
  Effect.map(Effect.serviceOption(Transport.Transport), (t) => Option.isSome(t) && t.value.startTls !== undefined)

/**
 * Whether NBD URIs are supported (nbd_supports_uri): always true (`NbdUri` parses and formats them,
 * `getUri` answers, and a transport connects to them, e.g. `NodeNbd.connectUri`).
 * @since 0.1.0
 * @category library
 */
export const supportsUri = (_h: Handle): Effect.Effect<boolean> => Effect.succeed(true)

/**
 * Whether AF_VSOCK is supported (nbd_supports_vsock): always false, no transport offers it.
 * @since 0.1.0
 * @category library
 */
export const supportsVsock = (_h: Handle): Effect.Effect<boolean> => Effect.succeed(false)
