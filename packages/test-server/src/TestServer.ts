/**
 * An in-process NBD server for tests, CI and demos: `TestServer.layer(config)` serves exports on a Unix
 * socket or a TCP port for the layer's scope, and tells its `uri` and `address`.
 *
 * @example
 * ```ts
 * import { TestServer } from "@effect-nbd/test-server"
 * import * as Effect from "effect/Effect"
 *
 * const program = Effect.gen(function* () {
 *   const server = yield* TestServer.TestServer
 *   console.log(server.uri) // nbd+unix:///?socket=/tmp/effect-nbd-XXXX/nbd.sock
 * }).pipe(Effect.provide(TestServer.layer({ exports: [{ name: "", size: 1n << 30n }] })))
 * ```
 *
 * @since 0.1.0
 */
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Protocol from "@effect-nbd/core/Protocol"
import * as TlsPriority from "@effect-nbd/core/TlsPriority"
import * as TlsPsk from "@effect-nbd/core/TlsPsk"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaTransformation from "effect/SchemaTransformation"
import type * as Scope from "effect/Scope"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Tls from "node:tls"
import * as Backend from "./Backend.js"
import * as Filter from "./Filter.js"
import * as Connection from "./internal/connection.js"
import * as Faults from "./internal/faults.js"
import * as Malformed from "./internal/malformed.js"

// -----------------------------------------------------------------------------
// configuration
// -----------------------------------------------------------------------------

const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8")

/**
 * An export size: a bigint or a non-negative integer number, at most 2^63 - 1. Decodes to a bigint.
 *
 * @since 0.1.0
 * @category config
 */
export const Size = Schema.Union([Schema.BigInt, Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0))])
  .pipe(
    Schema.decodeTo(
      Schema.BigInt,
      SchemaTransformation.transform<bigint, bigint | number>({
        decode: (n: bigint | number) => BigInt(n),
        encode: (n: bigint) => n
      })
    )
  )
  .check(Schema.makeFilter((n) => (n >= 0n && n <= Backend.MAX_SIZE) || "an export size lies between 0 and 2^63 - 1"))

/**
 * A backend: the name of a built-in one (sized by the export) or a ready `Backend`.
 *
 * @since 0.1.0
 * @category config
 */
export const BackendSpec = Schema.Union([
  Schema.Literals(["memory", "null", "pattern"]),
  Schema.declare(Backend.isBackend, { identifier: "Backend" })
])

/**
 * The command kinds a fault can target, by libnbd's names.
 *
 * @since 0.1.0
 * @category config
 */
export const CommandKind = Schema.Literals(["read", "write", "flush", "trim", "cache", "write-zeroes", "block-status"])

/**
 * A command kind, by libnbd's name.
 *
 * @since 0.1.0
 * @category config
 */
export type CommandKind = typeof CommandKind.Type

/**
 * An NBD error name a fault can answer with: a name of `Protocol.NbdErrno`, in its order.
 *
 * @since 0.1.0
 * @category config
 */
export const FaultErrno = Schema.Literals(Protocol.errnoNames)

/**
 * A malformed reply the server can send on demand, to test a client's handling of each protocol violation.
 * Unless noted, the request is not carried out and the malformed reply replaces its reply. Kinds that need
 * reply chunks have no effect (the request is served as usual) on a connection without structured replies.
 *
 * - `wrong-cookie`: the request is served, but its reply goes to a cookie no request used (the bits of the
 *   client's cookie inverted). Any mode.
 * - `wrong-offset`: the request is served, but its reply chunks echo an offset that is not the request's.
 *   Extended headers only.
 * - `data-outside-request` (read): an OFFSET_DATA chunk with DONE for the range right past the request.
 * - `chunk-too-long`: a chunk header announcing 64 MiB + 9 bytes, more than a client accepts (OFFSET_DATA for
 *   a read, BLOCK_STATUS for block status, ERROR otherwise), and nothing after it.
 * - `no-done`: the reply without DONE on its last chunk, and nothing after it: a read's data, block status's
 *   extents, a NONE chunk for the other commands. The command stays unanswered.
 * - `two-dones`: the request is served, then a second final reply to the same cookie (a NONE chunk with DONE,
 *   or a second simple reply without structured replies). Any mode.
 * - `read-data-for-non-read` (not read): an OFFSET_DATA chunk with DONE, 16 bytes at the request's offset.
 * - `hole-over-data` (read): an OFFSET_DATA chunk over the whole request, then an OFFSET_HOLE chunk with DONE
 *   over the same range.
 * - `error-zero`: an ERROR chunk with DONE whose error value is 0.
 * - `huge-extent` (block status): one descriptor of 2^32 - 1 bytes (with extended headers 2^32 plus the
 *   request's length, which a client that keeps 32 bits would read as exactly the request).
 * - `extents-past-request` (block status): a descriptor for the request's length, then one of 4096 bytes.
 * - `too-many-extents` (block status): one descriptor more than the range has bytes (1-byte descriptors),
 *   adding up to the request's length plus one; past 64 KiB, 65537 descriptors, the last running past the
 *   range.
 * - `zero-length-extent` (block status): a first descriptor of length 0, then one for the request.
 * - `non-advancing-extent` (block status): half the request, then a descriptor of length 0, then the rest.
 * - `unaligned-extents` (block status): the request as 1 byte of data, a hole reading as zeroes, and 1 byte of
 *   data, lengths that no minimum block size above 1 divides. Not malformed since the protocol of 2025-06
 *   (extent lengths SHOULD, no longer MUST, be multiples of the minimum block size): a client must accept it.
 *
 * @since 0.1.0
 * @category config
 */
