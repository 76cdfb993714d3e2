import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument } from "../api/arguments.js"
import { utf8 } from "../wire/bytes.js"
import type { Settings } from "./handle.js"
import * as TlsPriority from "../../TlsPriority.js"

/** One setting's rule: the setter that owns it and the check its value must pass (libnbd's parameter checks). */
export interface Rule {
  readonly operation: string
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

const duration =
  (param: string): Rule["check"] =>
  (operation, value) =>
    Option.match(Duration.decodeUnknown(value), {
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
  exportName: { operation: "nbd_set_export_name", check: checkName },
  handleName: { operation: "nbd_set_handle_name", check: string("handle_name") },
  tls: { operation: "nbd_set_tls", check: tls },
  tlsCertificates: { operation: "nbd_set_tls_certificates", check: string("dir") },
  tlsVerifyPeer: { operation: "nbd_set_tls_verify_peer", check: boolean("verify") },
  tlsUsername: { operation: "nbd_set_tls_username", check: string("username") },
  tlsHostname: { operation: "nbd_set_tls_hostname", check: string("hostname") },
  tlsPskFile: { operation: "nbd_set_tls_psk_file", check: string("filename") },
  tlsPriority: { operation: "nbd_set_tls_priority", check: priority },
  requestStructuredReplies: { operation: "nbd_set_request_structured_replies", check: boolean("request") },
  requestExtendedHeaders: { operation: "nbd_set_request_extended_headers", check: boolean("request") },
  requestMetaContext: { operation: "nbd_set_request_meta_context", check: boolean("request") },
  metaContexts: { operation: "nbd_add_meta_context", check: names },
  fullInfo: { operation: "nbd_set_full_info", check: boolean("request") },
  requestBlockSize: { operation: "nbd_set_request_block_size", check: boolean("request") },
  handshakeFlags: { operation: "nbd_set_handshake_flags", check: flags(Protocol.HANDSHAKE_FLAG_MASK) },
  strictMode: { operation: "nbd_set_strict_mode", check: flags(Protocol.Strict.MASK) },
  optMode: { operation: "nbd_set_opt_mode", check: boolean("enable") },
  preadInitialize: { operation: "nbd_set_pread_initialize", check: boolean("request") },
  debug: { operation: "nbd_set_debug", check: boolean("debug") },
  closeGrace: { operation: "nbd_create", check: duration("close_grace") },
  metrics: { operation: "nbd_create", check: boolean("metrics") },
  reconnect: { operation: "nbd_create", check: schedule("reconnect") },
  openTimeout: { operation: "nbd_create", check: duration("open_timeout") }
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
    const error = rules[key].check(rules[key].operation, value)
    if (error === undefined) continue
    const fields = { errno: error.errno, operation, message: `${key}: ${error.message}` }
    return error._tag === "UnsupportedError"
      ? new NbdError.UnsupportedError(fields)
      : new NbdError.InvalidArgumentError(fields)
  }
  return undefined
}
