/**
 * The client session every transcript records and every replay repeats: connect with base:allocation, read
 * what the handshake told, then read, write, read back, read structured, three reads in flight at once, block
 * status, flush, disconnect, and count the commands still in flight (none may be).
 * Each step's outcome is kept as plain JSON (bigints as strings, data as a digest), so two runs compare with
 * `toEqual` and a recording can store what the live session returned.
 */
import { Nbd, NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Crypto from "node:crypto"

/** What one step gave: its value, or the typed error it failed with. */
export type StepOutcome =
  { readonly step: string; readonly ok: unknown } | { readonly step: string; readonly error: ErrorSummary }

/** An error as the session reports it; `typed` is false for anything that is not one of our NbdErrors. */
export interface ErrorSummary {
  readonly tag: string
  readonly errno: string
  readonly message: string
  readonly typed: boolean
}

export type SessionResult = ReadonlyArray<StepOutcome>

/** The export size every recorded peer serves. */
export const EXPORT_SIZE = 1024 * 1024

const summarise = (error: unknown): ErrorSummary =>
  NbdError.isNbdError(error)
    ? { tag: error._tag, errno: error.errno, message: error.message, typed: true }
    : { tag: "untyped", errno: "", message: String(error), typed: false }

const digest = (data: Uint8Array): string => Crypto.createHash("sha256").update(data).digest("hex").slice(0, 16)

/** Bytes the session writes: a fixed pattern, so the client sends the same bytes every time. */
const pattern = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff)

/**
 * One step, built only when it runs: some of the handle's calls read the handle's state when they are called,
 * not when they run, so an effect made before the connection would act on the state before it.
 */
const step = <A>(
  name: string,
  effect: () => Effect.Effect<A, unknown>,
  render: (a: A) => unknown
): Effect.Effect<StepOutcome> =>
  Effect.match(Effect.suspend(effect), {
    onFailure: (error): StepOutcome => ({ step: name, error: summarise(error) }),
    onSuccess: (a): StepOutcome => ({ step: name, ok: render(a) })
  })

const info = (h: Nbd.Handle) =>
  Effect.all({
    size: Effect.map(Nbd.getSize(h), String),
    protocol: Nbd.getProtocol(h),
    structuredReplies: Nbd.getStructuredRepliesNegotiated(h),
    extendedHeaders: Nbd.getExtendedHeadersNegotiated(h),
    readOnly: Nbd.isReadOnly(h),
    canFlush: Nbd.canFlush(h),
    canFua: Nbd.canFua(h),
    canTrim: Nbd.canTrim(h),
    canZero: Nbd.canZero(h),
    canCache: Nbd.canCache(h),
    canMultiConn: Nbd.canMultiConn(h),
    blockSize: Effect.all([
      Nbd.getBlockSize(h, "minimum"),
      Nbd.getBlockSize(h, "preferred"),
      Nbd.getBlockSize(h, "maximum")
    ]),
    baseAllocation: Nbd.canMetaContext(h, "base:allocation")
  })

const renderEntries = (entries: ReadonlyArray<Nbd.BlockStatusEntry>) =>
  entries.map((e) => ({
    context: e.context,
    offset: String(e.offset),
    extents: e.extents.map((x) => [String(x.length), x.flags])
  }))

/** Three reads in flight at once, so replies can interleave and a dying connection has several to fail. */
const pipelinedReads = (h: Nbd.Handle) =>
  Effect.flatMap(
    Effect.all([Nbd.aioPread(h, 512, 0), Nbd.aioPread(h, 512, 512), Nbd.aioPread(h, 512, 1024)]),
    (commands) => Effect.all(commands.map((c) => c.await))
  )

const none = (): null => null
const same = <A>(a: A): A => a
const digestAll = (all: ReadonlyArray<Uint8Array>) => all.map(digest)
const renderStructured = (r: Nbd.StructuredRead) => ({ data: digest(r.data), chunks: r.chunks })

/** Runs the session against the server at the Unix socket `path`; never fails: each step reports its outcome. */
export const run = (path: string): Effect.Effect<SessionResult, never, Scope.Scope> =>
  Effect.gen(function* () {
    const h = yield* Effect.orDie(Nbd.make())
    yield* Effect.ignore(Nbd.addMetaContext(h, "base:allocation"))
    const steps = [
      step("connect", () => NodeNbd.connectUnix(h, path), none),
      step("info", () => info(h), same),
      step("pread 0+1024", () => Nbd.pread(h, 1024, 0), digest),
      step("pwrite 1024+1024", () => Nbd.pwrite(h, pattern(1024), 1024), none),
      step("pread 0+4096", () => Nbd.pread(h, 4096, 0), digest),
      step("pread-structured 512+2048", () => Nbd.preadStructured(h, 2048, 512), renderStructured),
      step("pipelined reads 3x512", () => pipelinedReads(h), digestAll),
      step("block-status 0+65536", () => Nbd.blockStatus(h, 65536, 0), renderEntries),
      step("flush", () => Nbd.flush(h), none),
      step("shutdown", () => Nbd.shutdown(h), none),
      step("in-flight", () => Nbd.aioInFlight(h), same)
    ]
    return yield* Effect.all(steps, { concurrency: 1 })
  })

/** The session's verdict in a word: "success", or the first error as `Tag/errno`. */
export const outcomeOf = (result: SessionResult): string => {
  for (const s of result) if ("error" in s) return `${s.error.tag}/${s.error.errno || "-"}`
  return "success"
}