export const MalformedReply = Schema.Literals(Malformed.kinds)

/**
 * A malformed reply kind.
 *
 * @since 0.1.0
 * @category config
 */
export type MalformedReply = typeof MalformedReply.Type

const malformedFits = (f: {
  readonly command: CommandKind
  readonly malformed?: MalformedReply | undefined
}): true | string => {
  if (f.malformed === undefined) return true
  const only = Malformed.onlyFor(f.malformed)
  if (only === "read" && f.command !== "read") return `malformed "${f.malformed}" applies to read only`
  if (only === "not-read" && f.command === "read")
    return `malformed "${f.malformed}" applies to commands other than read`
  if (only === "block-status" && f.command !== "block-status")
    return `malformed "${f.malformed}" applies to block-status only`
  return true
}

/**
 * A fault on a kind of command, like nbdkit's error and delay filters: an error reply (`errno`, an NBD errno
 * name), a delay before the command is served (`delayMs`), a malformed reply (`malformed`, see
 * `MalformedReply`), or a delay with one of the others. It fires on a share `rate` of the commands, in
 * [0, 1] (default 1: every one), or, with `nth`, on the nth command of its kind on each connection only
 * (1-based; `rate` and `nth` do not go together). A delayed command does not hold up the others: requests
 * are served concurrently.
 *
 * Errors and delays are filters over the export's backend, outside its own `filters`: a delay fault is a
 * `Filter.delay`, an error fault a `Filter.error`, all delays outermost (`nth` is the filters' `nth`; a fault
 * with both a delay and an errno draws its rate once for both). So when several faults fire on one command,
 * their delays add up and the first errno wins. A malformed kind is the connection's (the first that fires
 * wins, its delays adding to the others); a malformed reply that replaces the reply goes instead of an error
 * reply, the request passing the filters (their delays) without reaching the storage. With `wrong-cookie`,
 * `wrong-offset` and `two-dones` the request is served through the filters, so an injected error is the
 * reply that goes astray. Faults act after the server's own checks (bounds, flags): a request the server
 * refuses is refused at once, and is not counted for `nth`.
 *
 * @example
 * ```ts
 * const faults = [
 *   { command: "read", errno: "EIO", rate: 0.5 },
 *   { command: "write", delayMs: 200 },
 *   { command: "flush", malformed: "wrong-cookie", nth: 2 }
 * ]
 * ```
 *
 * @since 0.1.0
 * @category config
 */
export const Fault = Schema.Struct({
  command: CommandKind,
  errno: Schema.optional(FaultErrno),
  delayMs: Schema.optional(
    Schema.Number.check(Schema.isInt(), Schema.isBetween({ minimum: 0, maximum: 2_147_483_647 }))
  ),
  malformed: Schema.optional(MalformedReply),
  rate: Schema.optional(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 }))),
  nth: Schema.optional(Schema.Number.check(Schema.isInt(), Schema.isGreaterThan(0)))
}).check(
  Schema.makeFilter((f) => {
    if (f.errno === undefined && f.delayMs === undefined && f.malformed === undefined)
      return "a fault has an errno, a delayMs or a malformed reply"
    if (f.errno !== undefined && f.malformed !== undefined) return "a fault has an errno or a malformed reply, not both"
    if (f.rate !== undefined && f.nth !== undefined) return "a fault fires by rate or on the nth command, not both"
    return malformedFits(f)
  })
)

/**
 * One export: its name ("" is the default export), size, optional description, read-only flag, backend
 * (default "memory", sparse; or a ready `Backend`, e.g. from `FileBackend.make`, whose size is the default)
 * faults (added to the server-wide `faults`) and filters over the backend (`Filter`, the first outermost).
 * With `anyName`, the export also answers to every name no other export has, as nbdkit serves its plugin
 * (`nbdkit memory 1G` serves `nbd+unix:///foo`); NBD_INFO_NAME then tells the name the client asked for,
 * and NBD_OPT_LIST still lists the export by its own name.
 *
 * @since 0.1.0
 * @category config
 */
