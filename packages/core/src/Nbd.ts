/**
 * The NBD client handle: libnbd's `nbd_*` calls as Effect functions over a handle whose life is a `Scope`.
 *
 * @since 0.1.0
 */
import * as Socket from "@effect/platform/Socket"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as HandleState from "./HandleState.js"
import { utf8 } from "./internal/bytes.js"
import * as blockStatusInternal from "./internal/blockStatus.js"
import * as commands from "./internal/commands.js"
import { Connection } from "./internal/connection.js"
import * as internal from "./internal/handle.js"
import * as handshake from "./internal/handshake.js"
import * as NbdError from "./NbdError.js"
import * as NbdUri from "./NbdUri.js"
import * as Protocol from "./Protocol.js"
import * as StartTls from "./StartTls.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("@effect-nbd/core/Nbd/Handle")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * An NBD handle: one connection to one export, from `make` until its scope closes.
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  readonly [TypeId]: TypeId
}

/**
 * A command queued in order with its cookie; `await` gives its result or its typed error.
 * @since 0.1.0
 * @category models
 */
export type Command<A> = commands.Command<A>

/**
 * TLS modes, as libnbd's LIBNBD_TLS_*.
 * @since 0.1.0
 * @category models
 */
export type TlsMode = internal.TlsMode

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
  readonly optMode?: boolean
  readonly requestStructuredReplies?: boolean
  readonly requestExtendedHeaders?: boolean
  readonly requestMetaContext?: boolean
  readonly metaContexts?: ReadonlyArray<string>
  readonly fullInfo?: boolean
  readonly requestBlockSize?: boolean
  readonly handshakeFlags?: number
  readonly strictMode?: number
}

/**
 * libnbd's strict-mode flags (LIBNBD_STRICT_*); the default is all of them.
 * @since 0.1.0
 * @category constants
 */
export const Strict = commands.Strict

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

const impls = new WeakMap<Handle, internal.HandleImpl>()
const toImpl = (h: Handle): internal.HandleImpl => impls.get(h)!

/** Scopes of the connections, kept apart from the handle so the close finalizer runs while they live. */
const connectionScopes = new WeakMap<internal.HandleImpl, Scope.CloseableScope>()

const GRACE = Duration.seconds(2)

const closeHandle = (h: internal.HandleImpl): Effect.Effect<void> =>
  Effect.gen(function* () {
    const conn = h.connection
    const state = yield* h.state.get
    if (conn !== undefined && conn.ended === undefined) {
      if (HandleState.isConnected(state) && !conn.disconnectRequested)
        yield* Effect.ignore(commands.disconnect(h, "nbd_close"))
      else if (HandleState.isNegotiating(state)) handshake.sendAbort(conn)
      conn.endWrites()
      conn.failPending("the handle was closed before the server replied")
      yield* conn.drain(GRACE)
      // Finalizers run uninterruptibly: without `interruptible` the timeout could not stop the wait, and a
      // peer that keeps the socket open after NBD_CMD_DISC would hold the close forever.
      yield* Effect.ignore(Effect.timeout(Effect.interruptible(Deferred.await(conn.endedSignal)), GRACE))
    }
    if (!HandleState.isDead(yield* h.state.get)) yield* h.setState(HandleState.Closed)
    if (conn !== undefined) yield* conn.terminate(undefined)
  })

/**
 * Makes a handle (nbd_create). Closing the scope closes it (nbd_close): a connected handle sends
 * NBD_CMD_DISC, commands still waiting fail with ENOTCONN, and the socket is released.
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
export const make = (settings: Settings = {}): Effect.Effect<Handle, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const connectionScope = yield* Scope.fork(scope, ExecutionStrategy.sequential)
    const state = yield* SubscriptionRef.make<HandleState.HandleState>(HandleState.Created)
    const { metaContexts, ...rest } = settings
    const impl = new internal.HandleImpl(state, connectionScope, {
      ...(rest as Partial<internal.Settings>),
      ...(metaContexts ? { metaContexts: [...metaContexts] } : {})
    })
    connectionScopes.set(impl, connectionScope)
    const handle: Handle = { [TypeId]: TypeId }
    impls.set(handle, impl)
    yield* Scope.addFinalizer(scope, closeHandle(impl))
    return handle
  })

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

const handshakes = new WeakMap<internal.HandleImpl, Deferred.Deferred<void, NbdError.NbdError>>()

/** Moves Created → Connecting atomically, so a handle connects once. */
const claimForConnect = (h: internal.HandleImpl, operation: string) =>
  SubscriptionRef.modify(h.state, (s): [Option.Option<HandleState.HandleState>, HandleState.HandleState] =>
    HandleState.isCreated(s) ? [Option.none(), HandleState.Connecting] : [Option.some(s), s]
  ).pipe(
    Effect.flatMap(
      Option.match({
        onNone: () => Effect.void,
        onSome: (s) =>
          Effect.fail(
            new NbdError.InvalidStateError({
              errno: "EINVAL",
              operation,
              message: `invalid state: ${HandleState.shortName(s)}: the handle must be newly created`
            })
          )
      })
    )
  )

/** Marks the handle dead with `error` and ends its connection, after sending what was queued. */
const kill = (h: internal.HandleImpl, conn: Connection, error: NbdError.NbdError): Effect.Effect<void> =>
  Effect.gen(function* () {
    const s = yield* h.state.get
    if (!HandleState.isDead(s) && !HandleState.isClosed(s)) yield* h.setState(HandleState.Dead(error))
    yield* conn.drain(GRACE)
    yield* conn.terminate(error)
  })

