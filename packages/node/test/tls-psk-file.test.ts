/**
 * One PSK-file parser (TlsPsk) for the client and the test server: both read psktool's file the way GnuTLS
 * does, so a name psktool writes hex-encoded (one that holds a colon) works against nbdkit, against our
 * server, and between our server and libnbd's nbdinfo.
 */
import { Nbd, NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { nbdkit, run, tempDir } from "./util/peers.js"

/** A keys file psktool writes for each user, in a fresh directory. */
const keysFor = (users: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const file = Path.join(yield* tempDir, "keys.psk")
    for (const user of users) yield* run("psktool", ["-u", user, "-p", file])
    return file
  })

/** Connects with PSK as `username`, writes and reads back a block over the encrypted connection. */
const roundTrip = (socket: string, pskFile: string, username: string) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make({ tls: "require", tlsPskFile: pskFile, tlsUsername: username })
    yield* NodeNbd.connectUnix(h, socket)
    expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
    const block = new Uint8Array(4096).fill(0x5a)
    yield* Nbd.pwrite(h, block, 8192)
    expect(Buffer.from(yield* Nbd.pread(h, 4096, 8192)).equals(Buffer.from(block))).toBe(true)
  })

const socketOf = (server: TestServer.Service): string =>
  server.address._tag === "Unix" ? server.address.path : "no unix socket"

describe("PSK files as psktool writes them", () => {
  it.live("a name with a colon (#hex in the file) connects to nbdkit, whose GnuTLS reads the same file", () =>
    Effect.gen(function* () {
      const keys = yield* keysFor(["alice", "backup:daily"])
      expect(Fs.readFileSync(keys, "utf8")).toMatch(/^#6261636b75703a6461696c79:/m)
      const peer = yield* nbdkit(["--tls=require", `--tls-psk=${keys}`, "memory", "1M"])
      yield* roundTrip(peer.socket, keys, "backup:daily")
      yield* roundTrip(peer.socket, keys, "alice")
    })
  )

  it.live("the test server reads the same file: our client connects with either name", () =>
    Effect.gen(function* () {
      const keys = yield* keysFor(["alice", "backup:daily"])
      const server = yield* TestServer.make({ tls: "require", tlsPsk: keys })
      yield* roundTrip(socketOf(server), keys, "backup:daily")
      yield* roundTrip(socketOf(server), keys, "alice")
    })
  )

  it.live("libnbd's nbdinfo connects to the test server with a key from a file holding a #hex line", () =>
    Effect.gen(function* () {
      const keys = yield* keysFor(["backup:daily", "alice"])
      const server = yield* TestServer.make({ tls: "require", tlsPsk: keys })
      const uri = `nbds+unix://alice@/?socket=${socketOf(server)}&tls-psk-file=${keys}`
      expect((yield* run("nbdinfo", ["--size", uri])).trim()).toBe(String(TestServer.DEFAULT_SIZE))
    })
  )

  it.live("a malformed line fails the client with EINVAL naming the line, and the server's config too", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const keys = Path.join(dir, "bad.psk")
      Fs.writeFileSync(keys, "alice:00ff\nbob\n")
      const good = yield* keysFor(["alice"])
      const server = yield* TestServer.make({ tls: "require", tlsPsk: good })
      const h = yield* Nbd.make({ tls: "require", tlsPskFile: keys, tlsUsername: "alice" })
      const error = yield* Effect.flip(NodeNbd.connectUnix(h, socketOf(server)))
      expect(NbdError.isNbdError(error) && error.errno).toBe("EINVAL")
      expect(error.message).toBe(`${keys}: line 2: expected username:hexkey`)
      const refused = yield* Effect.flip(TestServer.make({ tls: "require", tlsPsk: keys }))
      expect(refused.message).toBe(`${keys}:2: expected username:hexkey`)
    })
  )
})
