import * as ClientCodec from "@effect-nbd/core/ClientCodec"
import * as HandleState from "@effect-nbd/core/HandleState"
import * as Nbd from "@effect-nbd/core/Nbd"
import * as NbdClient from "@effect-nbd/core/NbdClient"
import * as NbdCopy from "@effect-nbd/core/NbdCopy"
import * as NbdError from "@effect-nbd/core/NbdError"
import * as NbdMetrics from "@effect-nbd/core/NbdMetrics"
import * as NbdPool from "@effect-nbd/core/NbdPool"
import * as NbdStream from "@effect-nbd/core/NbdStream"
import * as NbdUri from "@effect-nbd/core/NbdUri"
import * as PositionalFile from "@effect-nbd/core/PositionalFile"
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import * as TlsPriority from "@effect-nbd/core/TlsPriority"
import * as TlsPsk from "@effect-nbd/core/TlsPsk"
import * as Transport from "@effect-nbd/core/Transport"
import * as NodeNbd from "@effect-nbd/node/NodeNbd"
import * as NodePositionalFile from "@effect-nbd/node/NodePositionalFile"
import * as Backend from "@effect-nbd/test-server/Backend"
import * as CliHelp from "@effect-nbd/test-server/CliHelp"
import * as FileBackend from "@effect-nbd/test-server/FileBackend"
import * as Filter from "@effect-nbd/test-server/Filter"
import * as TestServer from "@effect-nbd/test-server/TestServer"
import { describe, expect, it } from "@effect/vitest"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"

// The contract every Effect library keeps: an Effect is a description that does nothing until it runs. This
// test enumerates the exports of every public module, and every exported function must have an entry below:
// either it returns no Effect (and says what it returns instead), or it is built before the handle connects,
// run after, and checked. Reads run the same Effect value twice: both results must be fresh objects, and right.

const modules = {
  "core/ClientCodec": ClientCodec,
  "core/HandleState": HandleState,
  "core/Nbd": Nbd,
  "core/NbdClient": NbdClient,
  "core/NbdCopy": NbdCopy,
  "core/NbdError": NbdError,
  "core/NbdMetrics": NbdMetrics,
  "core/NbdPool": NbdPool,
  "core/NbdStream": NbdStream,
  "core/NbdUri": NbdUri,
  "core/PositionalFile": PositionalFile,
  "core/Protocol": Protocol,
  "core/ServerCodec": ServerCodec,
  "core/TlsPriority": TlsPriority,
  "core/TlsPsk": TlsPsk,
  "core/Transport": Transport,
  "node/NodeNbd": NodeNbd,
  "node/NodePositionalFile": NodePositionalFile,
  "test-server/Backend": Backend,
  "test-server/CliHelp": CliHelp,
  "test-server/FileBackend": FileBackend,
  "test-server/Filter": Filter,
  "test-server/TestServer": TestServer
} as const

const EXPORT = "disk"
const SIZE = 1024 * 1024
const config: TestServer.Config = { exports: [{ name: EXPORT, size: SIZE, description: "a disk" }] }

/** What the entries work with: the server, and the handle made for the entry (before any connect). */
interface Ctx {
  readonly server: TestServer.Service
  readonly path: string
  readonly h: Nbd.Handle
  /** The bytes `prepare` wrote at offset 0 after connecting (reads must return them). */
  readonly data: Uint8Array
}

/**
 * How the handle gets from Created to where the effect runs: "ready" and "negotiating" connect with
 * `NodeNbd.connectUri` (option mode for the latter), "closed" connects then shuts down, "created" does not
 * connect (the effect is a connect itself), "command" connects to `nbdkit -s` as a subprocess, "none" makes
 * no handle use (the effect needs none).
 */
type Stage = "ready" | "negotiating" | "closed" | "created" | "command" | "none"

type AnyEffect = Effect.Effect<unknown, unknown, Scope.Scope>

interface EffectEntry {
  readonly kind: "effect"
  readonly stage: Stage
  /** Builds the effect: called before the handle connects. */
  readonly build: (ctx: Ctx) => AnyEffect
  /** Runs after building and before connecting (changes a setting the effect must see). */
  readonly before?: (ctx: Ctx) => AnyEffect
  /** Runs after connecting and before the effect runs. */
  readonly after?: (ctx: Ctx) => AnyEffect
  /** Checks how the effect ended. */
  readonly check: (exit: Exit.Exit<unknown, unknown>, ctx: Ctx) => Effect.Effect<void, unknown, Scope.Scope>
  /** For reads: run the same effect again, and give the parts of a result that must be fresh objects. */
  readonly fresh?: (result: unknown) => Effect.Effect<ReadonlyArray<object>, unknown>
}

interface PureEntry {
  readonly kind: "pure"
  /** What the function returns instead of an Effect. */
  readonly returns: string
}

type Entry = EffectEntry | PureEntry

const pure = (returns: string): PureEntry => ({ kind: "pure", returns })

// ------------------------------------------------------------------------------------------------------------
// Checks
// ------------------------------------------------------------------------------------------------------------

/** The error of a cause that is one failure and nothing else. */
const onlyError = (cause: Cause.Cause<unknown>): unknown => {
  const [reason, ...rest] = cause.reasons
  return reason !== undefined && rest.length === 0 && Cause.isFailReason(reason) ? reason.error : undefined
}

const succeeded = (exit: Exit.Exit<unknown, unknown>): unknown => {
  if (Exit.isFailure(exit)) throw new Error(`expected success, got ${String(exit.cause)}`)
  return exit.value
}

/** Succeeds, and the value passes `f` (which may check the handle too). */
const ok =
  (f: (value: unknown, ctx: Ctx) => void | Effect.Effect<void, unknown, Scope.Scope> = () => {}) =>
  (exit: Exit.Exit<unknown, unknown>, ctx: Ctx): Effect.Effect<void, unknown, Scope.Scope> =>
    Effect.suspend(() => {
      const result = f(succeeded(exit), ctx)
      return Effect.isEffect(result) ? result : Effect.void
    })