/**
 * Begins the handshake on the socket the `Socket` layer gives, and returns at once: the state is
 * Connecting right after. `connectSocket` waits for the end of the handshake. When the context also holds a
 * `StartTls` service for that socket, TLS ("allow" or "require") upgrades the connection after
 * NBD_OPT_STARTTLS; without one, "allow" stays in plaintext and "require" fails with ENOTSUP.
 *
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectSocket = (h: Handle): Effect.Effect<void, NbdError.NbdError, Socket.Socket> =>
  Effect.gen(function* () {
    const impl = toImpl(h)
    const operation = "nbd_aio_connect_socket"
    yield* claimForConnect(impl, operation)
    const socket = yield* Socket.Socket
    impl.startTls = Option.getOrUndefined(yield* Effect.serviceOption(StartTls.StartTls))
    const scope = connectionScopes.get(impl)!
    const done = yield* Deferred.make<void, NbdError.NbdError>()
    handshakes.set(impl, done)
    const conn = yield* Connection.start(impl, socket, scope)
    impl.connection = conn
    yield* handshake.run(impl, conn, operation).pipe(
      Effect.tapError((error) => kill(impl, conn, error)),
      Effect.onInterrupt(() =>
        kill(
          impl,
          conn,
          new NbdError.ConnectionError({ errno: "ENOTCONN", operation, message: "handshake interrupted" })
        )
      ),
      Effect.exit,
      Effect.flatMap((exit) => Deferred.done(done, exit)),
      Effect.forkIn(scope)
    )
  })

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
export const connectSocket = (h: Handle): Effect.Effect<void, NbdError.NbdError, Socket.Socket> =>
  Effect.zipRight(aioConnectSocket(h), awaitConnected(h))

/**
 * Waits for a handshake begun by `aioConnectSocket` to finish.
 * @since 0.1.0
 * @category connecting
 */
export const awaitConnected = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() => {
    const done = handshakes.get(toImpl(h))
    return done === undefined
      ? Effect.fail(
          new NbdError.InvalidStateError({
            errno: "ENOTCONN",
            operation: "nbd_connect",
            message: "invalid state: START: the handle must be connecting"
          })
        )
      : Deferred.await(done)
  })

/**
 * Records the URI that reconnects to where this handle is connecting; transports call it (as libnbd's
 * connect calls remember their address) so `getUri` can answer.
 * @since 0.1.0
 * @category connecting
 */
export const setTransportUri = (h: Handle, uri: string): Effect.Effect<void> =>
  Effect.sync(() => {
    toImpl(h).uri = uri
  })

/**
 * A URI that reconnects to the same export the same way (nbd_get_uri). Fails with ENOTSUP when the handle
 * was connected on a socket whose address is unknown.
 * @since 0.1.0
 * @category connecting
 */