export const ExportConfig = Schema.Struct({
  name: Schema.String.check(Schema.makeFilter((s) => utf8Length(s) <= 4096 || "an export name has at most 4096 bytes")),
  /** Required for a named backend; for a ready `Backend`, default its own size. */
  size: Schema.optional(Size),
  description: Schema.optional(
    Schema.String.check(Schema.makeFilter((s) => utf8Length(s) <= 4096 || "a description has at most 4096 bytes"))
  ),
  readOnly: Schema.optional(Schema.Boolean),
  anyName: Schema.optional(Schema.Boolean),
  backend: Schema.optional(BackendSpec),
  faults: Schema.optional(Schema.Array(Fault)),
  /** Filters over the backend, the first outermost (`Filter.apply`). */
  filters: Schema.optional(
    Schema.Array(Schema.declare((u): u is Filter.Filter => typeof u === "function", { identifier: "Filter" }))
  )
}).check(
  Schema.makeFilter(
    (e) =>
      e.size !== undefined ||
      Backend.isBackend(e.backend) ||
      `export "${e.name}" needs a size (only a ready Backend brings its own)`
  )
)

/**
 * Where the server listens: a Unix socket (default: a fresh temporary path), a TCP port on a host
 * (default port 0, ephemeral; default host 127.0.0.1), or sockets another process already made listen and
 * passed down by descriptor (`Fd`), as systemd socket activation passes them (fd 3 onwards).
 *
 * @since 0.1.0
 * @category config
 */
export const Listen = Schema.Union([
  Schema.TaggedStruct("Unix", { path: Schema.optional(Schema.NonEmptyString) }),
  Schema.TaggedStruct("Tcp", {
    port: Schema.optional(Schema.Number.check(Schema.isInt(), Schema.isBetween({ minimum: 0, maximum: 65535 }))),
    host: Schema.optional(Schema.String)
  }),
  Schema.TaggedStruct("Fd", {
    fds: Schema.NonEmptyArray(Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0)))
  })
])

const isPowerOfTwo = (n: number): boolean => n > 0 && Number.isInteger(Math.log2(n))

/**
 * Block size constraints to advertise (default minimum 1, preferred 4096, maximum 32 MiB). The maximum is
 * also the largest read or write payload the server accepts.
 *
 * @since 0.1.0
 * @category config
 */
export const BlockSize = Schema.Struct({
  minimum: Schema.Number.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 65536 })),
  preferred: Schema.Number.check(Schema.isInt(), Schema.isGreaterThan(0)),
  maximum: Schema.Number.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 0xffffffff }))
}).check(
  Schema.makeFilter((b) => {
    if (!isPowerOfTwo(b.minimum)) return "the minimum block size is a power of two"
    if (!isPowerOfTwo(b.preferred) || b.preferred < Math.max(b.minimum, 512))
      return "the preferred block size is a power of two, at least the minimum and 512"
    if (b.maximum < b.preferred) return "the maximum payload is at least the preferred block size"
    return true
  })
)

/**
 * The default bound on the reply bytes one connection may owe: 64 MiB.
 *
 * @since 0.1.0
 * @category config
 */
export const DEFAULT_MAX_REPLY_BYTES = 64 * 1024 * 1024

/**
 * The default bound on the requests one connection may have in service at once: 128.
 *
 * @since 0.1.0
 * @category config
 */
export const DEFAULT_MAX_REQUESTS = 128

/**
 * Backpressure, as nbdkit has it: the server stops reading a connection's requests while what it owes that
 * connection exceeds a bound, and resumes once half of it is paid, so a client that sends requests and never
 * reads the replies cannot exhaust the server. Other connections are served meanwhile.
 *
 * - `maxReplyBytes` (default 64 MiB): reply bytes owed, counting what requests in service will send (a
 *   read's data, a block-status reply's descriptors, and a write's payload, which it holds), replies queued
 *   for the socket and replies written but not yet flushed to the kernel. Every reply also counts 512 bytes
 *   for what holding it costs, so a flood of small replies is bounded too.
 * - `maxRequests` (default 128): requests in service at once (handed to the backend, not yet answered).
 *
 * One request is always taken when nothing is owed, so a bound smaller than one request still makes
 * progress. What one connection holds is at most about `maxReplyBytes` plus one request (a 32 MiB read at
 * the default block size).
 *
 * @since 0.1.0
 * @category config
 */
