import type * as Socket from "effect/socket/Socket"
import type * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Inspectable from "effect/Inspectable"
import { pipeArguments } from "effect/Pipeable"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import type * as Transport from "../../Transport.js"
import type { Connection, Host, Pending, Stats } from "./connection.js"
import type { StateCell } from "./stateCell.js"
import { Completion } from "../engine/completion.js"
import * as TlsPriority from "../../TlsPriority.js"
import { type Agreement, emptyAgreement, type ExportInfo } from "../engine/agreement.js"

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
  /** What the dropped connection agreed: a reconnect must find the same export. */
  readonly agreement: Agreement
  readonly waiting: Array<Pending>
  /**
   * Succeeds once the waiting commands are replayed; fails (operation "reconnect") when the handle gives up.
   * A plain completion: a command submitted meanwhile (`commands.submit`) listens to it without a fiber.
   */
  readonly ready: Completion
  /** Set once the reconnect has begun: later ends (of the connections it tries) are its own to handle. */
  started: boolean
  /** The fiber that reconnects, once started. */
  fiber: Fiber.Fiber<void> | undefined
}

/** The error a command that waited for a reconnect fails with, under its own name, when the reconnect fails. */
export const stranded = (error: NbdError.NbdError, operation: string): NbdError.NbdError =>
  error._tag === "ExportChangedError"
    ? new NbdError.ExportChangedError({ errno: error.errno, operation, message: error.message })
    : new NbdError.ConnectionError({ errno: "ENOTCONN", operation, message: error.message, cause: error.cause })

export type BlockSizes = Protocol.BlockSizes

export type { Agreement, ExportInfo, ProtocolName } from "../engine/agreement.js"

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

let handleCounter = 0

/** What marks a value as a handle. */
export const TypeId: unique symbol = Symbol.for("@effect-nbd/core/Nbd/Handle")

/**
 * The handle itself: a value made by `Nbd.make`, holding everything about one connection to one export. The
 * lifecycle state is held once, in its `StateCell`, and changes only through `setState` and `transition`;
 * the rest is plain.
 */
export class HandleImpl implements Host, Inspectable.Inspectable {
  readonly [TypeId]: typeof TypeId = TypeId
  readonly settings: Settings
  /** Settles when the handshake begun by a connect ends; undefined before any connect. */
  handshakeDone: Deferred.Deferred<void, NbdError.NbdError> | undefined = undefined
  connection: Connection | undefined = undefined
  /** What the transport that connected the handle offers: TLS, its address, its subprocess. */
  transport: Transport.Service | undefined = undefined
  /** What a handle that never connected has agreed to: nothing. */
  private readonly unconnected: Agreement = emptyAgreement()
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
    /** The lifecycle state: every check reads it, every change goes through `setState` or `transition`. */
    readonly state: StateCell,
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

  /**
   * What the server agreed to, held by the handshake of the connection: while a reconnect is under way, what
   * the dropped connection agreed (the export the waiting commands were checked against).
   */
  get agreement(): Agreement {
    return this.recovery?.agreement ?? this.connection?.engine.handshake.agreement ?? this.unconnected
  }

  pipe() {
    // eslint-disable-next-line prefer-rest-params
    return pipeArguments(this, arguments)
  }

  toJSON(): unknown {
    return { _id: "NbdHandle", name: this.settings.handleName, state: HandleState.shortName(this.state.now) }
  }

  toString(): string {
    return Inspectable.toStringUnknown(this.toJSON())
  }

  [Inspectable.NodeInspectSymbol](): unknown {
    return this.toJSON()
  }

  /** The state as callers see it: Ready becomes Processing while a request or reply is half-way through. */
  get currentState(): Effect.Effect<HandleState.HandleState> {
    return Effect.sync(() => {
      const s = this.state.now
      return s._tag === "Ready" && this.connection?.busy() ? HandleState.Processing : s
    })
  }

  /**
   * Keeps the commands of a connection that dropped, for a reconnect to replay, when the handle reconnects:
   * it was connected, it is not ending, and the connection ended cleanly or by a socket error (a protocol
   * error is the server's fault, and is fatal as without reconnect).
   */
  adopt(error: NbdError.NbdError | undefined, waiting: Iterable<Pending>): boolean {
    if (this.reconnect === undefined || this.recovery !== undefined || this.ending) return false
    if (!HandleState.isConnected(this.state.now)) return false
    if (error !== undefined && error._tag !== "ConnectionError") return false
    this.recovery = {
      agreement: this.agreement,
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
    return Effect.sync(() => this.connectionEnding(error))
  }

  /**
   * The state part of `connectionEnded`, at once: Dead with its error, or Closed, unless it already is, or a
   * reconnect (or the open timeout's retries) owns the state. Called as the connection ends, before its
   * commands fail: a fiber waiting on one resumes as soon as it settles, and must find the handle ended.
   */
  connectionEnding(error: NbdError.NbdError | undefined): void {
    if (this.opening || this.recovery !== undefined) return
    this.state.modifyUnsafe((s) => [
      undefined,
      isEnded(s) ? s : error === undefined ? HandleState.Closed : HandleState.Dead(error)
    ])
  }

  /**
   * Moves to `s`, atomically. Once the connection has ended (Dead or Closed) only Dead or Closed may follow:
   * a handshake that finishes after its connection died must not bring the handle back to life.
   */
  setState(s: HandleState.HandleState): Effect.Effect<void> {
    const ending = isEnded(s)
    return this.transition((current) => [undefined, ending || !isEnded(current) ? s : current])
  }

  /** Moves the state by `f`, atomically (one synchronous step), and answers what `f` answered. */
  transition<A>(f: (s: HandleState.HandleState) => readonly [A, HandleState.HandleState]): Effect.Effect<A> {
    return this.state.modify(f)
  }
}

/** Whether the connection has ended for good: Dead or Closed. */
const isEnded = (s: HandleState.HandleState): boolean => HandleState.isDead(s) || HandleState.isClosed(s)

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
    return denied === undefined ? Effect.succeed(h.state.now) : Effect.fail(denied)
  })

/** libnbd's refusal of a call outside its states (ENOTCONN while created, else EINVAL), or undefined. */
export const stateDenied = (
  h: HandleImpl,
  operation: string,
  permitted: ReadonlyArray<Permitted>
): NbdError.InvalidStateError | undefined => {
  const s = h.state.now
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
  h.agreement.info !== undefined
    ? Effect.succeed(h.agreement.info)
    : Effect.fail(
        new NbdError.InvalidStateError({
          errno: "EINVAL",
          operation,
          message: "server has not returned export flags, you need to connect to the server first"
        })
      )
