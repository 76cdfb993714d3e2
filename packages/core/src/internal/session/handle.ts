import type * as Socket from "@effect/platform/Socket"
import type * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Inspectable from "effect/Inspectable"
import { pipeArguments } from "effect/Pipeable"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import type * as Transport from "../../Transport.js"
import type { Connection, Host, Pending, Stats } from "./connection.js"
import { Completion } from "../engine/completion.js"
import * as TlsPriority from "../../TlsPriority.js"

export type TlsMode = "disable" | "allow" | "require"

export interface Settings {
  exportName: string
  handleName: string
  tls: TlsMode
  tlsCertificates: string | undefined
  tlsVerifyPeer: boolean
  tlsUsername: string | undefined
  tlsHostname: string | undefined
  tlsPskFile: string | undefined
  /** The GnuTLS priority string (libnbd's tls_priority), checked when set; see TlsPriority.ts. */
  tlsPriority: string
  requestStructuredReplies: boolean
  requestExtendedHeaders: boolean
  requestMetaContext: boolean
  metaContexts: Array<string>
  fullInfo: boolean
  requestBlockSize: boolean
  handshakeFlags: number
  strictMode: number
  optMode: boolean
  /** How long a graceful close waits; see `Nbd.Settings.closeGrace`. */
  closeGrace: Duration.Duration
  /** Whether a read zeroes the caller's buffer before any check (libnbd's pread_initialize). */
  preadInitialize: boolean
  /** Whether calls, state changes, options and commands are logged at Debug level. */
  debug: boolean
  /** Whether calls are counted and timed through Effect's Metric (see internal/metrics.ts). */
  metrics: boolean
  /** When a dropped connection is opened again; undefined: never (see `Nbd.Settings.reconnect`). */
  reconnect: Schedule.Schedule<unknown, NbdError.NbdError> | undefined
  /** How long the first connect keeps trying; undefined: one try (see `Nbd.Settings.openTimeout`). */
  openTimeout: Duration.Duration | undefined
}

/**
 * A reconnect under way: the commands that were waiting when the connection dropped, held to be sent again
 * in their order, and the signal new commands wait on.
 */
export interface Recovery {
  readonly waiting: Array<Pending>
  /**
   * Succeeds once the waiting commands are replayed; fails (operation "reconnect") when the handle gives up.
   * A plain completion: a command submitted meanwhile (`commands.submit`) listens to it without a fiber.
   */
  readonly ready: Completion
  /** Set once the reconnect has begun: later ends (of the connections it tries) are its own to handle. */
  started: boolean
  /** The fiber that reconnects, once started. */
  fiber: Fiber.RuntimeFiber<void> | undefined
}

/** The error a command that waited for a reconnect fails with, under its own name, when the reconnect fails. */
export const stranded = (error: NbdError.NbdError, operation: string): NbdError.NbdError =>
  error._tag === "ExportChangedError"
    ? new NbdError.ExportChangedError({ errno: error.errno, operation, message: error.message })
    : new NbdError.ConnectionError({ errno: "ENOTCONN", operation, message: error.message, cause: error.cause })

export type BlockSizes = Protocol.BlockSizes

export interface ExportInfo {
  size: bigint
  flags: number
  blockSizes: BlockSizes | undefined
  canonicalName: string | undefined
  description: string | undefined
}

export type { Stats } from "./connection.js"

/** The TLS settings as the transport's upgrade sees them. */
export const tlsSettings = (s: Settings): Transport.TlsSettings => ({
  certificates: s.tlsCertificates,
  verifyPeer: s.tlsVerifyPeer,
  username: s.tlsUsername,
  hostname: s.tlsHostname,
  pskFile: s.tlsPskFile,
  priority: s.tlsPriority
})

export type ProtocolName = "oldstyle" | "newstyle" | "newstyle-fixed"

let handleCounter = 0

/** What marks a value as a handle. */
export const TypeId: unique symbol = Symbol.for("@effect-nbd/core/Nbd/Handle")

/**
 * The handle itself: a value made by `Nbd.make`, holding everything about one connection to one export. The
 * lifecycle state lives in a SubscriptionRef; the rest is plain.
 */
