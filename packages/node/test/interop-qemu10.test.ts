/**
 * Interop with qemu 10 (extended headers) and qemu 7.2 (without): our client against qemu-nbd 10, and the
 * qemu-io, qemu-img and qemu-nbd clients of both against the shipped effect-nbd-server. scripts/install-peers.sh
 * brings both qemus (util/peers.ts finds them).
 */
import { Nbd, Protocol } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fs from "node:fs"
import * as Path from "node:path"
import {
  nbdkit,
  type Qemu,
  qemu10,
  qemuNbdOf,
  qemuSystem,
  qemuVersion,
  run,
  startServer,
  tempDir
} from "./util/peers.js"

vi.setConfig({ testTimeout: 60_000 })

const KiB = 1024
const MiB = 1024 * 1024
const SIZE = 16 * MiB

const root = Path.resolve(__dirname, "../../..")
/** The shipped effect-nbd-server bin (the bundle `pnpm build` writes). */
const serverBin = Path.join(
  root,
  "packages/test-server",
  (
    JSON.parse(Fs.readFileSync(Path.join(root, "packages/test-server/package.json"), "utf8")) as {
      bin: Record<string, string>
    }
  ).bin["effect-nbd-server"]!
)

/** effect-nbd-server serving a 16 MiB memory export on a Unix socket. */
const ourServer = startServer(process.execPath, [serverBin, "-U", "{socket}", "-P", "{pidfile}", "memory", "16M"])

const filled = (length: number, byte: number) => new Uint8Array(length).fill(byte)
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b))

/** The flags of the first extent of `context` in a block-status reply starting at `offset`. */
const firstFlags = (entries: ReadonlyArray<Nbd.BlockStatusEntry>, context: string): number => {
  const entry = entries.find((e) => e.context === context)
  if (entry === undefined) throw new Error(`no ${context} in the reply`)
  return entry.extents[0]!.flags
}

describe("our client against qemu-nbd 10 (extended headers)", () => {
  it.live("read, write, zero, trim, flush and block status for three contexts, with extended headers", () =>
    Effect.gen(function* () {
      expect(yield* qemuVersion(qemu10)).toMatch(/version 1\d\./)
      const dir = yield* tempDir
      const image = Path.join(dir, "disk.qcow2")
      yield* run(qemu10.img, ["create", "-q", "-f", "qcow2", image, "16M"])
      // The bitmap is added before the write, so the 64 KiB at 1 MiB are dirty in it and allocated.
      yield* run(qemu10.img, ["bitmap", "--add", image, "b0"])
      yield* run(qemu10.io, ["-c", "write -P 0xab 1M 64k", image])
      const server = yield* qemuNbdOf(qemu10, image, ["--format=qcow2", "--discard=unmap", "-A", "-B", "b0"])
      const contexts = ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0"]
      const h = yield* Nbd.make()
      for (const c of contexts) yield* Nbd.addMetaContext(h, c)
      yield* NodeNbd.connectUri(h, server.uri)
      expect(yield* Nbd.getExtendedHeadersNegotiated(h)).toBe(true)
      expect(yield* Nbd.getSize(h)).toBe(BigInt(SIZE))
      for (const c of contexts) expect(yield* Nbd.canMetaContext(h, c), c).toBe(true)

      expect(same(yield* Nbd.pread(h, 64 * KiB, MiB), filled(64 * KiB, 0xab))).toBe(true)
      yield* Nbd.pwrite(h, filled(128 * KiB, 0x77), 4 * MiB)
      expect(same(yield* Nbd.pread(h, 128 * KiB, 4 * MiB), filled(128 * KiB, 0x77))).toBe(true)
      yield* Nbd.zero(h, 64 * KiB, 4 * MiB)
      const afterZero = yield* Nbd.pread(h, 128 * KiB, 4 * MiB)
      expect(same(afterZero.subarray(0, 64 * KiB), filled(64 * KiB, 0))).toBe(true)
      expect(same(afterZero.subarray(64 * KiB), filled(64 * KiB, 0x77))).toBe(true)
      yield* Nbd.pwrite(h, filled(64 * KiB, 0x99), 8 * MiB)
      yield* Nbd.trim(h, 64 * KiB, 8 * MiB)
      yield* Nbd.flush(h)

      // Data written before serving: allocated, depth 1 (this image), dirty.
      const written = yield* Nbd.blockStatus(h, 64 * KiB, MiB)
      expect(written.map((e) => e.context).sort()).toEqual([...contexts].sort())
      expect(firstFlags(written, "base:allocation")).toBe(0)
      expect(firstFlags(written, "qemu:allocation-depth")).toBe(1)
      expect(firstFlags(written, "qemu:dirty-bitmap:b0")).toBe(1)
      // Never written: a hole that reads as zeroes, unallocated (depth 0), clean.
      const untouched = yield* Nbd.blockStatus(h, 64 * KiB, 12 * MiB)
      expect(firstFlags(untouched, "base:allocation")).toBe(Protocol.STATE_HOLE | Protocol.STATE_ZERO)
      expect(firstFlags(untouched, "qemu:allocation-depth")).toBe(0)
      expect(firstFlags(untouched, "qemu:dirty-bitmap:b0")).toBe(0)
      // Written over NBD: the enabled bitmap records it; the data cluster at 4M+64k is allocated.
      const overNbd = yield* Nbd.blockStatus(h, 64 * KiB, 4 * MiB + 64 * KiB)
      expect(firstFlags(overNbd, "base:allocation")).toBe(0)
      expect(firstFlags(overNbd, "qemu:dirty-bitmap:b0")).toBe(1)
      // Zeroed and trimmed ranges read as zero.
      expect(firstFlags(yield* Nbd.blockStatus(h, 64 * KiB, 4 * MiB), "base:allocation") & Protocol.STATE_ZERO).toBe(
        Protocol.STATE_ZERO
      )
      expect(same(yield* Nbd.pread(h, 64 * KiB, 8 * MiB), filled(64 * KiB, 0))).toBe(true)
      yield* Nbd.shutdown(h)
      // What the client wrote is in the image (read beside the server: shared, read-only).
      const check = yield* run(qemu10.io, [
        ...["-r", "-U", "-f", "qcow2"],
        ...["-c", "read -P 0x77 4160k 64k", "-c", "read -P 0 4M 64k", "-c", "read -P 0xab 1M 64k"],
        image
      ])
      expect(check).not.toMatch(/failed|Pattern verification/)
    })
  )
})