const is = (expected: unknown) => ok((value) => expect(value).toEqual(expected))

/** Fails with this errno; `then` checks the handle afterwards (the setting was not changed, ...). */
const fails =
  (errno: string, then: (ctx: Ctx) => Effect.Effect<void, unknown, Scope.Scope> = () => Effect.void) =>
  (exit: Exit.Exit<unknown, unknown>, ctx: Ctx): Effect.Effect<void, unknown, Scope.Scope> =>
    Effect.suspend(() => {
      if (Exit.isSuccess(exit)) throw new Error(`expected a failure with ${errno}, got success`)
      const error = onlyError(exit.cause)
      expect(NbdError.isNbdError(error) ? error.errno : String(exit.cause)).toBe(errno)
      return then(ctx)
    })

const stateIs = (p: (s: HandleState.HandleState) => boolean) => (ctx: Ctx) =>
  Effect.map(Nbd.state(ctx.h), (s) => expect(p(s), s._tag).toBe(true))

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b))

const pattern = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 7 + seed) & 0xff
  return out
}

const awaited = (value: unknown): Effect.Effect<unknown, unknown> => (value as Nbd.Command<unknown>).await

// ------------------------------------------------------------------------------------------------------------
// Entry makers
// ------------------------------------------------------------------------------------------------------------

const onReady = (
  build: (ctx: Ctx) => AnyEffect,
  check: EffectEntry["check"],
  more: Partial<EffectEntry> = {}
): EffectEntry => ({ kind: "effect", stage: "ready", build, check, ...more })

const onNegotiating = (
  build: (ctx: Ctx) => AnyEffect,
  check: EffectEntry["check"],
  more: Partial<EffectEntry> = {}
): EffectEntry => ({ kind: "effect", stage: "negotiating", build, check, ...more })

const onNothing = (build: (ctx: Ctx) => AnyEffect, check: EffectEntry["check"]): EffectEntry => ({
  kind: "effect",
  stage: "none",
  build,
  check
})

/** A connect call: built, the handle still Created, then run; it connects. */
const connects = (build: (ctx: Ctx) => AnyEffect, aio: boolean): EffectEntry => ({
  kind: "effect",
  stage: "created",
  build,
  check: ok((_, ctx) =>
    Effect.gen(function* () {
      if (aio) yield* Nbd.awaitConnected(ctx.h)
      expect(yield* Nbd.getSize(ctx.h)).toBeGreaterThan(0n)
    })
  )
})

/** A setter allowed only while Created: run once connected it fails, and the setting stays as it was. */
const createdOnlySetter = <A>(
  set: (h: Nbd.Handle, value: A) => AnyEffect,
  get: (h: Nbd.Handle) => Effect.Effect<unknown, unknown>,
  value: A
): EffectEntry =>
  onReady(
    (ctx) => set(ctx.h, value),
    fails("EINVAL", (ctx) => Effect.map(get(ctx.h), (v) => expect(v).not.toEqual(value)))
  )

/** A setter allowed at run time: the value is in place afterwards. */
const setter = <A>(
  stage: Stage,
  set: (h: Nbd.Handle, value: A) => AnyEffect,
  get: (h: Nbd.Handle) => Effect.Effect<unknown, unknown>,
  value: A,
  expected: unknown = value
): EffectEntry => ({
  kind: "effect",
  stage,
  build: (ctx) => set(ctx.h, value),
  check: ok((_, ctx) => Effect.map(get(ctx.h), (v) => expect(v).toEqual(expected)))
})

/** A getter built before the value changes: it must answer the value at run time. */
const getter = <A>(
  change: (h: Nbd.Handle) => AnyEffect,
  get: (h: Nbd.Handle) => AnyEffect,
  expected: A,
  when: "before" | "after" = "before"
): EffectEntry => onReady((ctx) => get(ctx.h), is(expected), { [when]: (ctx: Ctx) => change(ctx.h) })

/** An export-info getter: built before connecting, it answers what a getter built now answers. */
const info = (get: (h: Nbd.Handle) => AnyEffect, expected?: unknown): EffectEntry =>
  onReady(
    (ctx) => get(ctx.h),
    ok((value, ctx) =>
      Effect.map(get(ctx.h), (now) => {
        expect(value).toEqual(now)
        if (expected !== undefined) expect(value).toEqual(expected)
      })
    )
  )

/** A command that writes or asks the server something: it succeeds once connected. */
const command = (build: (ctx: Ctx) => AnyEffect, aio: boolean, then?: (ctx: Ctx) => AnyEffect): EffectEntry =>
  onReady(
    build,
    ok((value, ctx) =>
      Effect.gen(function* () {
        if (aio) yield* awaited(value)
        if (then) yield* then(ctx)
      })
    )
  )

/** A read of the data `prepare` wrote: run twice, both results right and each a fresh buffer. */
const read = (build: (ctx: Ctx) => AnyEffect, dataOf: (result: unknown) => Effect.Effect<Uint8Array, unknown>) =>
  onReady(
    build,
    ok((value, ctx) =>
      Effect.map(dataOf(value), (data) => expect(same(data, ctx.data.subarray(0, data.length))).toBe(true))
    ),
    { fresh: (result) => Effect.map(dataOf(result), (data) => [data]) }
  )

/** Block status over the written range: run twice, each run one entry for base:allocation, in fresh lists. */
const status = (build: (ctx: Ctx) => AnyEffect, aio: boolean) => {
  const entriesOf = (result: unknown) =>
    (aio ? awaited(result) : Effect.succeed(result)) as Effect.Effect<ReadonlyArray<Nbd.BlockStatusEntry>, unknown>
  return onReady(
    build,
    ok((value) =>
      Effect.map(entriesOf(value), (entries) => {
        expect(entries.map((e) => e.context)).toEqual(["base:allocation"])
        expect(entries[0]!.extents[0]).toEqual({ length: 4096n, flags: 0 })
      })
    ),
    { fresh: (result) => Effect.map(entriesOf(result), (entries) => [entries, ...entries]) }
  )
}