export class HandleImpl implements Host, Inspectable.Inspectable {
  readonly [TypeId]: typeof TypeId = TypeId
  readonly settings: Settings
  /** Settles when the handshake begun by a connect ends; undefined before any connect. */
  handshakeDone: Deferred.Deferred<void, NbdError.NbdError> | undefined = undefined
  connection: Connection | undefined = undefined
  protocol: ProtocolName | undefined = undefined
  handshakeFlags: number | undefined = undefined
  structuredReplies = false
  extendedHeaders = false
  tlsNegotiated = false
  /** What the transport that connected the handle offers: TLS, its address, its subprocess. */
  transport: Transport.Service | undefined = undefined
  info: ExportInfo | undefined = undefined
  /** Negotiated meta contexts by id, or undefined when no SET_META_CONTEXT has succeeded. */
  metaContexts: Map<number, string> | undefined = undefined
  /**
   * libnbd's meta_valid: the negotiated contexts may be trusted. Set by a successful SET_META_CONTEXT, or by
   * INFO/GO when contexts were requested but structured replies are off or none were added; cleared when
   * the export name changes, INFO/GO fails, a SET begins, or STARTTLS succeeds.
   */
  metaValid = false
  /** Whether a fiber is logging this handle's state changes (debug on). */
  stateWatched = false
  readonly stats: Stats = { bytesSent: 0, chunksSent: 0, bytesReceived: 0, chunksReceived: 0, reconnects: 0 }
  /** The socket the handle connected on: a reconnect runs it again, which opens a new connection. */
  socket: Socket.Socket | undefined = undefined
  /** Set while a reconnect is under way. */
  recovery: Recovery | undefined = undefined
  /** Begins a reconnect (internal/reconnect.ts); set when the handle connects with a reconnect schedule. */
  reconnect: ((h: HandleImpl) => Effect.Effect<void>) | undefined = undefined
  /** Set once the handle's own ending (close, kill, opt_abort) has begun: a drop after it is not recovered. */
  ending = false
  /** Set while the first connect retries under an open timeout: a failed try's end leaves the state alone. */
  opening = false

  constructor(
    readonly state: SubscriptionRef.SubscriptionRef<HandleState.HandleState>,
    /** The scope the connection's fibers run in: closed after the close finalizer, so they outlive it. */
    readonly scope: Scope.Scope,
    settings: Partial<Settings>
  ) {
    handleCounter += 1
    this.settings = {
      exportName: "",
      handleName: `nbd${handleCounter}`,
      tls: "disable",
      tlsCertificates: undefined,
      tlsVerifyPeer: true,
      tlsUsername: undefined,
      tlsHostname: undefined,
      tlsPskFile: undefined,
      tlsPriority: TlsPriority.DEFAULT,
      requestStructuredReplies: true,
      requestExtendedHeaders: true,
      requestMetaContext: true,
      metaContexts: [],
      fullInfo: false,
      requestBlockSize: true,
      handshakeFlags: Protocol.HANDSHAKE_FLAG_MASK,
      strictMode: Protocol.Strict.MASK,
      optMode: false,
      closeGrace: Duration.seconds(2),
      preadInitialize: true,
      debug: false,
      metrics: false,
      reconnect: undefined,
      openTimeout: undefined,
      ...settings
    }
  }

  pipe() {
    // eslint-disable-next-line prefer-rest-params
    return pipeArguments(this, arguments)
  }

  toJSON(): unknown {
    return { _id: "NbdHandle", name: this.settings.handleName, state: HandleState.shortName(this.stateNow) }
  }

  toString(): string {
    return Inspectable.format(this.toJSON())
  }

  [Inspectable.NodeInspectSymbol](): unknown {
    return this.toJSON()
  }

  /** The state as callers see it: Ready becomes Processing while a request or reply is half-way through. */
  get currentState(): Effect.Effect<HandleState.HandleState> {
    return Effect.map(SubscriptionRef.get(this.state), (s) =>
      s._tag === "Ready" && this.connection?.busy() ? HandleState.Processing : s
    )
  }

  /**
   * Keeps the commands of a connection that dropped, for a reconnect to replay, when the handle reconnects:
   * it was connected, it is not ending, and the connection ended cleanly or by a socket error (a protocol
   * error is the server's fault, and is fatal as without reconnect).
   */
  adopt(error: NbdError.NbdError | undefined, waiting: Iterable<Pending>): boolean {
    if (this.reconnect === undefined || this.recovery !== undefined || this.ending) return false
    if (!HandleState.isConnected(this.stateNow)) return false
    if (error !== undefined && error._tag !== "ConnectionError") return false
    this.recovery = {
      waiting: [...waiting],
      ready: new Completion(),
      started: false,
      fiber: undefined
    }
    return true
  }

  /**
   * The engine's word that the connection ended: Dead with its error, or Closed, unless it already is. While
   * a reconnect is due or under way, the reconnect owns the state: it starts here, once.
   */
  connectionEnded(error: NbdError.NbdError | undefined): Effect.Effect<void> {
    if (this.opening) return Effect.void
    const recovery = this.recovery
    if (recovery !== undefined)
      return recovery.started || this.reconnect === undefined ? Effect.void : this.reconnect(this)
    return Effect.flatMap(SubscriptionRef.get(this.state), (s) =>
      HandleState.isClosed(s) || HandleState.isDead(s)
        ? Effect.void
        : this.setState(error === undefined ? HandleState.Closed : HandleState.Dead(error))
    )
  }

  /**
   * Moves to `s`, atomically. Once the connection has ended (Dead or Closed) only Dead or Closed may follow:
   * a handshake that finishes after its connection died must not bring the handle back to life.
   */
  setState(s: HandleState.HandleState): Effect.Effect<void> {
    const ending = HandleState.isDead(s) || HandleState.isClosed(s)
    return this.mirrored(
      SubscriptionRef.updateSomeAndGet(this.state, (current) =>
        ending || !(HandleState.isDead(current) || HandleState.isClosed(current)) ? Option.some(s) : Option.none()
      )
    )
  }