export const Backpressure = Schema.Struct({
  maxReplyBytes: Schema.optional(Schema.Number.check(Schema.isInt(), Schema.isGreaterThan(0))),
  maxRequests: Schema.optional(Schema.Number.check(Schema.isInt(), Schema.isGreaterThan(0)))
})

/**
 * A fault as a caller writes it.
 *
 * @since 0.1.0
 * @category config
 */
export type FaultConfig = typeof Fault.Encoded

/**
 * The server's configuration. Every field is optional.
 *
 * - `listen`: `{ _tag: "Unix", path? }` (default, a fresh temporary path), `{ _tag: "Tcp", port?, host? }`
 *   or `{ _tag: "Fd", fds }`: descriptors of sockets already listening, as socket activation passes them.
 * - `exports`: default one export "" of 1 GiB on the memory backend.
 * - `protocol`: "fixed-newstyle" (default), "newstyle" (non-fixed: only NBD_OPT_EXPORT_NAME) or "oldstyle"
 *   (the first export's greeting, then transmission).
 * - `structuredReplies`, `extendedHeaders`, `noZeroes`: offered to clients (default true).
 * - `blockSize`: advertised constraints (default 1 / 4096 / 32 MiB).
 * - `outOfOrder`: answer requests out of order and split reads into reordered chunks (default false).
 * - `faults`: errors and delays to inject by command kind, on every export (each export may add its own).
 * - `backpressure`: how much one connection may owe before the server stops reading it (`Backpressure`).
 * - `disconnectAfter`: drop each connection, as if the server died, on receiving its nth transmission
 *   request (NBD_CMD_DISC aside): that request and any still in service get no reply, replies not yet
 *   written are lost. Default: never.
 * - `tls`: "off" (default), "on" (plaintext and TLS clients) or "require" (every option but NBD_OPT_STARTTLS
 *   and NBD_OPT_ABORT fails with NBD_REP_ERR_TLS_REQD until TLS is active), as nbdkit's `--tls`. Needs the
 *   fixed newstyle protocol and credentials:
 * - `tlsCertificates`: a directory with `server-cert.pem`, `server-key.pem` and optionally `ca-cert.pem`
 *   (nbdkit's layout, as `certtool` makes it), or
 * - `tlsPsk`: a pre-shared keys file of `username:hexkey` lines, as `psktool` writes it. When both are given,
 *   the keys are used, as nbdkit does.
 * - `tlsVerifyPeer`: with `tlsCertificates`, a client must present a certificate that `ca-cert.pem` signed,
 *   else the TLS handshake fails (nbdkit's `--tls-verify-peer`). Default false.
 * - `tlsPriority`: a GnuTLS priority string (nbdkit's `--tls-priority`), as far as Node's TLS options can
 *   express it (`TlsPriority.parse` of `@effect-nbd/core` says what maps); one they cannot is refused, naming
 *   the element at fault. Since 0.3.0.
 *
 * @since 0.1.0
 * @category config
 */
export const Config = Schema.Struct({
  listen: Schema.optional(Listen),
  exports: Schema.optional(
    Schema.Array(ExportConfig).check(
      Schema.isMinLength(1),
      Schema.makeFilter(
        (exports) => new Set(exports.map((e) => e.name)).size === exports.length || "export names must be unique"
      )
    )
  ),
  protocol: Schema.optional(Schema.Literals(["fixed-newstyle", "newstyle", "oldstyle"])),
  structuredReplies: Schema.optional(Schema.Boolean),
  extendedHeaders: Schema.optional(Schema.Boolean),
  noZeroes: Schema.optional(Schema.Boolean),
  blockSize: Schema.optional(BlockSize),
  outOfOrder: Schema.optional(Schema.Boolean),
  faults: Schema.optional(Schema.Array(Fault)),
  backpressure: Schema.optional(Backpressure),
  disconnectAfter: Schema.optional(Schema.Number.check(Schema.isInt(), Schema.isGreaterThan(0))),
  tls: Schema.optional(Schema.Literals(["off", "on", "require"])),
  tlsCertificates: Schema.optional(Schema.NonEmptyString),
  tlsPsk: Schema.optional(Schema.NonEmptyString),
  tlsVerifyPeer: Schema.optional(Schema.Boolean),
  tlsPriority: Schema.optional(Schema.NonEmptyString)
}).check(
  Schema.makeFilter((c) => {
    if (c.tlsPriority !== undefined) {
      const priority = TlsPriority.parse(c.tlsPriority)
      if (priority._tag !== "Options") return `tlsPriority: ${priority.message}`
    }
    if (c.tlsVerifyPeer === true && (c.tlsCertificates === undefined || c.tlsPsk !== undefined))
      return "tlsVerifyPeer needs tlsCertificates (X.509, with the CA in ca-cert.pem), not tlsPsk"
    if (c.tls === undefined || c.tls === "off") return true
    if (c.tlsCertificates === undefined && c.tlsPsk === undefined)
      return `tls "${c.tls}" needs tlsCertificates (a directory) or tlsPsk (a keys file)`
    if (c.protocol !== undefined && c.protocol !== "fixed-newstyle")
      return `tls "${c.tls}" needs the fixed-newstyle protocol (NBD_OPT_STARTTLS)`
    return true
  })
)

