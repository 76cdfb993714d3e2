/**
 * TLS pre-shared key files, as GnuTLS's `psktool` writes them and nbdkit, qemu-nbd and libnbd read them: one
 * `username:hexkey` line per identity. Pure: text in, keys out; the client's TLS and the test server read
 * their files through this one parser, so they agree on every line.
 *
 * The rules are GnuTLS's (`gnutls_psk_set_server_credentials_file`):
 *
 * - the username runs to the first `:`, the key (hexadecimal, at least one byte) is the rest of the line;
 * - a username that holds a `:` is written hex-encoded after a `#` (`psktool -u a:b` writes `#613a62:...`);
 * - when a username appears twice, the first line wins.
 *
 * Also: a line may end in CRLF or trailing blanks, blank lines are skipped, and so is a `#` line that does
 * not start with a hex-encoded username and a `:` (a comment; GnuTLS never matches such a line either).
 *
 * @since 0.2.0
 */
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import * as Option from "effect/Option"

/**
 * One identity and its key.
 * @since 0.2.0
 * @category models
 */
export interface Key {
  readonly username: string
  readonly key: Uint8Array
  /** The line of the file it came from, counting from 1. */
  readonly line: number
}

/**
 * A line that is no `username:hexkey` entry.
 * @since 0.2.0
 * @category errors
 */
export class ParseError extends Data.TaggedError("TlsPskParseError")<{
  /** The line, counting from 1. */
  readonly line: number
  readonly message: string
}> {}

const HEX = /^(?:[0-9a-fA-F]{2})+$/

const fromHex = (hex: string): Uint8Array => {
  const out = new Uint8Array(hex.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16)
  return out
}

const toHex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")

const decoder = new TextDecoder()
const encoder = new TextEncoder()

/**
 * Parses a keys file's text into its entries, in file order (duplicates kept; `find` takes the first).
 * @since 0.2.0
 * @category parsing
 */
export const parse = (text: string): Result.Result<ReadonlyArray<Key>, ParseError> => {
  const keys: Array<Key> = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/[\r \t]+$/, "")
    const number = i + 1
    if (line === "") continue
    const colon = line.indexOf(":")
    const field = colon < 0 ? line : line.slice(0, colon)
    const hexName = field.startsWith("#") ? field.slice(1) : undefined
    if (hexName !== undefined && (colon < 0 || !HEX.test(hexName))) continue
    if (colon < 0) return Result.fail(new ParseError({ line: number, message: "expected username:hexkey" }))
    const username = hexName === undefined ? field : decoder.decode(fromHex(hexName))
    if (username === "") return Result.fail(new ParseError({ line: number, message: "the username is empty" }))
    const hex = line.slice(colon + 1)
    if (!HEX.test(hex))
      return Result.fail(new ParseError({ line: number, message: `the key of ${username} is not hexadecimal` }))
    keys.push({ username, key: fromHex(hex), line: number })
  }
  return Result.succeed(keys)
}

/**
 * The key of `username`: the first entry for it, as GnuTLS and libnbd look it up.
 * @since 0.2.0
 * @category lookup
 */
export const find = (keys: ReadonlyArray<Key>, username: string): Option.Option<Key> =>
  Option.fromNullishOr(keys.find((k) => k.username === username))

/**
 * One line of a keys file for `username`, as `psktool` writes it: the name hex-encoded after `#` when it
 * holds a `:` (or a line break, or starts with `#`), the key in lower-case hexadecimal. No line break.
 * @since 0.2.0
 * @category formatting
 */
export const formatLine = (username: string, key: Uint8Array): string =>
  `${/[:\r\n]/.test(username) || username.startsWith("#") ? `#${toHex(encoder.encode(username))}` : username}:${toHex(key)}`
