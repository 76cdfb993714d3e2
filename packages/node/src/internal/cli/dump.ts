/**
 * `effect-nbd dump`: a hex dump of an export in nbddump's layout, squashing repeated lines with `*`.
 *
 * @since 0.1.0
 */
import { Nbd } from "@effect-nbd/core"
import * as Effect from "effect/Effect"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Option from "effect/Option"
import * as Common from "./common.js"

const CHUNK = 1 << 20
const hex = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))
const ascii = Array.from({ length: 256 }, (_, i) => (i >= 0x20 && i < 0x7f ? String.fromCharCode(i) : "."))

const sameLine = (buffer: Uint8Array, at: number, last: Uint8Array): boolean => {
  for (let j = 0; j < 16; j++) if (buffer[at + j] !== last[j]) return false
  return true
}

/**
 * Formats one line: "0000000010: 32 33 ... 39  61 ... 59 |23456789abcdefXY|", padded when short.
 * @since 0.1.0
 * @category formatting
 */
export const formatLine = (offset: bigint, bytes: Uint8Array): string => {
  let hexPart = ""
  let asciiPart = ""
  for (let j = 0; j < 16; j++) {
    const b = bytes[j]
    hexPart += b === undefined ? "   " : `${hex[b]} `
    if (j === 7) hexPart += " "
    asciiPart += b === undefined ? " " : ascii[b]
  }
  return `${offset.toString(16).padStart(10, "0")}: ${hexPart}|${asciiPart}|\n`
}

/** Whether block status says the whole range reads as zeroes (false when unsure). */
const allZero = (h: Nbd.Handle, offset: bigint, count: number) =>
  Effect.map(Nbd.blockStatus(h, count, offset), (entries) => {
    const extents = entries.find((e) => e.context === "base:allocation")?.extents ?? []
    let covered = 0n
    for (const e of extents) {
      if ((e.flags & 2) === 0) return false
      covered += e.length
    }
    return covered >= BigInt(count)
  })

/**
 * The `dump` subcommand.
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "dump",
  {
    length: Flag.String("length").pipe(Flag.withAlias("n"), Flag.withMetavar("N"), Flag.optional),
    uri: Common.optionalUri
  },
  (o) =>
    Effect.scoped(
      Effect.gen(function* () {
        const limit = Option.isSome(o.length) ? BigInt(yield* Common.parseSize("--length", o.length.value)) : undefined
        const uri = yield* Common.uriOrEmbedded(o.uri)
        const h = yield* Common.connect(uri, { metaContexts: ["base:allocation"] })
        const sparse = yield* Effect.orElseSucceed(Nbd.canMetaContext(h, "base:allocation"), () => false)
        const size = yield* Nbd.getSize(h)
        const end = limit !== undefined && limit < size ? limit : size
        const buffer = new Uint8Array(CHUNK)
        const last = new Uint8Array(16)
        let printedSplat = false
        for (let offset = 0n; offset < end;) {
          const n = Number(end - offset < BigInt(CHUNK) ? end - offset : BigInt(CHUNK))
          const view = buffer.subarray(0, n)
          const zero = sparse && (yield* allZero(h, offset, n))
          const containsLastLine = offset + BigInt(n) + 16n >= size
          // A known-zero chunk after a squashed zero line prints nothing more.
          if (zero && printedSplat && !containsLastLine && last.every((b) => b === 0)) {
            offset += BigInt(n)
            continue
          }
          if (zero) view.fill(0)
          else yield* Nbd.pread(h, n, offset, { buffer: view })
          let out = ""
          for (let i = 0; i < n; i += 16) {
            const at = offset + BigInt(i)
            const line = view.subarray(i, Math.min(i + 16, n))
            const padded = line.length === 16 ? line : Uint8Array.from({ length: 16 }, (_, j) => line[j] ?? 0)
            if (at > 0n && at + 16n < size && sameLine(padded, 0, last)) {
              if (!printedSplat) out += "*\n"
              printedSplat = true
              continue
            }
            printedSplat = false
            last.set(padded)
            out += formatLine(at, line)
          }
          yield* Common.writeStdout(out)
          offset += BigInt(n)
        }
      })
    )
).pipe(
  Command.withDescription(`Hexdump the content of a disk over NBD, like nbddump:

  -n N dumps at most N bytes (suffixes K, M, G). [ CMD ARGS ... ] starts a
  server by socket activation; -- CMD ARGS ... runs one on stdin/stdout.
  Without a URI: an embedded test server (1M).`),
  Command.withShortDescription("hex dump an export (like nbddump)"),
  Command.withExamples([
    { command: "effect-nbd dump nbd://localhost" },
    { command: "effect-nbd dump -n 4K -- nbdkit -s memory 1G" },
    { command: "effect-nbd dump -- [ qemu-nbd -r -f qcow2 file.qcow2 ]" }
  ])
)