/**
 * The configuration as a caller writes it.
 *
 * @since 0.1.0
 * @category config
 */
export type Config = typeof Config.Encoded

/**
 * The default export size: 1 GiB.
 *
 * @since 0.1.0
 * @category config
 */
export const DEFAULT_SIZE = 1n << 30n

// -----------------------------------------------------------------------------
// service
// -----------------------------------------------------------------------------

/**
 * Where the server listens.
 *
 * @since 0.1.0
 * @category models
 */
export type Address = Data.TaggedEnum<{
  Unix: { readonly path: string }
  Tcp: { readonly host: string; readonly port: number }
}>

/**
 * Constructors and matchers of `Address`.
 *
 * @since 0.1.0
 * @category models
 */
export const Address = Data.taggedEnum<Address>()

/**
 * An export as the server serves it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Export {
  readonly name: string
  readonly description: string | undefined
  readonly size: bigint
  readonly readOnly: boolean
  /** Whether the export answers to any name no other export has. */
  readonly anyName: boolean
  readonly backend: Backend.Backend
}

/**
 * The server could not start: its configuration is invalid, or it could not listen.
 *
 * @since 0.1.0
 * @category errors
 */
export class TestServerError extends Data.TaggedError("TestServerError")<{
  readonly reason: "Config" | "Listen"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * A running test server.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The NBD URI of the default (first) export. */
  readonly uri: string
  readonly address: Address
  readonly exports: ReadonlyArray<Export>
  /** The NBD URI of an export by name. */
  readonly uriFor: (exportName: string) => string
}

/**
 * The running test server of a scope.
 *
 * @since 0.1.0
 * @category tags
 */
export class TestServer extends Context.Service<TestServer, Service>()("@effect-nbd/test-server/TestServer") {
  /**
   * A layer with a running server for its scope: the module's `layer`.
   *
   * @since 1.0.0
   * @category layers
   */
  static readonly layer = (config: Config = {}): Layer.Layer<TestServer, TestServerError> => layer(config)
}

const encodePath = (s: string): string => encodeURIComponent(s).replace(/%2F/gi, "/")

/**
 * The NBD URI (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/uri.md) of an export at an address:
 * `nbd+unix:///NAME?socket=PATH` or `nbd://HOST:PORT/NAME`.
 *
 * @since 0.1.0
 * @category uri
 */
export const uriOf = (address: Address, exportName: string): string =>
  Address.$match(address, {
    Unix: ({ path }) => `nbd+unix:///${encodePath(exportName)}?socket=${encodePath(path)}`,
    Tcp: ({ host, port }) => `nbd://${host.includes(":") ? `[${host}]` : host}:${port}/${encodePath(exportName)}`
  })

const commandCodes: Record<typeof CommandKind.Type, number> = {
  read: Protocol.Cmd.READ,
  write: Protocol.Cmd.WRITE,
  flush: Protocol.Cmd.FLUSH,
  trim: Protocol.Cmd.TRIM,
  cache: Protocol.Cmd.CACHE,
  "write-zeroes": Protocol.Cmd.WRITE_ZEROES,
  "block-status": Protocol.Cmd.BLOCK_STATUS
}

const makeBackend = (spec: typeof BackendSpec.Type | undefined, size: bigint): Backend.Backend => {
  if (spec === undefined || spec === "memory") return Backend.memory(size)
  if (spec === "null") return Backend.nullBackend(size)
  if (spec === "pattern") return Backend.pattern(size)
  return spec
}

/** A malformed-reply fault, as the connection applies it. */
const resolveMalformed = (f: typeof Fault.Type & { readonly malformed: MalformedReply }): Connection.ResolvedFault => ({
  command: commandCodes[f.command],
  delayMs: f.delayMs ?? 0,
  malformed: f.malformed,
  rate: f.rate ?? 1,
  nth: f.nth ?? 0
})

const isMalformed = (f: typeof Fault.Type): f is typeof Fault.Type & { readonly malformed: MalformedReply } =>
  f.malformed !== undefined

const configError = (message: string, cause?: unknown): TestServerError =>
  new TestServerError({ reason: "Config", message, cause })