// ------------------------------------------------------------------------------------------------------------
// The table: every function every public module exports
// ------------------------------------------------------------------------------------------------------------

const META = "base:allocation"

const nbd: Record<keyof typeof Nbd & string, Entry | undefined> = {
  TypeId: undefined,
  Strict: undefined,
  HandshakeFlag: undefined,
  CmdFlag: undefined,
  isHandle: pure("a boolean"),
  make: onNothing(() => Effect.flatMap(Nbd.make({ exportName: "made" }), Nbd.getExportName), is("made")),
  // State
  state: onReady(
    (ctx) => Nbd.state(ctx.h),
    ok((s) => expect(HandleState.isReady(s as HandleState.HandleState)).toBe(true))
  ),
  stateChanges: pure("a Stream of the states"),
  aioIsCreated: onReady((ctx) => Nbd.aioIsCreated(ctx.h), is(false)),
  aioIsConnecting: onReady((ctx) => Nbd.aioIsConnecting(ctx.h), is(false)),
  aioIsNegotiating: onNegotiating((ctx) => Nbd.aioIsNegotiating(ctx.h), is(true)),
  aioIsReady: onReady((ctx) => Nbd.aioIsReady(ctx.h), is(true)),
  aioIsProcessing: onReady((ctx) => Nbd.aioIsProcessing(ctx.h), is(false)),
  aioIsDead: onReady((ctx) => Nbd.aioIsDead(ctx.h), is(false)),
  aioIsClosed: { kind: "effect", stage: "closed", build: (ctx) => Nbd.aioIsClosed(ctx.h), check: is(true) },
  // Connecting
  aioConnectSocket: connects(
    (ctx) => Nbd.aioConnectSocket(ctx.h).pipe(Effect.provide(NodeSocket.layerNet({ path: ctx.path }))),
    true
  ),
  connectSocket: connects(
    (ctx) => Nbd.connectSocket(ctx.h).pipe(Effect.provide(NodeSocket.layerNet({ path: ctx.path }))),
    false
  ),
  awaitConnected: onReady((ctx) => Nbd.awaitConnected(ctx.h), ok()),
  getSubprocessPid: {
    kind: "effect",
    stage: "command",
    build: (ctx) => Nbd.getSubprocessPid(ctx.h),
    check: ok((pid) => expect(pid).toBeGreaterThan(0))
  },
  killSubprocess: { kind: "effect", stage: "command", build: (ctx) => Nbd.killSubprocess(ctx.h), check: ok() },
  getUri: onReady(
    (ctx) => Nbd.getUri(ctx.h),
    ok((uri, ctx) => expect(uri).toBe(ctx.server.uriFor(EXPORT)))
  ),
  // Settings
  setExportName: setter("negotiating", Nbd.setExportName, Nbd.getExportName, "other"),
  getExportName: getter(() => Effect.void, Nbd.getExportName, EXPORT),
  setHandleName: setter("ready", Nbd.setHandleName, Nbd.getHandleName, "renamed"),
  getHandleName: getter((h) => Nbd.setHandleName(h, "named"), Nbd.getHandleName, "named"),
  setOptMode: createdOnlySetter(Nbd.setOptMode, Nbd.getOptMode, true),
  getOptMode: {
    kind: "effect",
    stage: "ready",
    build: (ctx) => Nbd.getOptMode(ctx.h),
    before: (ctx) => Nbd.setOptMode(ctx.h, true),
    check: is(true)
  },
  setTls: createdOnlySetter(Nbd.setTls, Nbd.getTls, "allow" as Nbd.TlsMode),
  getTls: getter((h) => Nbd.setTls(h, "allow"), Nbd.getTls, "allow"),
  setTlsCertificates: createdOnlySetter(Nbd.setTlsCertificates, Nbd.getTlsCertificates, "/no/such/dir"),
  getTlsCertificates: getter((h) => Nbd.setTlsCertificates(h, "/no/such/dir"), Nbd.getTlsCertificates, "/no/such/dir"),
  setTlsVerifyPeer: createdOnlySetter(Nbd.setTlsVerifyPeer, Nbd.getTlsVerifyPeer, false),
  getTlsVerifyPeer: getter((h) => Nbd.setTlsVerifyPeer(h, false), Nbd.getTlsVerifyPeer, false),
  setTlsUsername: createdOnlySetter(Nbd.setTlsUsername, Nbd.getTlsUsername, "alice"),
  getTlsUsername: getter((h) => Nbd.setTlsUsername(h, "alice"), Nbd.getTlsUsername, "alice"),
  setTlsHostname: createdOnlySetter(Nbd.setTlsHostname, Nbd.getTlsHostname, "h.example"),
  getTlsHostname: getter((h) => Nbd.setTlsHostname(h, "h.example"), Nbd.getTlsHostname, "h.example"),
  setTlsPskFile: createdOnlySetter(Nbd.setTlsPskFile, Nbd.getTlsPskFile, "/no/such.psk"),
  getTlsPskFile: getter((h) => Nbd.setTlsPskFile(h, "/no/such.psk"), Nbd.getTlsPskFile, "/no/such.psk"),
  setTlsPriority: createdOnlySetter(Nbd.setTlsPriority, Nbd.getTlsPriority, "NORMAL:-VERS-TLS1.3"),
  getTlsPriority: getter((h) => Nbd.setTlsPriority(h, "SECURE256"), Nbd.getTlsPriority, "SECURE256"),
  setRequestStructuredReplies: createdOnlySetter(
    Nbd.setRequestStructuredReplies,
    Nbd.getRequestStructuredReplies,
    false
  ),
  getRequestStructuredReplies: getter(
    (h) => Nbd.setRequestStructuredReplies(h, false),
    Nbd.getRequestStructuredReplies,
    false
  ),
  setRequestExtendedHeaders: createdOnlySetter(Nbd.setRequestExtendedHeaders, Nbd.getRequestExtendedHeaders, false),
  getRequestExtendedHeaders: getter(
    (h) => Nbd.setRequestExtendedHeaders(h, false),
    Nbd.getRequestExtendedHeaders,
    false
  ),
  setRequestMetaContext: setter("negotiating", Nbd.setRequestMetaContext, Nbd.getRequestMetaContext, false),
  getRequestMetaContext: getter((h) => Nbd.setRequestMetaContext(h, false), Nbd.getRequestMetaContext, false),
  addMetaContext: setter("negotiating", Nbd.addMetaContext, Nbd.getMetaContexts, "qemu:added", [META, "qemu:added"]),
  clearMetaContexts: {
    kind: "effect",
    stage: "negotiating",
    build: (ctx) => Nbd.clearMetaContexts(ctx.h),
    check: ok((_, ctx) => Effect.map(Nbd.getMetaContexts(ctx.h), (v) => expect(v).toEqual([])))
  },
  getMetaContexts: getter((h) => Nbd.addMetaContext(h, "qemu:added"), Nbd.getMetaContexts, [META, "qemu:added"]),
  setFullInfo: setter("negotiating", Nbd.setFullInfo, Nbd.getFullInfo, true),
  getFullInfo: getter((h) => Nbd.setFullInfo(h, true), Nbd.getFullInfo, true),
  setRequestBlockSize: setter("negotiating", Nbd.setRequestBlockSize, Nbd.getRequestBlockSize, false),
  getRequestBlockSize: getter((h) => Nbd.setRequestBlockSize(h, false), Nbd.getRequestBlockSize, false),
  setHandshakeFlags: createdOnlySetter(Nbd.setHandshakeFlags, Nbd.getHandshakeFlags, 0),
  // Offered 1, agreed 1 with a server that offers both.
  getHandshakeFlags: getter(
    (h) => Nbd.setHandshakeFlags(h, Nbd.HandshakeFlag.FIXED_NEWSTYLE),
    Nbd.getHandshakeFlags,
    1
  ),
  setStrictMode: setter("ready", Nbd.setStrictMode, Nbd.getStrictMode, 3),
  getStrictMode: getter((h) => Nbd.setStrictMode(h, 5), Nbd.getStrictMode, 5, "after"),
  setPreadInitialize: setter("ready", Nbd.setPreadInitialize, Nbd.getPreadInitialize, false),
  getPreadInitialize: getter((h) => Nbd.setPreadInitialize(h, false), Nbd.getPreadInitialize, false, "after"),
  setDebug: setter("ready", Nbd.setDebug, Nbd.getDebug, true),
  getDebug: getter((h) => Nbd.setDebug(h, true), Nbd.getDebug, true, "after"),
  // Option mode
  optGo: onNegotiating(
    (ctx) => Nbd.optGo(ctx.h),
    ok((_, ctx) => stateIs(HandleState.isReady)(ctx))
  ),
  optInfo: onNegotiating(
    (ctx) => Nbd.optInfo(ctx.h),
    ok((_, ctx) => Effect.map(Nbd.getSize(ctx.h), (size) => expect(size).toBe(BigInt(SIZE))))
  ),
  optAbort: onNegotiating(
    (ctx) => Nbd.optAbort(ctx.h),
    ok((_, ctx) => stateIs(HandleState.isClosed)(ctx))
  ),
  optList: onNegotiating((ctx) => Nbd.optList(ctx.h), is([{ name: EXPORT, description: "a disk" }])),
  // The queries default to the contexts added when the call runs.
  optListMetaContext: onNegotiating((ctx) => Nbd.optListMetaContext(ctx.h), is([META]), {
    before: (ctx) => Nbd.addMetaContext(ctx.h, "base:")
  }),
  optSetMetaContext: onNegotiating(
    (ctx) => Nbd.optSetMetaContext(ctx.h),
    ok((value, ctx) =>
      Effect.gen(function* () {
        expect(value).toEqual([META])
        expect(yield* Nbd.canMetaContext(ctx.h, META)).toBe(true)
      })
    )
  ),
  optStructuredReply: onNegotiating(
    (ctx) => Nbd.optStructuredReply(ctx.h),
    ok((v) => expect(typeof v).toBe("boolean"))
  ),
  optExtendedHeaders: onNegotiating(
    (ctx) => Nbd.optExtendedHeaders(ctx.h),
    ok((v) => expect(typeof v).toBe("boolean"))
  ),
  // The test server offers no TLS: it refuses, and the connection goes on.
  optStarttls: onNegotiating((ctx) => Nbd.optStarttls(ctx.h), is(false)),
  // Export info
  getSize: info(Nbd.getSize, BigInt(SIZE)),
  getBlockSize: info((h) => Nbd.getBlockSize(h, "preferred"), 4096),
  isReadOnly: info(Nbd.isReadOnly, false),
  canFlush: info(Nbd.canFlush, true),
  canFua: info(Nbd.canFua),
  isRotational: info(Nbd.isRotational),
  canTrim: info(Nbd.canTrim),
  canZero: info(Nbd.canZero, true),
  canFastZero: info(Nbd.canFastZero),
  canDf: info(Nbd.canDf),
  canMultiConn: info(Nbd.canMultiConn),
  canCache: info(Nbd.canCache),
  canBlockStatusPayload: info(Nbd.canBlockStatusPayload, true),
  canMetaContext: info((h) => Nbd.canMetaContext(h, META), true),
  getProtocol: info(Nbd.getProtocol, "newstyle-fixed"),
  getCanonicalExportName: onReady((ctx) => Nbd.getCanonicalExportName(ctx.h), is(EXPORT), {
    before: (ctx) => Nbd.setFullInfo(ctx.h, true)
  }),
  getExportDescription: onReady((ctx) => Nbd.getExportDescription(ctx.h), is("a disk"), {
    before: (ctx) => Nbd.setFullInfo(ctx.h, true)
  }),
  getStructuredRepliesNegotiated: info(Nbd.getStructuredRepliesNegotiated, true),
  getExtendedHeadersNegotiated: info(Nbd.getExtendedHeadersNegotiated, true),
  getTlsNegotiated: info(Nbd.getTlsNegotiated, false),
  stats: onReady(
    (ctx) => Nbd.stats(ctx.h),
    ok((s) => expect((s as Nbd.Stats).bytesSent).toBeGreaterThan(0))
  ),
  // Commands
  aioPread: read(
    (ctx) => Nbd.aioPread(ctx.h, 4096, 0),
    (r) => awaited(r) as Effect.Effect<Uint8Array>
  ),
  pread: read(
    (ctx) => Nbd.pread(ctx.h, 4096, 0),
    (r) => Effect.succeed(r as Uint8Array)
  ),
  aioPreadStructured: read(
    (ctx) => Nbd.aioPreadStructured(ctx.h, 4096, 0),
    (r) => Effect.map(awaited(r), (s) => (s as Nbd.StructuredRead).data)
  ),
  preadStructured: read(
    (ctx) => Nbd.preadStructured(ctx.h, 4096, 0),
    (r) => Effect.succeed((r as Nbd.StructuredRead).data)
  ),
  // PAYLOAD_LEN follows the extended headers negotiated, which are known only once connected.
  aioPwrite: command(
    (ctx) => Nbd.aioPwrite(ctx.h, pattern(512, 9), 8192),
    true,
    (ctx) => Effect.map(Nbd.pread(ctx.h, 512, 8192), (d) => expect(same(d, pattern(512, 9))).toBe(true))
  ),
  pwrite: command(
    (ctx) => Nbd.pwrite(ctx.h, pattern(512, 8), 8192),
    false,
    (ctx) => Effect.map(Nbd.pread(ctx.h, 512, 8192), (d) => expect(same(d, pattern(512, 8))).toBe(true))
  ),
  aioFlush: command((ctx) => Nbd.aioFlush(ctx.h), true),
  flush: command((ctx) => Nbd.flush(ctx.h), false),
  aioTrim: command((ctx) => Nbd.aioTrim(ctx.h, 4096, 65536), true),
  trim: command((ctx) => Nbd.trim(ctx.h, 4096, 65536), false),
  aioCache: command((ctx) => Nbd.aioCache(ctx.h, 4096, 0), true),
  cache: command((ctx) => Nbd.cache(ctx.h, 4096, 0), false),
  aioZero: command(
    (ctx) => Nbd.aioZero(ctx.h, 4096, 0),
    true,
    (ctx) => Effect.map(Nbd.pread(ctx.h, 4096, 0), (d) => expect(d.every((b) => b === 0)).toBe(true))
  ),
  zero: command(
    (ctx) => Nbd.zero(ctx.h, 4096, 0),
    false,
    (ctx) => Effect.map(Nbd.pread(ctx.h, 4096, 0), (d) => expect(d.every((b) => b === 0)).toBe(true))
  ),
  aioBlockStatus: status((ctx) => Nbd.aioBlockStatus(ctx.h, 4096, 0), true),
  blockStatus: status((ctx) => Nbd.blockStatus(ctx.h, 4096, 0), false),
  aioBlockStatusFilter: status((ctx) => Nbd.aioBlockStatusFilter(ctx.h, 4096, 0, [META]), true),
  blockStatusFilter: status((ctx) => Nbd.blockStatusFilter(ctx.h, 4096, 0, [META]), false),
  aioInFlight: onReady((ctx) => Nbd.aioInFlight(ctx.h), is(0)),
  aioDisconnect: onReady(
    (ctx) => Nbd.aioDisconnect(ctx.h),
    ok((_, ctx) =>
      Effect.gen(function* () {
        yield* Nbd.awaitClosed(ctx.h)
        expect(HandleState.isClosed(yield* Nbd.state(ctx.h))).toBe(true)
      })
    )
  ),
  shutdown: onReady(
    (ctx) => Nbd.shutdown(ctx.h),
    ok((_, ctx) => stateIs(HandleState.isClosed)(ctx))
  ),
  awaitClosed: onReady(
    (ctx) => Nbd.awaitClosed(ctx.h),
    ok((_, ctx) => stateIs(HandleState.isClosed)(ctx)),
    {
      after: (ctx) => Nbd.aioDisconnect(ctx.h)
    }
  ),
  // The library
  getPackageName: onReady((ctx) => Nbd.getPackageName(ctx.h), is("effect-nbd")),
  getVersion: onReady(
    (ctx) => Nbd.getVersion(ctx.h),
    ok((v) => expect(v).toMatch(/^\d+\.\d+\.\d+$/))
  ),
  getVersionExtra: onReady((ctx) => Nbd.getVersionExtra(ctx.h), is("")),
  supportsTls: onReady((ctx) => Nbd.supportsTls(ctx.h), is(false)),
  supportsUri: onReady((ctx) => Nbd.supportsUri(ctx.h), is(true)),
  supportsVsock: onReady((ctx) => Nbd.supportsVsock(ctx.h), is(false))
}