export const getUri = (h: Handle): Effect.Effect<string, NbdError.NbdError> => {
  const impl = toImpl(h)
  return Effect.zipRight(
    internal.checkState(impl, "nbd_get_uri", ["connecting", "negotiating", "connected", "closed", "dead"]),
    impl.uri === undefined
      ? Effect.fail(
          internal.invalidArgument(
            "nbd_get_uri",
            "the handle was connected on a socket with no known address",
            "ENOTSUP"
          )
        )
      : // The export name is the current one: libnbd builds the URI from the handle's settings.
        Effect.map(NbdUri.parse(impl.uri), (uri) => NbdUri.format({ ...uri, exportName: impl.settings.exportName }))
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

const setting =
  <A>(
    operation: string,
    permitted: ReadonlyArray<internal.Permitted>,
    apply: (s: internal.Settings, value: A) => NbdError.NbdError | void
  ) =>
  (h: Handle, value: A): Effect.Effect<void, NbdError.NbdError> => {
    const impl = toImpl(h)
    return Effect.flatMap(internal.checkState(impl, operation, permitted), () => {
      const error = apply(impl.settings, value)
      return error === undefined ? Effect.void : Effect.fail(error)
    })
  }

const getter =
  <A>(get: (s: internal.Settings) => A) =>
  (h: Handle): Effect.Effect<A> =>
    Effect.sync(() => get(toImpl(h).settings))

const checkName = (operation: string, name: string): NbdError.NbdError | undefined =>
  utf8(name).length > Protocol.Limits.MAX_STRING
    ? internal.invalidArgument(operation, "name is too long (more than 4096 bytes)", "ENAMETOOLONG")
    : undefined

const anyState: ReadonlyArray<internal.Permitted> = [
  "created",
  "connecting",
  "negotiating",
  "connected",
  "closed",
  "dead"
]

/**
 * The export to connect to (default ""). In option mode, changing it forgets what `optInfo` learned.
 * @since 0.1.0
 * @category settings
 */
export const setExportName = (h: Handle, name: string): Effect.Effect<void, NbdError.NbdError> =>
  setting<string>("nbd_set_export_name", ["created", "negotiating"], (s, v) => {
    const error = checkName("nbd_set_export_name", v)
    if (error) return error
    if (s.exportName !== v) {
      const impl = toImpl(h)
      impl.info = undefined
      impl.metaContexts = undefined
    }
    s.exportName = v
  })(h, name)
/**
 * @since 0.1.0
 * @category settings
 */
export const getExportName = getter((s) => s.exportName)

/**
 * @since 0.1.0
 * @category settings
 */
export const setHandleName = setting<string>("nbd_set_handle_name", anyState, (s, v) => {
  s.handleName = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getHandleName = getter((s) => s.handleName)

/**
 * Whether to pause in the Negotiating state after the handshake's automatic steps (default false).
 * @since 0.1.0
 * @category settings
 */
export const setOptMode = setting<boolean>("nbd_set_opt_mode", ["created"], (s, v) => {
  s.optMode = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getOptMode = getter((s) => s.optMode)

/**
 * TLS: "disable" (default), "allow" or "require".
 * @since 0.1.0
 * @category settings
 */
export const setTls = setting<TlsMode>("nbd_set_tls", ["created"], (s, v) => {
  if (v !== "disable" && v !== "allow" && v !== "require")
    return internal.invalidArgument("nbd_set_tls", `tls: invalid value for parameter: ${String(v)}`)
  s.tls = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getTls = getter((s) => s.tls)

/**
 * The X.509 certificates directory: `ca-cert.pem`, and optionally `client-cert.pem` with `client-key.pem`.
 * Unset, the transport looks where libnbd does (`$HOME/.pki/libnbd`, `$HOME/.config/pki/libnbd`, or
 * `/etc/pki/libnbd` for root) and falls back to the system's CAs.
 * @since 0.1.0
 * @category settings
 */
export const setTlsCertificates = setting<string>("nbd_set_tls_certificates", ["created"], (s, v) => {
  s.tlsCertificates = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getTlsCertificates = getter((s) => s.tlsCertificates)

/**
 * Whether the server's certificate is verified against the CA, and its name against the TLS host name
 * (default true).
 * @since 0.1.0
 * @category settings
 */
export const setTlsVerifyPeer = setting<boolean>("nbd_set_tls_verify_peer", ["created"], (s, v) => {
  s.tlsVerifyPeer = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getTlsVerifyPeer = getter((s) => s.tlsVerifyPeer)

/**
 * The PSK identity (default: the local login name).
 * @since 0.1.0
 * @category settings
 */
export const setTlsUsername = setting<string>("nbd_set_tls_username", ["created"], (s, v) => {
  s.tlsUsername = v
})
/**
 * The PSK identity set, or undefined when the transport will use the local login name.
 * @since 0.1.0
 * @category settings
 */
export const getTlsUsername = getter((s) => s.tlsUsername)

/**
 * The name the server's certificate must carry, in preference to the host the transport connected to (and
 * the only one for Unix sockets).
 * @since 0.1.0
 * @category settings
 */
export const setTlsHostname = setting<string>("nbd_set_tls_hostname", ["created"], (s, v) => {
  s.tlsHostname = v
})
/**
 * The TLS host name set, or "" when none is (as libnbd).
 * @since 0.1.0
 * @category settings
 */
export const getTlsHostname = getter((s) => s.tlsHostname ?? "")

/**
 * A PSK keys file (`username:hexkey` lines, as `psktool` writes); when set, TLS uses PSK instead of X.509.
 * @since 0.1.0
 * @category settings
 */
export const setTlsPskFile = setting<string>("nbd_set_tls_psk_file", ["created"], (s, v) => {
  s.tlsPskFile = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getTlsPskFile = getter((s) => s.tlsPskFile)

/**
 * @since 0.1.0
 * @category settings
 */
export const setRequestStructuredReplies = setting<boolean>(
  "nbd_set_request_structured_replies",
  ["created"],
  (s, v) => {
    s.requestStructuredReplies = v
  }
)
/**
 * @since 0.1.0
 * @category settings
 */
export const getRequestStructuredReplies = getter((s) => s.requestStructuredReplies)

/**
 * @since 0.1.0
 * @category settings
 */
export const setRequestExtendedHeaders = setting<boolean>("nbd_set_request_extended_headers", ["created"], (s, v) => {
  s.requestExtendedHeaders = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getRequestExtendedHeaders = getter((s) => s.requestExtendedHeaders)

/**
 * Whether connect, `optGo` and `optInfo` send NBD_OPT_SET_META_CONTEXT for the added contexts (default true).
 * @since 0.1.0
 * @category settings
 */
export const setRequestMetaContext = setting<boolean>(
  "nbd_set_request_meta_context",
  ["created", "negotiating"],
  (s, v) => {
    s.requestMetaContext = v
  }
)
/**
 * @since 0.1.0
 * @category settings
 */
export const getRequestMetaContext = getter((s) => s.requestMetaContext)

/**
 * Adds a meta context to request, e.g. "base:allocation".
 * @since 0.1.0
 * @category settings
 */
export const addMetaContext = setting<string>("nbd_add_meta_context", ["created", "negotiating"], (s, v) => {
  const error = checkName("nbd_add_meta_context", v)
  if (error) return error
  s.metaContexts.push(v)
})
/**
 * @since 0.1.0
 * @category settings
 */
export const clearMetaContexts = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  setting<void>("nbd_clear_meta_contexts", ["created", "negotiating"], (s) => {
    s.metaContexts = []
  })(h, undefined)
/**
 * The meta contexts that will be requested.
 * @since 0.1.0
 * @category settings
 */
export const getMetaContexts = getter((s): ReadonlyArray<string> => [...s.metaContexts])

/**
 * Whether INFO and GO also ask for the canonical name and description (default false).
 * @since 0.1.0
 * @category settings
 */
export const setFullInfo = setting<boolean>("nbd_set_full_info", ["created", "negotiating"], (s, v) => {
  s.fullInfo = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getFullInfo = getter((s) => s.fullInfo)

/**
 * Whether INFO and GO ask for block sizes (default true).
 * @since 0.1.0
 * @category settings
 */
export const setRequestBlockSize = setting<boolean>(
  "nbd_set_request_block_size",
  ["created", "negotiating"],
  (s, v) => {
    s.requestBlockSize = v
  }
)
/**
 * @since 0.1.0
 * @category settings
 */
export const getRequestBlockSize = getter((s) => s.requestBlockSize)

/**
 * The handshake flags the client offers (FIXED_NEWSTYLE | NO_ZEROES by default).
 * @since 0.1.0
 * @category settings
 */
export const setHandshakeFlags = setting<number>("nbd_set_handshake_flags", ["created"], (s, v) => {
  if (!Number.isInteger(v) || (v & ~HandshakeFlag.MASK) !== 0)
    return internal.invalidArgument("nbd_set_handshake_flags", `flags: invalid value for flag: 0x${v.toString(16)}`)
  s.handshakeFlags = v
})
/**
 * Before connecting, the flags the client will offer; after, the flags agreed with the server.
 * @since 0.1.0
 * @category settings
 */
export const getHandshakeFlags = (h: Handle): Effect.Effect<number> =>
  Effect.sync(() => toImpl(h).handshakeFlags ?? toImpl(h).settings.handshakeFlags)

/**
 * Client-side checks (`Strict.*`; default all). Allowed in any state.
 * @since 0.1.0
 * @category settings
 */
export const setStrictMode = setting<number>("nbd_set_strict_mode", anyState, (s, v) => {
  if (!Number.isInteger(v) || (v & ~Strict.MASK) !== 0)
    return internal.invalidArgument("nbd_set_strict_mode", `flags: invalid value for flag: 0x${v.toString(16)}`)
  s.strictMode = v
})
/**
 * @since 0.1.0
 * @category settings
 */
export const getStrictMode = getter((s) => s.strictMode)

// ---------------------------------------------------------------------------------------------------------------
// Option mode
// ---------------------------------------------------------------------------------------------------------------

/** Runs one option exchange from Negotiating, with the handle Connecting meanwhile, as libnbd does. */
const optionCall = <A>(
  h: Handle,
  operation: string,
  body: (impl: internal.HandleImpl, conn: Connection) => Effect.Effect<A, NbdError.NbdError>
): Effect.Effect<A, NbdError.NbdError> =>
  Effect.gen(function* () {
    const impl = toImpl(h)
    const claimed = yield* SubscriptionRef.modify(
      impl.state,
      (s): [HandleState.HandleState | undefined, HandleState.HandleState] =>
        HandleState.isNegotiating(s) ? [undefined, HandleState.Connecting] : [s, s]
    )
    if (claimed !== undefined) yield* internal.checkState(impl, operation, ["negotiating"])
    const conn = impl.connection!
    return yield* body(impl, conn).pipe(
      Effect.tap(() =>
        Effect.flatMap(impl.state.get, (s) =>
          HandleState.isConnecting(s) ? impl.setState(HandleState.Negotiating) : Effect.void
        )
      ),
      Effect.tapError((error) =>
        error._tag === "OptionError" || error._tag === "InvalidStateError" || error._tag === "InvalidArgumentError"
          ? impl.setState(HandleState.Negotiating)
          : kill(impl, conn, error)
      ),
      Effect.onInterrupt(() =>
        kill(impl, conn, new NbdError.ConnectionError({ errno: "ENOTCONN", operation, message: "option interrupted" }))
      )
    )
  })

/**
 * Ends option mode: NBD_OPT_GO (or NBD_OPT_EXPORT_NAME on a non-fixed newstyle server); Ready on success,
 * still Negotiating when the server refuses.
 * @since 0.1.0
 * @category option mode
 */
export const optGo = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  optionCall(h, "nbd_opt_go", (impl, conn) => handshake.goOrInfo(impl, conn, "nbd_opt_go", Protocol.Opt.GO))

/**
 * NBD_OPT_INFO for the current export name: learns its size, flags and block sizes without leaving option mode.
 * @since 0.1.0
 * @category option mode
 */
export const optInfo = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  optionCall(h, "nbd_opt_info", (impl, conn) => handshake.goOrInfo(impl, conn, "nbd_opt_info", Protocol.Opt.INFO))

/**
 * NBD_OPT_ABORT: ends the negotiation and the connection; the handle is Closed.
 * @since 0.1.0
 * @category option mode
 */
export const optAbort = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  optionCall(h, "nbd_opt_abort", (impl, conn) => {
    if (impl.protocol === "newstyle") return Effect.fail(handshake.notFixedNewstyle("nbd_opt_abort"))
    handshake.sendAbort(conn)
    return Effect.gen(function* () {
      yield* impl.setState(HandleState.Closed)
      yield* conn.drain(GRACE)
      yield* Effect.ignore(Effect.timeout(Deferred.await(conn.endedSignal), GRACE))
      yield* conn.terminate(undefined)
    })
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

const requireFixed = (impl: internal.HandleImpl, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  impl.protocol === "newstyle" ? Effect.fail(handshake.notFixedNewstyle(operation)) : Effect.void

/**
 * NBD_OPT_LIST: the exports the server offers, with their descriptions.
 * @since 0.1.0
 * @category option mode
 */
export const optList = (h: Handle): Effect.Effect<ReadonlyArray<ExportEntry>, NbdError.NbdError> =>
  optionCall(h, "nbd_opt_list", (impl, conn) =>
    Effect.zipRight(requireFixed(impl, "nbd_opt_list"), listExports(impl, conn))
  )

const listExports = (
  impl: internal.HandleImpl,
  conn: Connection
): Effect.Effect<ReadonlyArray<ExportEntry>, NbdError.NbdError> =>
  Effect.gen(function* () {
    conn.send(encodeOptionOnly(Protocol.Opt.LIST))
    const entries: Array<ExportEntry> = []
    while (true) {
      const reply = yield* conn.awaitMessage(() => conn.handshake.decodeOptionReply(Protocol.Opt.LIST))
      switch (reply._tag) {
        case "Server":
          entries.push({ name: reply.name, description: reply.description })
          break
        case "Ack":
          return entries
        case "Error": {
          const error = handshake.optionErrorOf(impl, "nbd_opt_list", reply)
          return yield* Effect.fail(new NbdError.OptionError({ ...error, errno: "ENOTSUP" }))
        }
        default:
          return yield* Effect.fail(
            new NbdError.ProtocolError({
              errno: "",
              operation: "nbd_opt_list",
              message: "handshake: unexpected option reply type to NBD_OPT_LIST"
            })
          )
      }
    }
  })

const encodeOptionOnly = (option: number): Uint8Array => {
  const out = new Uint8Array(16)
  const view = new DataView(out.buffer)
  view.setBigUint64(0, Protocol.IHAVEOPT)
  view.setUint32(8, option)
  return out
}

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
  optionCall(h, "nbd_opt_list_meta_context", (impl, conn) =>
    Effect.zipRight(
      requireFixed(impl, "nbd_opt_list_meta_context"),
      handshake.metaContextExchange(
        impl,
        conn,
        "nbd_opt_list_meta_context",
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
  optionCall(h, "nbd_opt_set_meta_context", (impl, conn) =>
    Effect.gen(function* () {
      yield* requireFixed(impl, "nbd_opt_set_meta_context")
      if (!impl.structuredReplies)
        return yield* Effect.fail(
          new NbdError.InvalidArgumentError({
            errno: "ENOTSUP",
            operation: "nbd_opt_set_meta_context",
            message: "server lacks structured replies"
          })
        )
      return yield* handshake.metaContextExchange(
        impl,
        conn,
        "nbd_opt_set_meta_context",
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
  optionCall(h, "nbd_opt_structured_reply", (impl, conn) =>
    Effect.zipRight(
      requireFixed(impl, "nbd_opt_structured_reply"),
      handshake.negotiateFeature(impl, conn, Protocol.Opt.STRUCTURED_REPLY)
    )
  )

/**
 * NBD_OPT_EXTENDED_HEADERS: true when the server agreed.
 * @since 0.1.0
 * @category option mode
 */
export const optExtendedHeaders = (h: Handle): Effect.Effect<boolean, NbdError.NbdError> =>
  optionCall(h, "nbd_opt_extended_headers", (impl, conn) =>
    Effect.zipRight(
      requireFixed(impl, "nbd_opt_extended_headers"),
      handshake.negotiateFeature(impl, conn, Protocol.Opt.EXTENDED_HEADERS)
    )
  )

/**
 * NBD_OPT_STARTTLS (nbd_opt_starttls): true when the server accepted and the connection is now encrypted,
 * false when it refused (the connection goes on in plaintext). After an upgrade, structured replies,
 * extended headers and meta contexts must be negotiated again. Needs a transport that provides `StartTls`;
 * without one it fails with ENOTSUP and sends nothing.
 * @since 0.1.0
 * @category option mode
 */
export const optStarttls = (h: Handle): Effect.Effect<boolean, NbdError.NbdError> =>
  optionCall(h, "nbd_opt_starttls", (impl, conn) =>
    Effect.gen(function* () {
      yield* requireFixed(impl, "nbd_opt_starttls")
      const service = impl.startTls
      if (service === undefined)
        return yield* Effect.fail(
          new NbdError.InvalidArgumentError({
            errno: "ENOTSUP",
            operation: "nbd_opt_starttls",
            message: "TLS is not available on this transport"
          })
        )
      return yield* handshake.starttls(impl, conn, "nbd_opt_starttls", service)
    })
  )

// ---------------------------------------------------------------------------------------------------------------
// Export info
// ---------------------------------------------------------------------------------------------------------------

const infoStates: ReadonlyArray<internal.Permitted> = ["negotiating", "connected", "closed"]

const withInfo =
  <A>(
    operation: string,
    f: (info: internal.ExportInfo, impl: internal.HandleImpl) => A | Effect.Effect<A, NbdError.NbdError>
  ) =>
  (h: Handle): Effect.Effect<A, NbdError.NbdError> => {
    const impl = toImpl(h)
    return internal.checkState(impl, operation, infoStates).pipe(
      Effect.zipRight(internal.requireInfo(impl, operation)),
      Effect.flatMap((info) => {
        const result = f(info, impl)
        return Effect.isEffect(result) ? result : Effect.succeed(result)
      })
    )
  }

const flagGetter = (operation: string, flag: number) => withInfo(operation, (info) => (info.flags & flag) !== 0)

/**
 * The export's size in bytes.
 * @since 0.1.0
 * @category export info
 */
export const getSize = withInfo("nbd_get_size", (info) => info.size)

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
  withInfo("nbd_get_block_size", (info) =>
    kind === "payload" ? internal.payloadMaximum(info) : (info.blockSizes?.[kind] ?? 0)
  )(h)

/**
 * @since 0.1.0
 * @category export info
 */
export const isReadOnly = flagGetter("nbd_is_read_only", Protocol.TFlag.READ_ONLY)
/**
 * @since 0.1.0
 * @category export info
 */
export const canFlush = flagGetter("nbd_can_flush", Protocol.TFlag.SEND_FLUSH)
/**
 * @since 0.1.0
 * @category export info
 */
export const canFua = flagGetter("nbd_can_fua", Protocol.TFlag.SEND_FUA)
/**
 * @since 0.1.0
 * @category export info
 */
export const isRotational = flagGetter("nbd_is_rotational", Protocol.TFlag.ROTATIONAL)
/**
 * @since 0.1.0
 * @category export info
 */
export const canTrim = flagGetter("nbd_can_trim", Protocol.TFlag.SEND_TRIM)
/**
 * @since 0.1.0
 * @category export info
 */
export const canZero = flagGetter("nbd_can_zero", Protocol.TFlag.SEND_WRITE_ZEROES)
/**
 * @since 0.1.0
 * @category export info
 */
export const canFastZero = flagGetter("nbd_can_fast_zero", Protocol.TFlag.SEND_FAST_ZERO)
/**
 * @since 0.1.0
 * @category export info
 */
export const canDf = flagGetter("nbd_can_df", Protocol.TFlag.SEND_DF)
/**
 * @since 0.1.0
 * @category export info
 */
export const canMultiConn = flagGetter("nbd_can_multi_conn", Protocol.TFlag.CAN_MULTI_CONN)
/**
 * @since 0.1.0
 * @category export info
 */
export const canCache = flagGetter("nbd_can_cache", Protocol.TFlag.SEND_CACHE)
/**
 * @since 0.1.0
 * @category export info
 */
export const canBlockStatusPayload = flagGetter("nbd_can_block_status_payload", Protocol.TFlag.BLOCK_STATUS_PAYLOAD)

/**
 * Whether the server agreed to the named meta context in the last SET_META_CONTEXT.
 * @since 0.1.0
 * @category export info
 */
export const canMetaContext = (h: Handle, name: string): Effect.Effect<boolean, NbdError.NbdError> =>
  withInfo("nbd_can_meta_context", (_, impl) => {
    if (impl.metaContexts === undefined) {
      if (impl.settings.metaContexts.length > 0 && impl.settings.requestMetaContext && impl.structuredReplies)
        return Effect.fail(
          internal.invalidArgument("nbd_can_meta_context", "need a successful server meta context request first")
        )
      return false
    }
    for (const context of impl.metaContexts.values()) if (context === name) return true
    return false
  })(h)

/**
 * "oldstyle", "newstyle" or "newstyle-fixed".
 * @since 0.1.0
 * @category export info
 */
export const getProtocol = (h: Handle): Effect.Effect<string, NbdError.NbdError> => {
  const impl = toImpl(h)
  return Effect.zipRight(internal.checkState(impl, "nbd_get_protocol", infoStates), Effect.succeed(impl.protocol ?? ""))
}

/**
 * The canonical export name the server reported (needs `setFullInfo(true)`); ENOTSUP when it sent none.
 * @since 0.1.0
 * @category export info
 */
export const getCanonicalExportName = withInfo("nbd_get_canonical_export_name", (info, impl) =>
  info.canonicalName !== undefined
    ? info.canonicalName
    : impl.settings.fullInfo
      ? Effect.fail(
          new NbdError.InvalidArgumentError({
            errno: "ENOTSUP",
            operation: "nbd_get_canonical_export_name",
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
export const getExportDescription = withInfo("nbd_get_export_description", (info) =>
  info.description !== undefined
    ? info.description
    : Effect.fail(
        new NbdError.InvalidArgumentError({
          errno: "ENOTSUP",
          operation: "nbd_get_export_description",
          message: "server did not advertise a description"
        })
      )
)

const negotiated = (operation: string, f: (impl: internal.HandleImpl) => boolean) => (h: Handle) => {
  const impl = toImpl(h)
  return Effect.zipRight(
    internal.checkState(impl, operation, infoStates),
    Effect.sync(() => f(impl))
  )
}

/**
 * @since 0.1.0
 * @category export info
 */
export const getStructuredRepliesNegotiated = negotiated(
  "nbd_get_structured_replies_negotiated",
  (i) => i.structuredReplies
)
/**
 * @since 0.1.0
 * @category export info
 */
export const getExtendedHeadersNegotiated = negotiated("nbd_get_extended_headers_negotiated", (i) => i.extendedHeaders)
/**
 * @since 0.1.0
 * @category export info
 */
export const getTlsNegotiated = negotiated("nbd_get_tls_negotiated", (i) => i.tlsNegotiated)

/**
 * Bytes and protocol chunks sent and received so far.
 * @since 0.1.0
 * @category export info
 */
export interface Stats {
  readonly bytesSent: number
  readonly chunksSent: number
  readonly bytesReceived: number
  readonly chunksReceived: number
}

/**
 * @since 0.1.0
 * @category export info
 */
export const stats = (h: Handle): Effect.Effect<Stats> => Effect.sync(() => ({ ...toImpl(h).stats }))

// ---------------------------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------------------------

/**
 * Options of a read.
 * @since 0.1.0
 * @category models
 */
export interface ReadOptions {
  /** Read into this buffer (its length is the count) instead of a new one. */
  readonly buffer?: Uint8Array
  readonly flags?: number
}

/** Whether a read count is one a buffer can be allocated for; other counts fail the command's checks. */
const validCount = (count: number): boolean =>
  Number.isSafeInteger(count) && count >= 0 && count <= Protocol.Limits.MAX_REQUEST_SIZE

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
): Effect.Effect<Command<Uint8Array>, NbdError.NbdError> => {
  if (options.buffer !== undefined && options.buffer.length !== count)
    return Effect.fail(internal.invalidArgument("nbd_aio_pread", "buffer length does not match count"))
  const buffer = options.buffer ?? (validCount(count) ? new Uint8Array(count) : undefined)
  return commands.issue(toImpl(h), {
    operation: "nbd_aio_pread",
    type: Protocol.Cmd.READ,
    flags: options.flags ?? 0,
    allowedFlags: 0,
    offset,
    count,
    buffer
  })
}

/**
 * Reads `count` bytes at `offset`: all or nothing.
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
  options?: ReadOptions
): Effect.Effect<Uint8Array, NbdError.NbdError> => Effect.flatMap(aioPread(h, count, offset, options), (c) => c.await)

/**
 * Options of a command that takes only flags.
 * @since 0.1.0
 * @category models
 */
export interface FlagOptions {
  readonly flags?: number
}

const autoPayloadLen = (impl: internal.HandleImpl, flags: number): number => {
  if ((impl.settings.strictMode & Strict.AUTO_FLAG) === 0) return flags
  return impl.extendedHeaders ? flags | Protocol.CmdFlag.PAYLOAD_LEN : flags & ~Protocol.CmdFlag.PAYLOAD_LEN
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
): Effect.Effect<Command<void>, NbdError.NbdError> => {
  const impl = toImpl(h)
  return commands.issue(impl, {
    operation: "nbd_aio_pwrite",
    type: Protocol.Cmd.WRITE,
    flags: autoPayloadLen(impl, options.flags ?? 0),
    allowedFlags: Protocol.CmdFlag.FUA | Protocol.CmdFlag.PAYLOAD_LEN,
    offset,
    count: data.length,
    payload: data
  })
}

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
  options?: FlagOptions
): Effect.Effect<void, NbdError.NbdError> => Effect.flatMap(aioPwrite(h, data, offset, options), (c) => c.await)

/**
 * Queues NBD_CMD_FLUSH.
 * @since 0.1.0
 * @category commands
 */
export const aioFlush = (h: Handle, options: FlagOptions = {}): Effect.Effect<Command<void>, NbdError.NbdError> =>
  commands.issue(toImpl(h), {
    operation: "nbd_aio_flush",
    type: Protocol.Cmd.FLUSH,
    flags: options.flags ?? 0,
    allowedFlags: 0,
    offset: 0,
    count: 0
  })

/**
 * NBD_CMD_FLUSH: makes earlier writes durable.
 * @since 0.1.0
 * @category commands
 */
export const flush = (h: Handle, options?: FlagOptions): Effect.Effect<void, NbdError.NbdError> =>
  Effect.flatMap(aioFlush(h, options), (c) => c.await)

/**
 * One chunk of a structured read: data, a hole (reads as zeroes), or an error at an offset.
 * @since 0.1.0
 * @category models
 */
export type ReadChunk = import("./internal/connection.js").ReadChunk

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
): Effect.Effect<Command<StructuredRead>, NbdError.NbdError> => {
  const impl = toImpl(h)
  const chunks: Array<ReadChunk> = []
  const buffer = validCount(count) ? new Uint8Array(count) : undefined
  return Effect.map(
    commands.issue<Uint8Array>(impl, {
      operation: "nbd_aio_pread_structured",
      type: Protocol.Cmd.READ,
      flags: options.flags ?? 0,
      allowedFlags: Protocol.CmdFlag.DF,
      offset,
      count,
      buffer,
      chunks
    }),
    (command) => ({
      cookie: command.cookie,
      await: Effect.map(command.await, (data) => ({
        data,
        chunks:
          chunks.length === 0 && count > 0 ? [{ _tag: "Data" as const, offset: Number(offset), length: count }] : chunks
      }))
    })
  )
}

/**
 * A read that reports the server's chunks: data, holes and errors with their offsets.
 * @since 0.1.0
 * @category commands
 */
export const preadStructured = (
  h: Handle,
  count: number,
  offset: number | bigint,
  options?: FlagOptions
): Effect.Effect<StructuredRead, NbdError.NbdError> =>
  Effect.flatMap(aioPreadStructured(h, count, offset, options), (c) => c.await)

const simpleCommand =
  (operation: string, type: number, allowedFlags: number) =>
  (
    h: Handle,
    count: number | bigint,
    offset: number | bigint,
    options: FlagOptions = {}
  ): Effect.Effect<Command<void>, NbdError.NbdError> =>
    commands.issue(toImpl(h), { operation, type, flags: options.flags ?? 0, allowedFlags, offset, count })

/**
 * Queues NBD_CMD_TRIM of `count` bytes at `offset` (flags: FUA).
 * @since 0.1.0
 * @category commands
 */
export const aioTrim = simpleCommand("nbd_aio_trim", Protocol.Cmd.TRIM, Protocol.CmdFlag.FUA)
/**
 * NBD_CMD_TRIM: the server may discard the range (flags: FUA).
 * @since 0.1.0
 * @category commands
 */
export const trim = (h: Handle, count: number | bigint, offset: number | bigint, options?: FlagOptions) =>
  Effect.flatMap(aioTrim(h, count, offset, options), (c) => c.await)

/**
 * Queues NBD_CMD_CACHE of `count` bytes at `offset`.
 * @since 0.1.0
 * @category commands
 */
export const aioCache = simpleCommand("nbd_aio_cache", Protocol.Cmd.CACHE, 0)
/**
 * NBD_CMD_CACHE: asks the server to prefetch the range.
 * @since 0.1.0
 * @category commands
 */
export const cache = (h: Handle, count: number | bigint, offset: number | bigint, options?: FlagOptions) =>
  Effect.flatMap(aioCache(h, count, offset, options), (c) => c.await)

/**
 * Queues NBD_CMD_WRITE_ZEROES of `count` bytes at `offset` (flags: FUA, NO_HOLE, FAST_ZERO).
 * @since 0.1.0
 * @category commands
 */
export const aioZero = simpleCommand(
  "nbd_aio_zero",
  Protocol.Cmd.WRITE_ZEROES,
  Protocol.CmdFlag.FUA | Protocol.CmdFlag.NO_HOLE | Protocol.CmdFlag.FAST_ZERO
)
/**
 * NBD_CMD_WRITE_ZEROES: the range reads as zeroes afterwards (flags: FUA, NO_HOLE, FAST_ZERO).
 * @since 0.1.0
 * @category commands
 */
export const zero = (h: Handle, count: number | bigint, offset: number | bigint, options?: FlagOptions) =>
  Effect.flatMap(aioZero(h, count, offset, options), (c) => c.await)

/**
 * One block-status extent: its length and its flags in the context (for base:allocation, `STATE_HOLE`
 * and `STATE_ZERO`).
 * @since 0.1.0
 * @category models
 */
export interface Extent {
  readonly length: bigint
  readonly flags: number
}

/**
 * The extents one meta context reported, starting at the request's offset.
 * @since 0.1.0
 * @category models
 */
export interface BlockStatusEntry {
  readonly context: string
  readonly offset: bigint
  readonly extents: ReadonlyArray<Extent>
}

const blockStatusCollector = (
  impl: internal.HandleImpl,
  operation: string,
  offset: number | bigint,
  count: number | bigint
) => blockStatusInternal.makeCollector(impl, operation, Number(offset), Number(count))

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
): Effect.Effect<Command<ReadonlyArray<BlockStatusEntry>>, NbdError.NbdError> => {
  const impl = toImpl(h)
  const { entries, onBlockStatus } = blockStatusCollector(impl, "nbd_aio_block_status", offset, count)
  return Effect.map(
    commands.issue<void>(impl, {
      operation: "nbd_aio_block_status",
      type: Protocol.Cmd.BLOCK_STATUS,
      flags: options.flags ?? 0,
      allowedFlags: Protocol.CmdFlag.REQ_ONE,
      offset,
      count,
      onBlockStatus
    }),
    (command) => ({ cookie: command.cookie, await: Effect.as(command.await, entries) })
  )
}

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
export const blockStatus = (h: Handle, count: number | bigint, offset: number | bigint, options?: FlagOptions) =>
  Effect.flatMap(aioBlockStatus(h, count, offset, options), (c) => c.await)

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
  Effect.suspend(() => {
    const impl = toImpl(h)
    const operation = "nbd_aio_block_status_filter"
    const strict = impl.settings.strictMode
    let flags = options.flags ?? 0
    if (strict & Strict.AUTO_FLAG) flags |= Protocol.CmdFlag.PAYLOAD_LEN
    if (impl.info !== undefined && strict & Strict.COMMANDS) {
      if (!impl.extendedHeaders)
        return Effect.fail(internal.invalidArgument(operation, "server does not support extended headers", "ENOTSUP"))
      if ((impl.info.flags & Protocol.TFlag.BLOCK_STATUS_PAYLOAD) === 0)
        return Effect.fail(internal.invalidArgument(operation, "server does not support the block status payload"))
    }
    const ids: Array<number> = []
    for (const name of contexts) {
      const id = [...(impl.metaContexts ?? new Map<number, string>()).entries()].find(([, n]) => n === name)?.[0]
      if (id === undefined) return Effect.fail(internal.invalidArgument(operation, `context ${name} not negotiated`))
      ids.push(id)
    }
    const payloadLength = 8 + 4 * ids.length
    if (payloadLength > internal.payloadMaximum(impl.info))
      return Effect.fail(internal.invalidArgument(operation, "filter set too large", "ERANGE"))
    const payload = new Uint8Array(payloadLength)
    const view = new DataView(payload.buffer)
    view.setBigUint64(0, BigInt(count))
    ids.forEach((id, i) => view.setUint32(8 + 4 * i, id))
    const { entries, onBlockStatus } = blockStatusCollector(impl, operation, offset, count)
    return Effect.map(
      commands.issue<void>(impl, {
        operation,
        type: Protocol.Cmd.BLOCK_STATUS,
        flags,
        allowedFlags: Protocol.CmdFlag.REQ_ONE | Protocol.CmdFlag.PAYLOAD_LEN,
        offset,
        count,
        requestLength: (flags & Protocol.CmdFlag.PAYLOAD_LEN) !== 0 ? payloadLength : Number(count),
        payload: (flags & Protocol.CmdFlag.PAYLOAD_LEN) !== 0 ? payload : undefined,
        onBlockStatus
      }),
      (command) => ({ cookie: command.cookie, await: Effect.as(command.await, entries) })
    )
  })

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
  options?: FlagOptions
) => Effect.flatMap(aioBlockStatusFilter(h, count, offset, contexts, options), (c) => c.await)

/**
 * Commands queued or waiting for a reply.
 * @since 0.1.0
 * @category commands
 */
export const aioInFlight = (h: Handle): Effect.Effect<number, NbdError.NbdError> => {
  const impl = toImpl(h)
  return Effect.zipRight(
    internal.checkState(impl, "nbd_aio_in_flight", ["connected", "closed", "dead"]),
    Effect.sync(() => impl.connection?.inFlight ?? 0)
  )
}

/**
 * Queues NBD_CMD_DISC after the commands already queued; later commands fail with EINVAL. The handle
 * becomes Closed once the server closes the connection.
 * @since 0.1.0
 * @category commands
 */
export const aioDisconnect = (h: Handle): Effect.Effect<void, NbdError.NbdError> =>
  commands.disconnect(toImpl(h), "nbd_aio_disconnect")

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
  Effect.gen(function* () {
    const impl = toImpl(h)
    const s = yield* internal.checkState(impl, "nbd_shutdown", ["negotiating", "connected"])
    if (HandleState.isNegotiating(s)) return yield* optAbort(h)
    const conn = impl.connection!
    if (options.abandonPending) conn.abandonUnsent("nbd_shutdown")
    if (!conn.disconnectRequested) yield* commands.disconnect(impl, "nbd_shutdown")
    yield* Deferred.await(conn.endedSignal)
  })

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