const readFile = (file: string, what: string): Effect.Effect<Buffer, TestServerError> =>
  Effect.try({
    try: () => Fs.readFileSync(file),
    catch: (cause) => configError(`cannot read ${what} ${file}: ${String(cause)}`, cause)
  })

/**
 * Reads a PSK file (psktool's `username:hexkey` lines) with the one parser the client uses too (TlsPsk):
 * the first entry of a name wins, as in GnuTLS.
 */
const parsePskFile = (text: string, file: string): Effect.Effect<Map<string, Buffer>, TestServerError> =>
  Result.match(TlsPsk.parse(text), {
    onFailure: (error) => Effect.fail(configError(`${file}:${error.line}: ${error.message}`)),
    onSuccess: (entries) => {
      const keys = new Map<string, Buffer>()
      for (const entry of entries) if (!keys.has(entry.username)) keys.set(entry.username, Buffer.from(entry.key))
      return keys.size === 0 ? Effect.fail(configError(`${file}: no keys`)) : Effect.succeed(keys)
    }
  })

const secureContext = (options: Tls.SecureContextOptions): Effect.Effect<Tls.SecureContext, TestServerError> =>
  Effect.try({
    try: () => Tls.createSecureContext(options),
    catch: (cause) => configError(`invalid TLS credentials: ${String(cause)}`, cause)
  })

const splitPem = (text: string): Array<string> =>
  text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []

/**
 * Whether `authority` signed `peer` and `peer` is within its validity period: the check of a client
 * certificate issued directly by a CA of ca-cert.pem (intermediate certificates are not followed).
 */
const issuedBy = (peer: Crypto.X509Certificate, authority: Crypto.X509Certificate): boolean => {
  const now = Date.now()
  return (
    peer.checkIssued(authority) &&
    peer.verify(authority.publicKey) &&
    Date.parse(peer.validFrom) <= now &&
    now <= Date.parse(peer.validTo)
  )
}

/** The Node TLS options of the configuration's priority string (none without one). */
const priorityOptions = (config: typeof Config.Type): Effect.Effect<TlsPriority.Options, TestServerError> => {
  if (config.tlsPriority === undefined) return Effect.succeed({})
  const priority = TlsPriority.parse(config.tlsPriority)
  return priority._tag === "Options"
    ? Effect.succeed(priority.options)
    : Effect.fail(configError(`tlsPriority: ${priority.message}`))
}

/** Loads the TLS credentials the configuration names. */
const resolveTls = (config: typeof Config.Type): Effect.Effect<Connection.TlsSettings | undefined, TestServerError> =>
  Effect.gen(function* () {
    const mode = config.tls ?? "off"
    if (mode === "off") return undefined
    const priority = yield* priorityOptions(config)
    if (config.tlsPsk !== undefined) {
      const file = config.tlsPsk
      const keys = yield* parsePskFile((yield* readFile(file, "the PSK file")).toString("utf8"), file)
      // TLS 1.3 (OpenSSL turns the PSK callback into an external PSK; libnbd 1.14's gnutls negotiates it)
      // or TLS 1.2 with the PSK cipher suites, which OpenSSL leaves out unless asked for.
      // A priority string's cipher list replaces these: it holds TLS 1.2 PSK suites where the string adds a
      // PSK key exchange (+PSK, +DHE-PSK, +ECDHE-PSK), as GnuTLS wants them added; TLS 1.3's PSK needs none.
      const context = yield* secureContext({ ciphers: "PSK", minVersion: "TLSv1.2", ...priority })
      return {
        mode,
        options: {
          secureContext: context,
          pskCallback: (_socket: Tls.TLSSocket, identity: string) => keys.get(identity) ?? null
        }
      }
    }
    const dir = config.tlsCertificates!
    const cert = yield* readFile(Path.join(dir, "server-cert.pem"), "the server certificate")
    const key = yield* readFile(Path.join(dir, "server-key.pem"), "the server key")
    const caFile = Path.join(dir, "ca-cert.pem")
    const verify = config.tlsVerifyPeer ?? false
    const ca =
      Fs.existsSync(caFile) || verify
        ? yield* readFile(caFile, "the CA certificate (for --tls-verify-peer)")
        : undefined
    const context = yield* secureContext(ca === undefined ? { cert, key, ...priority } : { cert, key, ca, ...priority })
    if (!verify) return { mode, options: { secureContext: context } }
    const authorities = yield* Effect.try({
      try: () => splitPem(ca!.toString("utf8")).map((pem) => new Crypto.X509Certificate(pem)),
      catch: (cause) => configError(`invalid CA certificate ${caFile}: ${String(cause)}`, cause)
    })
    return {
      mode,
      options: { secureContext: context, requestCert: true, rejectUnauthorized: true },
      verifyPeer: (peer) => peer !== undefined && authorities.some((authority) => issuedBy(peer, authority))
    }
  })