const nbdkitCommand = ["nbdkit", "-s", "--exit-with-parent", "memory", "1M"]

const connectedFd = (path: string): Effect.Effect<number> =>
  Effect.callback<number>((resume) => {
    const socket = new Net.Socket()
    socket.pause()
    socket.connect(path, () =>
      resume(Effect.succeed((socket as unknown as { readonly _handle: { readonly fd: number } })._handle.fd))
    )
  })

/** A pool over the entry's handle, made before it connects. */
const poolOf = (ctx: Ctx): NbdPool.Pool => NbdPool.fromHandles([ctx.h])

const nbdPool: Record<keyof typeof NbdPool & string, Entry | undefined> = {
  TypeId: undefined,
  make: onNothing(
    (ctx) =>
      Effect.map(
        NbdPool.make({ connect: (h) => NodeNbd.connectUri(h, ctx.server.uriFor(EXPORT)), connections: 2 }),
        NbdPool.size
      ),
    ok((n) => expect(n).toBeGreaterThanOrEqual(1))
  ),
  fromHandles: pure("a Pool"),
  isPool: pure("a boolean"),
  size: pure("a number"),
  use: info((h) => NbdPool.use(NbdPool.fromHandles([h]), Nbd.getSize), BigInt(SIZE)),
  pread: read(
    (ctx) => NbdPool.pread(poolOf(ctx), 4096, 0),
    (r) => Effect.succeed(r as Uint8Array)
  ),
  pwrite: command(
    (ctx) => NbdPool.pwrite(poolOf(ctx), pattern(512, 5), 8192),
    false,
    (ctx) => Effect.map(Nbd.pread(ctx.h, 512, 8192), (d) => expect(same(d, pattern(512, 5))).toBe(true))
  ),
  zero: command(
    (ctx) => NbdPool.zero(poolOf(ctx), 4096, 0),
    false,
    (ctx) => Effect.map(Nbd.pread(ctx.h, 4096, 0), (d) => expect(d.every((b) => b === 0)).toBe(true))
  ),
  trim: command((ctx) => NbdPool.trim(poolOf(ctx), 4096, 65536), false),
  cache: command((ctx) => NbdPool.cache(poolOf(ctx), 4096, 0), false),
  blockStatus: status((ctx) => NbdPool.blockStatus(poolOf(ctx), 4096, 0), false),
  flush: command((ctx) => NbdPool.flush(poolOf(ctx)), false)
}

