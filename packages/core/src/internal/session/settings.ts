import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument } from "../engine/arguments.js"
import { utf8 } from "../wire/bytes.js"
import { calls, type Spec } from "../api/calls.js"
import type { Settings } from "./handle.js"
import * as TlsPriority from "../../TlsPriority.js"

/** One setting's rule: the setter that owns it and the check its value must pass (libnbd's parameter checks). */
export interface Rule {
  /** The setter's record; `make` alone takes the settings no setter owns. */
  readonly call: Spec
  readonly check: (
    operation: string,
    value: unknown
  ) => NbdError.InvalidArgumentError | NbdError.UnsupportedError | undefined
}

const badValue = (operation: string, param: string, value: unknown): NbdError.InvalidArgumentError =>
  invalidArgument(operation, `${param}: invalid value for parameter: ${String(value)}`)

const boolean =
  (param: string): Rule["check"] =>
  (operation, value) =>
    typeof value === "boolean" ? undefined : badValue(operation, param, value)

const string =
  (param: string): Rule["check"] =>
  (operation, value) =>
    typeof value === "string" ? undefined : badValue(operation, param, value)

/** A protocol string: at most 4096 bytes of UTF-8, else ENAMETOOLONG. */
export const checkName = (operation: string, value: unknown): NbdError.InvalidArgumentError | undefined => {
  if (typeof value !== "string") return badValue(operation, "name", value)
  return utf8(value).length > Protocol.Limits.MAX_STRING
    ? invalidArgument(operation, "name is too long (more than 4096 bytes)", "ENAMETOOLONG")
    : undefined
}

const flags =
  (mask: number): Rule["check"] =>
  (operation, value) =>
    typeof value === "number" && Number.isInteger(value) && (value & ~mask) === 0 && value >= 0
      ? undefined
      : invalidArgument(
          operation,
          `flags: invalid value for flag: ${typeof value === "number" ? `0x${value.toString(16)}` : String(value)}`
        )

/** A duration as the settings take it: a `Duration`, millis, nanos as a bigint, a tuple or "5 seconds". */
const decodeDuration = (value: unknown): Option.Option<Duration.Duration> =>
  value === null ||
  (typeof value === "object" && !Duration.isDuration(value) && !Array.isArray(value)) ||
  !["number", "bigint", "string", "object"].includes(typeof value)
    ? Option.none()
    : Duration.fromInput(value as Duration.Input)

const duration =
  (param: string): Rule["check"] =>
  (operation, value) =>
    Option.match(decodeDuration(value), {
      onNone: () => badValue(operation, param, value),
      onSome: (d) => (Duration.isFinite(d) ? undefined : badValue(operation, param, value))
    })

const schedule =
  (param: string): Rule["check"] =>
  (operation, value) =>
    Schedule.isSchedule(value) ? undefined : badValue(operation, param, value)

const tls: Rule["check"] = (operation, value) =>
  value === "disable" || value === "allow" || value === "require" ? undefined : badValue(operation, "tls", value)

/** A GnuTLS priority string must map onto the transport's TLS options (TlsPriority.ts). */
const priority: Rule["check"] = (operation, value) => {
  if (typeof value !== "string") return badValue(operation, "priority", value)
  const parsed = TlsPriority.parse(value)
  switch (parsed._tag) {
    case "Options":
      return undefined
    case "Invalid":
      return invalidArgument(operation, `priority: ${parsed.message}`)
    case "Unsupported":
      return new NbdError.UnsupportedError({ errno: "ENOTSUP", operation, message: `priority: ${parsed.message}` })
  }
}

const names: Rule["check"] = (operation, value) => {
  if (!Array.isArray(value)) return badValue(operation, "names", value)
  for (const name of value) {
    const error = checkName(operation, name)
    if (error !== undefined) return error
  }
  return undefined
}

/** Every setting a handle can be made with, and the rule its setter applies. */
export const rules: { readonly [K in keyof Settings]: Rule } = {
  exportName: { call: calls.setExportName, check: checkName },
  handleName: { call: calls.setHandleName, check: string("handle_name") },
  tls: { call: calls.setTls, check: tls },
  tlsCertificates: { call: calls.setTlsCertificates, check: string("dir") },
  tlsVerifyPeer: { call: calls.setTlsVerifyPeer, check: boolean("verify") },
  tlsUsername: { call: calls.setTlsUsername, check: string("username") },
  tlsHostname: { call: calls.setTlsHostname, check: string("hostname") },
  tlsPskFile: { call: calls.setTlsPskFile, check: string("filename") },
  tlsPriority: { call: calls.setTlsPriority, check: priority },
  requestStructuredReplies: { call: calls.setRequestStructuredReplies, check: boolean("request") },
  requestExtendedHeaders: { call: calls.setRequestExtendedHeaders, check: boolean("request") },
  requestMetaContext: { call: calls.setRequestMetaContext, check: boolean("request") },
  metaContexts: { call: calls.addMetaContext, check: names },
  fullInfo: { call: calls.setFullInfo, check: boolean("request") },
  requestBlockSize: { call: calls.setRequestBlockSize, check: boolean("request") },
  handshakeFlags: { call: calls.setHandshakeFlags, check: flags(Protocol.HANDSHAKE_FLAG_MASK) },
  strictMode: { call: calls.setStrictMode, check: flags(Protocol.Strict.MASK) },
  optMode: { call: calls.setOptMode, check: boolean("enable") },
  preadInitialize: { call: calls.setPreadInitialize, check: boolean("request") },
  debug: { call: calls.setDebug, check: boolean("debug") },
  closeGrace: { call: calls.make, check: duration("close_grace") },
  metrics: { call: calls.make, check: boolean("metrics") },
  reconnect: { call: calls.make, check: schedule("reconnect") },
  openTimeout: { call: calls.make, check: duration("open_timeout") }
}

const isKey = (key: string): key is keyof Settings => Object.prototype.hasOwnProperty.call(rules, key)

/**
 * Checks the settings `make` was given by the setters' own rules; the error names the setting. Absent
 * (undefined) values keep their defaults.
 */
export const validate = (
  operation: string,
  given: object
): NbdError.InvalidArgumentError | NbdError.UnsupportedError | undefined => {
  for (const [key, value] of Object.entries(given)) {
    if (value === undefined) continue
    if (!isKey(key)) return invalidArgument(operation, `${key}: unknown setting`)
    const error = rules[key].check(rules[key].call.name, value)
    if (error === undefined) continue
    const fields = { errno: error.errno, operation, message: `${key}: ${error.message}` }
    return error._tag === "UnsupportedError"
      ? new NbdError.UnsupportedError(fields)
      : new NbdError.InvalidArgumentError(fields)
  }
  return undefined
}