const resolve = (config: typeof Config.Type, tls: Connection.TlsSettings | undefined): Connection.Settings => {
  const exports = (config.exports ?? [{ name: "", size: DEFAULT_SIZE }]).map((e): Connection.ResolvedExport => {
    const faults = [...(config.faults ?? []), ...(e.faults ?? [])]
    // Error and delay faults are filters, outside the export's own: they acted before the backend always.
    const storage = makeBackend(e.backend, e.size ?? DEFAULT_SIZE)
    const backend = Filter.apply(
      faults.some(isMalformed) ? Faults.passable(storage) : storage,
      ...Faults.toFilters(faults),
      ...(e.filters ?? [])
    )
    return {
      name: e.name,
      description: e.description,
      size: e.size ?? backend.size,
      readOnly: (e.readOnly ?? false) || backend.readOnly,
      anyName: e.anyName ?? false,
      backend,
      faults: faults.filter(isMalformed).map(resolveMalformed)
    }
  })
  return {
    exports,
    protocol: config.protocol ?? "fixed-newstyle",
    structuredReplies: config.structuredReplies ?? true,
    extendedHeaders: config.extendedHeaders ?? true,
    noZeroes: config.noZeroes ?? true,
    blockSize: config.blockSize ?? { minimum: 1, preferred: 4096, maximum: Protocol.Limits.DEFAULT_PAYLOAD_MAX },
    outOfOrder: config.outOfOrder ?? false,
    tls,
    flow: {
      maxReplyBytes: config.backpressure?.maxReplyBytes ?? DEFAULT_MAX_REPLY_BYTES,
      maxRequests: config.backpressure?.maxRequests ?? DEFAULT_MAX_REQUESTS
    },
    disconnectAfter: config.disconnectAfter ?? 0
  }
}

/** A fresh temporary directory for the socket, removed with the scope. */
const tempSocketPath = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => Path.join(dir, "nbd.sock")))

const decodeConfig = (config: Config) =>
  Schema.decodeUnknownEffect(Config)(config).pipe(
    Effect.mapError((error) => new TestServerError({ reason: "Config", message: error.message, cause: error }))
  )

/**
 * Serves one client on a connected socket, as `nbdkit -s` serves its stdin: validates the configuration
 * (its `listen` is ignored), then serves until the client leaves or the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serveSocket = (config: Config, socket: Net.Socket): Effect.Effect<void, TestServerError, Scope.Scope> =>
  Effect.gen(function* () {
    const decoded = yield* decodeConfig(config)
    const settings = resolve(decoded, yield* resolveTls(decoded))
    yield* Connection.serve(settings, socket)
  })

/**
 * Starts a server for the scope: validates the configuration, listens, and serves every connection until
 * the scope closes (open connections are then dropped).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: Config = {}): Effect.Effect<Service, TestServerError, Scope.Scope> =>
  Effect.gen(function* () {
    const decoded = yield* decodeConfig(config)
    const settings = resolve(decoded, yield* resolveTls(decoded))
    const listen = decoded.listen ?? { _tag: "Unix" as const }
    if (listen._tag === "Fd") return serviceOf(yield* listenFds(listen.fds, settings), settings)
    const host = listen._tag === "Tcp" ? (listen.host ?? "127.0.0.1") : "127.0.0.1"
    const path = listen._tag === "Unix" ? (listen.path ?? (yield* tempSocketPath)) : undefined
    const server = yield* NodeSocketServer.make(
      path !== undefined
        ? { path, allowHalfOpen: true }
        : { port: listen._tag === "Tcp" ? (listen.port ?? 0) : 0, host, allowHalfOpen: true }
    ).pipe(
      Effect.mapError(
        (error) =>
          new TestServerError({ reason: "Listen", message: `cannot listen: ${String(error.cause)}`, cause: error })
      )
    )
    yield* Effect.forkScoped(
      server.run(() =>
        Effect.flatMap(Effect.serviceOption(NodeSocket.NetSocket), (conn) => {
          if (Option.isNone(conn)) return Effect.void
          if (path === undefined) conn.value.setNoDelay(true)
          return Effect.scoped(Connection.serve(settings, conn.value))
        })
      )
    )
    const address: Address =
      server.address._tag === "UnixPathAddress"
        ? Address.Unix({ path: server.address.path })
        : Address.Tcp({ host, port: server.address.port })
    return serviceOf(address, settings)
  })

const serviceOf = (address: Address, settings: Connection.Settings): Service => {
  const exports: ReadonlyArray<Export> = settings.exports
  return {
    uri: uriOf(address, exports[0]!.name),
    address,
    exports,
    uriFor: (exportName: string) => uriOf(address, exportName)
  }
}

/**
 * The path an inherited Unix socket is bound to, from Linux's /proc/net/unix (its inode is the socket's):
 * Node cannot ask the socket itself (no getsockname).
 */