const nbdStream: Record<keyof typeof NbdStream & string, Entry> = {
  readStream: pure("a Stream"),
  writeSink: pure("a Sink")
}

const nbdCopy: Record<keyof typeof NbdCopy & string, Entry | undefined> = {
  file: pure("a File source or destination"),
  fromStream: pure("a FromStream source"),
  toSink: pure("a ToSink destination"),
  discard: undefined,
  // The export's size is known only once connected: a copy built before reads the whole export.
  copy: onReady(
    (ctx) => NbdCopy.copy(ctx.h, NbdCopy.discard, { sparse: false }),
    ok((r) => expect((r as NbdCopy.Result).bytes).toBe(BigInt(SIZE)))
  ),
  copyWithProgress: pure("a Stream of the progress")
}

const nodeNbd: Record<keyof typeof NodeNbd & string, Entry> = {
  layer: pure("a Layer"),
  layerConfig: pure("a Layer"),
  layerUnix: pure("a Layer"),
  layerTcp: pure("a Layer"),
  layerFd: pure("a Layer"),
  layerCommand: pure("a Layer"),
  layerSystemdSocketActivation: pure("a Layer"),
  supportsTls: onReady((ctx) => NodeNbd.supportsTls(ctx.h), is(true)),
  getSubprocessPid: {
    kind: "effect",
    stage: "command",
    build: (ctx) => NodeNbd.getSubprocessPid(ctx.h),
    check: ok((pid) => expect(pid).toBeGreaterThan(0))
  },
  killSubprocess: { kind: "effect", stage: "command", build: (ctx) => NodeNbd.killSubprocess(ctx.h), check: ok() },
  aioConnectUnix: connects((ctx) => NodeNbd.aioConnectUnix(ctx.h, ctx.path), true),
  connectUnix: connects((ctx) => NodeNbd.connectUnix(ctx.h, ctx.path), false),
  aioConnectTcp: connects(
    (ctx) => Effect.flatMap(tcpPort(ctx), (port) => NodeNbd.aioConnectTcp(ctx.h, "127.0.0.1", port)),
    true
  ),
  connectTcp: connects(
    (ctx) => Effect.flatMap(tcpPort(ctx), (port) => NodeNbd.connectTcp(ctx.h, "127.0.0.1", port)),
    false
  ),
  aioConnectFd: connects((ctx) => Effect.flatMap(connectedFd(ctx.path), (fd) => NodeNbd.aioConnectFd(ctx.h, fd)), true),
  connectFd: connects((ctx) => Effect.flatMap(connectedFd(ctx.path), (fd) => NodeNbd.connectFd(ctx.h, fd)), false),
  aioConnectCommand: connects((ctx) => NodeNbd.aioConnectCommand(ctx.h, nbdkitCommand), true),
  connectCommand: connects((ctx) => NodeNbd.connectCommand(ctx.h, nbdkitCommand), false),
  aioConnectSystemdSocketActivation: connects(
    (ctx) => NodeNbd.aioConnectSystemdSocketActivation(ctx.h, ["nbdkit", "memory", "1M"]),
    true
  ),
  connectSystemdSocketActivation: connects(
    (ctx) => NodeNbd.connectSystemdSocketActivation(ctx.h, ["nbdkit", "memory", "1M"]),
    false
  ),
  aioConnectUri: connects((ctx) => NodeNbd.aioConnectUri(ctx.h, ctx.server.uriFor(EXPORT)), true),
  connectUri: connects((ctx) => NodeNbd.connectUri(ctx.h, ctx.server.uriFor(EXPORT)), false)
}