  /** Moves the state by `f`, atomically, as `SubscriptionRef.modify` does, and answers what `f` answered. */
  transition<A>(f: (s: HandleState.HandleState) => readonly [A, HandleState.HandleState]): Effect.Effect<A> {
    return Effect.flatMap(
      SubscriptionRef.modify(this.state, (s): [readonly [A, HandleState.HandleState], HandleState.HandleState] => {
        const [answer, next] = f(s)
        return [[answer, next], next]
      }),
      ([answer, next]) =>
        Effect.sync(() => {
          this.stateNow = next
          return answer
        })
    )
  }

  /**
   * The state as last set, read without an effect: what the one wrapper checks each call against, so a call
   * costs no extra step for it. Every change goes through `setState` or `transition`, which keep it.
   */
  stateNow: HandleState.HandleState = HandleState.Created

  private mirrored(update: Effect.Effect<HandleState.HandleState>): Effect.Effect<void> {
    return Effect.map(update, (s) => {
      this.stateNow = s
    })
  }
}

/** The classes of states libnbd permits calls in. */
export type Permitted = "created" | "connecting" | "negotiating" | "connected" | "closed" | "dead"

const permittedText: Record<Permitted, string> = {
  created: "newly created",
  connecting: "connecting",
  negotiating: "negotiating",
  connected: "connected with the server",
  closed: "shut down",
  dead: "dead"
}

const classOf = (s: HandleState.HandleState): Permitted => {
  switch (s._tag) {
    case "Created":
      return "created"
    case "Connecting":
      return "connecting"
    case "Negotiating":
      return "negotiating"
    case "Ready":
    case "Processing":
      return "connected"
    case "Closed":
      return "closed"
    case "Dead":
      return "dead"
  }
}

/** Fails unless the handle is in one of the permitted states, as libnbd does: ENOTCONN while created, else EINVAL. */
export const checkState = (
  h: HandleImpl,
  operation: string,
  permitted: ReadonlyArray<Permitted>
): Effect.Effect<HandleState.HandleState, NbdError.InvalidStateError> =>
  Effect.suspend(() => {
    const denied = stateDenied(h, operation, permitted)
    return denied === undefined ? Effect.succeed(h.stateNow) : Effect.fail(denied)
  })

/** libnbd's refusal of a call outside its states (ENOTCONN while created, else EINVAL), or undefined. */
export const stateDenied = (
  h: HandleImpl,
  operation: string,
  permitted: ReadonlyArray<Permitted>
): NbdError.InvalidStateError | undefined => {
  const s = h.stateNow
  if (permitted.includes(classOf(s))) return undefined
  // A reconnect keeps the handle connected as far as calls go: commands wait for it (internal/commands.ts).
  if (h.recovery !== undefined && permitted.includes("connected")) return undefined
  return new NbdError.InvalidStateError({
    errno: s._tag === "Created" ? "ENOTCONN" : "EINVAL",
    operation,
    message: `invalid state: ${HandleState.shortName(s)}: the handle must be ${permitted
      .map((p) => permittedText[p])
      .join(", or ")}`
  })
}

/** The export info, or EINVAL when the server has not sent it yet. */
export const requireInfo = (h: HandleImpl, operation: string): Effect.Effect<ExportInfo, NbdError.InvalidStateError> =>
  h.info !== undefined
    ? Effect.succeed(h.info)
    : Effect.fail(
        new NbdError.InvalidStateError({
          errno: "EINVAL",
          operation,
          message: "server has not returned export flags, you need to connect to the server first"
        })
      )

/** Validates the advertised block sizes as libnbd does; invalid ones are ignored, not an error. */
export const acceptBlockSizes = (sizes: BlockSizes): BlockSizes | undefined => {
  const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0
  const { maximum, minimum, preferred } = sizes
  if (!isPow2(minimum) || minimum > 65536) return undefined
  if (!isPow2(preferred) || preferred < 512 || preferred < minimum) return undefined
  if (maximum < preferred || (maximum % minimum !== 0 && maximum !== 0xffffffff)) return undefined
  return sizes
}

/** libnbd's payload maximum: the advertised maximum clamped to [1 MiB, 64 MiB], else 32 MiB. */
export const payloadMaximum = (info: ExportInfo | undefined): number => {
  const max = info?.blockSizes?.maximum
  if (max === undefined) return Protocol.Limits.DEFAULT_PAYLOAD_MAX
  return Math.min(Protocol.Limits.MAX_REQUEST_SIZE, Math.max(1024 * 1024, max))
}

/** Fixes up the flags of an export as libnbd does when it learns them. */
export const normaliseFlags = (h: HandleImpl, flags: number): number => {
  let f = flags
  if (!h.structuredReplies) f &= ~Protocol.TFlag.SEND_DF
  if (!h.extendedHeaders) f &= ~Protocol.TFlag.BLOCK_STATUS_PAYLOAD
  if ((f & Protocol.TFlag.SEND_WRITE_ZEROES) === 0) f &= ~Protocol.TFlag.SEND_FAST_ZERO
  return f
}