const boundPath = (fd: number): string | undefined => {
  try {
    const inode = String(Fs.fstatSync(fd).ino)
    for (const line of Fs.readFileSync("/proc/net/unix", "utf8").split("\n")) {
      const fields = line.trim().split(/\s+/)
      if (fields[6] === inode && fields[7] !== undefined) return fields[7]
    }
  } catch {
    // Not Linux, or the descriptor is gone: the path stays unknown.
  }
  return undefined
}

/** The address of a server listening on an inherited descriptor. */
const inheritedAddress = (server: Net.Server, fd: number): Address => {
  const address = server.address()
  if (typeof address === "string") return Address.Unix({ path: address })
  if (address !== null) return Address.Tcp({ host: address.address, port: address.port })
  // Node gives no address for a Unix socket it did not bind itself.
  return Address.Unix({ path: boundPath(fd) ?? "" })
}

/**
 * Serves connections on sockets that are already listening (socket activation), until the scope closes.
 * NodeSocketServer is not used: it reads `server.address()`, which is null for an inherited Unix socket, and
 * fails with a TypeError.
 */
const listenFds = (
  fds: ReadonlyArray<number>,
  settings: Connection.Settings
): Effect.Effect<Address, TestServerError, Scope.Scope> =>
  Effect.gen(function* () {
    // Made first, so closed last: the listeners stop accepting before the open connections are dropped.
    const connections = yield* FiberSet.make<void, never>()
    const runConnection = yield* FiberSet.runtime(connections)<never>()
    const addresses = yield* Effect.forEach(fds, (fd) =>
      Effect.map(
        listenFd(fd, (conn) => {
          if (conn.remoteAddress !== undefined) conn.setNoDelay(true)
          runConnection(Effect.scoped(Connection.serve(settings, conn)))
        }),
        (server) => inheritedAddress(server, fd)
      )
    )
    return addresses[0]!
  })

/** Listens on one inherited descriptor for the scope. */
const listenFd = (
  fd: number,
  onConnection: (conn: Net.Socket) => void
): Effect.Effect<Net.Server, TestServerError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<Net.Server, TestServerError>((resume) => {
      const server = Net.createServer({ allowHalfOpen: true }, onConnection)
      let listening = false
      // Kept after listening too: an 'error' without a listener would throw.
      server.on("error", (cause) => {
        if (!listening)
          resume(
            Effect.fail(
              new TestServerError({ reason: "Listen", message: `cannot listen on fd ${fd}: ${String(cause)}`, cause })
            )
          )
      })
      server.listen({ fd }, () => {
        listening = true
        resume(Effect.succeed(server))
      })
    }),
    (server) => Effect.sync(() => server.close())
  )

/**
 * A layer with a running `TestServer` for its scope.
 *
 * @example
 * ```ts
 * import { Nbd } from "@effect-nbd/core"
 * import { NodeNbd } from "@effect-nbd/node"
 * import { TestServer } from "@effect-nbd/test-server"
 * import * as Effect from "effect/Effect"
 *
 * const roundTrip = Effect.gen(function* () {
 *   const server = yield* TestServer.TestServer
 *   const h = yield* Nbd.make()
 *   yield* NodeNbd.connectUri(h, server.uriFor("scratch"))
 *   yield* Nbd.pwrite(h, new Uint8Array(512).fill(1), 0)
 *   return yield* Nbd.pread(h, 512, 0)
 * }).pipe(
 *   Effect.scoped,
 *   Effect.provide(TestServer.layer({ exports: [{ name: "scratch", size: 64 * 1024 * 1024 }] }))
 * )
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: Config = {}): Layer.Layer<TestServer, TestServerError> => {
  // Layers are memoized by value across the `Effect.provide` calls that nest, and a server is state a test
  // owns: one server per build, so each provide of this layer starts its own (as each provide builds with a
  // memo map of its own), while the layer still shares one server within one build, wherever it appears in
  // the graph, and a layer built once for a group of tests (@effect/vitest's `layer`) serves them all.
  const perBuild = new WeakMap<Layer.MemoMap, Layer.Layer<TestServer, TestServerError>>()
  return Layer.fromBuild((memoMap, scope) => {
    let server = perBuild.get(memoMap)
    if (server === undefined) {
      server = Layer.effect(TestServer, make(config))
      perBuild.set(memoMap, server)
    }
    return Layer.buildWithMemoMap(server, memoMap, scope)
  })
}