/** A TCP test server for the TCP connects; built inside the effect, so building the effect starts nothing. */
const tcpPort = (_ctx: Ctx): Effect.Effect<number, TestServer.TestServerError, Scope.Scope> =>
  Effect.map(TestServer.make({ ...config, listen: { _tag: "Tcp" } }), (s) =>
    s.address._tag === "Tcp" ? s.address.port : 0
  )

const testServer: Record<keyof typeof TestServer & string, Entry | undefined> = {
  Size: pure("a Schema"),
  BackendSpec: pure("a Schema"),
  CommandKind: pure("a Schema"),
  FaultErrno: pure("a Schema"),
  Fault: pure("a Schema"),
  MalformedReply: pure("a Schema"),
  ExportConfig: pure("a Schema"),
  Listen: pure("a Schema"),
  BlockSize: pure("a Schema"),
  Backpressure: pure("a Schema"),
  Config: pure("a Schema"),
  DEFAULT_SIZE: undefined,
  DEFAULT_MAX_REPLY_BYTES: undefined,
  DEFAULT_MAX_REQUESTS: undefined,
  Address: undefined,
  TestServerError: pure("an error class"),
  TestServer: pure("a Context.Service class"),
  uriOf: pure("a string"),
  make: onNothing(
    () => Effect.flatMap(TestServer.make(config), (s) => Effect.succeed(s.uri)),
    ok((uri) => expect(String(uri)).toMatch(/^nbd\+unix:\/\/\//))
  ),
  serveSocket: onNothing(
    // Run, it checks the configuration first: an invalid one fails, and the socket is not touched.
    () => TestServer.serveSocket({ exports: [] }, new Net.Socket()),
    (exit) =>
      Effect.sync(() => {
        expect(Exit.isFailure(exit) ? (onlyError(exit.cause) ?? exit) : exit).toMatchObject({
          _tag: "TestServerError",
          reason: "Config"
        })
      })
  ),
  layer: pure("a Layer")
}

const fileBackend: Record<keyof typeof FileBackend & string, Entry | undefined> = {
  // Opens the file when run (this test file, read-only): the backend has its size.
  make: onNothing(
    () => FileBackend.make(__filename, { readOnly: true }),
    ok((b) => expect((b as Backend.Backend).size).toBe(BigInt(Fs.statSync(__filename).size)))
  )
}

const filter: Record<keyof typeof Filter & string, Entry | undefined> = {
  // Filters and their constructors: a backend's operations are checked for laziness below.
  apply: pure("a Backend"),
  error: pure("a Filter"),
  delay: pure("a Filter"),
  readOnly: pure("a Backend"),
  noZero: pure("a Backend"),
  noTrim: pure("a Backend"),
  noExtents: pure("a Backend"),
  multiConn: pure("a Filter"),
  blockSizePolicy: pure("a Filter"),
  evil: pure("a Filter")
}

const backend: Record<keyof typeof Backend & string, Entry | undefined> = {
  BackendError: pure("an error class"),
  zeroes: pure("a Zeroes value"),
  isZeroes: pure("a boolean"),
  isBackend: pure("a boolean"),
  MAX_SIZE: undefined,
  // Constructors of backends: their operations are checked for laziness below.
  memory: pure("a Backend"),
  nullBackend: pure("a Backend"),
  pattern: pure("a Backend")
}

const cliHelp: Record<keyof typeof CliHelp & string, Entry | undefined> = {
  Sections: pure("a Context.Service class"),
  formatter: undefined,
  describe: pure("a string (a pure formatter of a command-line error)"),
  presenter: pure("a Presenter, whose present is an Effect.sync that prints only when run"),
  version: pure("a GlobalFlag action"),
  layer: pure("a Layer"),
  boolean: pure("a Flag"),
  integer: pure("a Flag"),
  attachShortValues: pure("an argv (a pure rewrite)")
}

const pureAll = (names: ReadonlyArray<string>, returns: string): Record<string, Entry> =>
  Object.fromEntries(names.map((n) => [n, pure(returns)]))

const table: Record<keyof typeof modules, Record<string, Entry | undefined>> = {
  "core/ClientCodec": {
    ...pureAll(
      [
        "encodeClientFlags",
        "encodeOption",
        "encodeInfoRequest",
        "encodeMetaContextRequest",
        "writeRequestHeader",
        "encodeRequest",
        "decodeOptionReply",
        "decodeErrorChunk",
        "decodeBlockStatus",
        "encodeString"
      ],
      "bytes or a decoded message (a pure codec function)"
    ),
    DecodeError: pure("an error class"),
    HandshakeDecoder: pure("a decoder class"),
    ReplyDecoder: pure("a decoder class")
  },
  "core/HandleState": {
    ...pureAll(
      ["isCreated", "isConnecting", "isNegotiating", "isReady", "isProcessing", "isDead", "isClosed", "isConnected"],
      "a boolean (a pure predicate)"
    ),
    Dead: pure("a HandleState"),
    shortName: pure("a string")
  },
  "core/Nbd": nbd,
  "core/NbdClient": {
    NbdClient: pure("a Context.Service class"),
    // Built before the server's URI is used: the handle is made and connected only when it runs.
    make: onNothing(
      (ctx) =>
        Effect.flatMap(
          NbdClient.make((h) => NodeNbd.connectUri(h, ctx.server.uriFor(EXPORT))),
          Nbd.getSize
        ),
      is(BigInt(SIZE))
    ),
    layerFrom: pure("a Layer"),
    layerSocket: pure("a Layer")
  },
  "core/NbdCopy": nbdCopy,
  "core/NbdPool": nbdPool,
  "core/NbdStream": nbdStream,
  // Only metrics: values, not functions (reading one is `Metric.value`).
  "core/NbdMetrics": {},
  "core/NbdError": {
    ...pureAll(
      [
        "InvalidStateError",
        "InvalidArgumentError",
        "UnsupportedError",
        "ProtocolError",
        "OptionError",
        "CommandError",
        "ConnectionError",
        "ExportChangedError"
      ],
      "an error class"
    ),
    isNbdError: pure("a boolean"),
    isErrno: pure("a boolean"),
    errnoOf: pure("an errno name"),
    format: pure("a string")
  },
  "core/NbdUri": {
    ...pureAll(["Tcp", "Unix", "Transport", "ExportName", "Query", "NbdUri", "NbdUriFromString"], "a Schema"),
    format: pure("a string"),
    parseBoolean: pure("a boolean"),
    parse: onNothing(
      () => NbdUri.parse("nbd+unix:///x?socket=/s"),
      ok((u) => expect((u as NbdUri.NbdUri).exportName).toBe("x"))
    )
  },
  "core/Protocol": pureAll(
    ["optionName", "isErrorReply", "commandName", "isErrorChunk", "errnoOfWire", "wireOfErrno"],
    "a name, a number or a boolean (a pure table lookup)"
  ),
  "core/ServerCodec": {
    ...pureAll(
      Object.entries(ServerCodec)
        .filter(([name, v]) => typeof v === "function" && /^[a-z]/.test(name))
        .map(([name]) => name),
      "bytes or a decoded message (a pure codec function)"
    ),
    DecodeError: pure("an error class"),
    Decoder: pure("a decoder class")
  },
  "core/TlsPriority": { parse: pure("a tagged result (a pure mapping)") },
  "core/TlsPsk": {
    ParseError: pure("an error class"),
    parse: pure("a Result of the keys (a pure parser)"),
    find: pure("an Option of a key"),
    formatLine: pure("a string")
  },
  "core/Transport": { Transport: pure("a Context.Service class"), make: pure("a service value") },
  "core/PositionalFile": { PositionalFile: pure("a Context.Service class") },
  "node/NodeNbd": nodeNbd,
  // Only `layer`, a value: its service's calls are callbacks that start I/O when called, no Effect.
  "node/NodePositionalFile": {},
  "test-server/Backend": backend,
  "test-server/CliHelp": cliHelp,
  "test-server/FileBackend": fileBackend,
  "test-server/Filter": filter,
  "test-server/TestServer": testServer
}

// ------------------------------------------------------------------------------------------------------------
// Running an entry
// ------------------------------------------------------------------------------------------------------------

const settingsFor = (stage: Stage): Nbd.Settings =>
  stage === "negotiating" ? { optMode: true, metaContexts: [META] } : { metaContexts: [META] }

const runEntry = (entry: EffectEntry, server: TestServer.Service) =>
  Effect.gen(function* () {
    const path = server.address._tag === "Unix" ? server.address.path : ""
    const h = yield* Nbd.make(settingsFor(entry.stage))
    const ctx: Ctx = { server, path, h, data: pattern(4096, 3) }
    // Built before anything happens to the handle.
    const effect = entry.build(ctx)
    expect(HandleState.isCreated(yield* Nbd.state(h))).toBe(true)
    if (entry.before) yield* entry.before(ctx)
    expect(HandleState.isCreated(yield* Nbd.state(h)), "building or preparing must not connect").toBe(true)
    switch (entry.stage) {
      case "ready":
      case "negotiating":
      case "closed":
        yield* NodeNbd.connectUri(h, server.uriFor(EXPORT))
        if (yield* Nbd.aioIsReady(h)) yield* Nbd.pwrite(h, ctx.data, 0)
        if (entry.stage === "closed") yield* Nbd.shutdown(h)
        break
      case "command":
        yield* NodeNbd.connectCommand(h, nbdkitCommand)
        break
      case "created":
      case "none":
        break
    }
    if (entry.after) yield* entry.after(ctx)
    const first = yield* Effect.exit(effect)
    yield* entry.check(first, ctx)
    if (entry.fresh) {
      const second = yield* Effect.exit(effect)
      yield* entry.check(second, ctx)
      const a = yield* entry.fresh(succeeded(first))
      const b = yield* entry.fresh(succeeded(second))
      expect(a.length).toBe(b.length)
      a.forEach((part, i) => expect(part, "each run gives fresh objects").not.toBe(b[i]))
    }
  })

// ------------------------------------------------------------------------------------------------------------
// The tests
// ------------------------------------------------------------------------------------------------------------

const functionsOf = (mod: object): Array<string> =>
  Object.entries(mod)
    .filter(([, v]) => typeof v === "function")
    .map(([name]) => name)
    .sort()

const root = Path.resolve(__dirname, "../../..")

describe("every exported function that returns an Effect does nothing until it runs", () => {
  it("the modules enumerated are every public module of the three packages", () => {
    const publicModules = ["core", "node", "test-server"].flatMap((pkg) =>
      Fs.readdirSync(Path.join(root, "packages", pkg, "src"))
        .filter((f) => /^[A-Z][A-Za-z]*\.ts$/.test(f))
        .map((f) => `${pkg}/${f.replace(/\.ts$/, "")}`)
    )
    expect(Object.keys(modules).sort()).toEqual(publicModules.sort())
  })

  for (const [name, mod] of Object.entries(modules)) {
    it(`${name}: every exported function has an entry, and every entry an export`, () => {
      const entries = table[name as keyof typeof modules]
      const listed = Object.entries(entries)
        .filter(([, e]) => e !== undefined)
        .map(([n]) => n)
        .sort()
      expect(listed, "add the new export to the table in laziness.test.ts").toEqual(functionsOf(mod))
      // No module exports an Effect value (a service key and a metric are yieldable, but are a key and a
      // reading of a metric's state, not computations of ours).
      const effectValues = Object.entries(mod).filter(
        ([, v]) => Effect.isEffect(v) && !Context.isKey(v) && !Metric.isMetric(v)
      )
      expect(effectValues.map(([n]) => n)).toEqual([])
    })
  }

  for (const [name, entries] of Object.entries(table)) {
    for (const [fn, entry] of Object.entries(entries)) {
      if (entry === undefined || entry.kind !== "effect") continue
      it.live(`${name}.${fn}: built before connecting, right when run after`, () =>
        Effect.gen(function* () {
          const server = yield* TestServer.TestServer
          yield* runEntry(entry, server)
        }).pipe(Effect.provide(TestServer.layer(config)))
      )
    }
  }

  it.live("a backend's operations read the storage when they run", () =>
    Effect.gen(function* () {
      const memory = Backend.memory(SIZE)
      const read = memory.read(0, 4)
      const extents = memory.extents(0, 4096)
      yield* memory.write(0, new Uint8Array([1, 2, 3, 4]), false)
      const chunks = yield* read
      expect(chunks.length).toBe(1)
      expect(Array.from(chunks[0] as Uint8Array)).toEqual([1, 2, 3, 4])
      expect((yield* extents)[0]!.flags).toBe(0)
      const patterned = Backend.pattern(SIZE).read(8, 8)
      expect(yield* patterned).toEqual(yield* Backend.pattern(SIZE).read(8, 8))
      expect(yield* Backend.nullBackend(SIZE).read(0, 4)).toEqual([Backend.zeroes(4)])
    })
  )
})