/** The writes of every qemu-io session below, then pattern checks of what they wrote. */
const WRITES = ["write -P 0x5a 0 64k", "write -P 0x6b 1M 4k", "write -P 0x7c 3M 192k", "write -z 5M 64k"]
const CHECKS = ["read -P 0x5a 0 64k", "read -P 0x6b 1M 4k", "read -P 0x7c 3M 192k", "read -P 0 5M 64k"]

/** qemu-io's commands, each with -c, on an NBD URI (raw format). */
const qemuIo = (qemu: Qemu, uri: string, commands: ReadonlyArray<string>) =>
  run(qemu.io, ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), uri])

/** `qemu-img map --output=json` of an NBD URI: per 64 KiB block, whether any of it holds data. */
const dataBlocks = (qemu: Qemu, uri: string) =>
  Effect.map(run(qemu.img, ["map", "--output=json", "-f", "raw", uri]), (out) => {
    const extents = JSON.parse(out) as Array<{ start: number; length: number; data: boolean }>
    const blocks = new Array<boolean>(SIZE / (64 * KiB)).fill(false)
    for (const e of extents.filter((x) => x.data))
      for (let b = Math.floor(e.start / (64 * KiB)); b * 64 * KiB < e.start + e.length; b++) blocks[b] = true
    return blocks
  })

/** A qemu client session against effect-nbd-server; `extended` says whether this qemu negotiates them. */
const qemuClientSession = (qemu: Qemu, extended: boolean) =>
  Effect.gen(function* () {
    const server = yield* ourServer

    // qemu-nbd -L lists the export and its context; qemu 10 reports 64-bit transactions (extended headers).
    const list = yield* run(qemu.nbd, ["-L", "-k", server.socket])
    expect(list).toContain("export: ''")
    expect(list).toContain(`size:  ${SIZE}`)
    expect(list).toContain("base:allocation")
    if (extended) expect(list).toContain("transaction size: 64-bit")
    else expect(list).not.toContain("64-bit")

    // qemu-io: writes (qemu 10 sends them without NBD_CMD_FLAG_PAYLOAD_LEN), then pattern checks, on one
    // connection and again on a fresh one.
    const io = yield* qemuIo(qemu, server.uri, [...WRITES, ...CHECKS, "flush"])
    expect(io).not.toMatch(/failed|Pattern verification/)
    expect(io.match(/^read \d+\/\d+ bytes/gm)).toHaveLength(CHECKS.length)
    const again = yield* qemuIo(qemu, server.uri, ["read -P 0 64k 960k", ...CHECKS])
    expect(again).not.toMatch(/failed|Pattern verification/)

    // qemu-img map after those writes agrees with nbdkit's after the same writes, block by block.
    const reference = yield* nbdkit(["memory", String(SIZE)])
    yield* qemuIo(qemu, reference.uri, WRITES)
    const ours = yield* dataBlocks(qemu, server.uri)
    expect(ours).toEqual(yield* dataBlocks(qemu, reference.uri))
    expect(ours.filter(Boolean).length).toBeGreaterThanOrEqual(5) // 0, 1M, 3M..3M+192k

    // qemu-img convert into the export and out of it, checked with qemu-img compare.
    const dir = yield* tempDir
    const local = Path.join(dir, "local.raw")
    const back = Path.join(dir, "back.qcow2")
    yield* run(qemu.img, ["create", "-q", "-f", "raw", local, String(SIZE)])
    yield* run(qemu.io, ["-f", "raw", "-c", "write -P 0x3c 0 1M", "-c", "write -P 0xc3 7M 320k", local])
    yield* run(qemu.img, ["convert", "-n", "-f", "raw", "-O", "raw", local, server.uri])
    yield* run(qemu.img, ["compare", "-f", "raw", "-F", "raw", local, server.uri])
    yield* run(qemu.img, ["convert", "-f", "raw", "-O", "qcow2", server.uri, back])
    yield* run(qemu.img, ["compare", "-f", "raw", "-F", "qcow2", local, back])
    // compare does tell different images apart (`run` dies on its exit status 1).
    const differ = yield* Effect.exit(run(qemu.img, ["compare", "-f", "raw", "-F", "raw", local, reference.uri]))
    expect(Exit.isFailure(differ)).toBe(true)
  })

describe("qemu's clients against effect-nbd-server", () => {
  it.live("qemu 10 (extended headers): qemu-io, qemu-img convert, compare and map, qemu-nbd -L", () =>
    Effect.gen(function* () {
      expect(yield* qemuVersion(qemu10)).toMatch(/version 1\d\./)
      yield* qemuClientSession(qemu10, true)
    })
  )

  it.live("qemu 7.2 (no extended headers): the same session", () =>
    Effect.gen(function* () {
      expect(yield* qemuVersion(qemuSystem)).toMatch(/version 7\.2\./)
      yield* qemuClientSession(qemuSystem, false)
    })
  )
})
