import { HandleState, Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as OwnSocket from "../src/internal/socket.js"
import { nbdkit, startServer, tempDir } from "./util/peers.js"

const MiB = 1024 * 1024

const bytes = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 29 + seed) & 0xff
  return out
}

const server = (config: TestServer.Config) => TestServer.make(config).pipe(Effect.orDie)

/** Writes a pattern and reads it back: the connection carries real traffic. */
const roundTrip = (h: Nbd.Handle, seed: number) =>
  Effect.gen(function* () {
    const data = bytes(65536, seed)
    yield* Nbd.pwrite(h, data, 8192)
    expect(Buffer.from(yield* Nbd.pread(h, 65536, 8192)).equals(data)).toBe(true)
  })

/** Whether a process with this pid exists (a zombie counts: it has not been reaped). */
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** A free TCP port on `host` (the kernel picks it; a server started right after takes it). */
const freePort = (host: string) =>
  Effect.callback<number>((resume) => {
    const s = Net.createServer().listen(0, host, () => {
      const port = (s.address() as Net.AddressInfo).port
      s.close(() => resume(Effect.succeed(port)))
    })
  })

/** nbdkit on TCP, on `host` (an address) and a free port. */
const nbdkitTcp = (host: string, args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const port = yield* freePort(host)
    yield* startServer("nbdkit", ["-f", "-i", host, "-p", String(port), "-P", "{pidfile}", ...args])
    return port
  })

/** A PSK keys file for alice, as psktool writes it. */
const pskFile = Effect.map(tempDir, (dir) => {
  const file = Path.join(dir, "keys.psk")
  Fs.writeFileSync(file, `alice:${"0123456789abcdef".repeat(4)}\n`)
  return file
})

/**
 * A connected pair of Unix stream sockets whose ends read nothing in this process (a socketpair, for
 * handing ends to a child or to connectFd).
 */
const socketPair = Effect.gen(function* () {
  const dir = yield* tempDir
  const path = Path.join(dir, "pair.sock")
  return yield* Effect.callback<{ readonly a: Net.Socket; readonly b: Net.Socket }>((resume) => {
    const srv = Net.createServer({ pauseOnConnect: true })
    srv.listen(path, () => {
      const b = new Net.Socket()
      b.pause()
      srv.once("connection", (a: Net.Socket) => {
        srv.close()
        resume(Effect.succeed({ a, b }))
      })
      b.connect(path)
    })
  })
})

/** The descriptor under a socket that is paused (reads nothing): ownership moves to whoever takes it. */
const fdOf = (s: Net.Socket): number => (s as unknown as { readonly _handle: { readonly fd: number } })._handle.fd

describe("TCP", () => {
  it.live("nbdkit on 127.0.0.1, by address and by host name (localhost)", () =>
    Effect.gen(function* () {
      const port = yield* nbdkitTcp("127.0.0.1", ["memory", "1M"])
      const h1 = yield* Nbd.make()
      yield* NodeNbd.connectTcp(h1, "127.0.0.1", port)
      yield* roundTrip(h1, 1)
      const h2 = yield* Nbd.make()
      yield* NodeNbd.connectTcp(h2, "localhost", String(port))
      expect(yield* Nbd.getSize(h2)).toBe(1048576n)
      expect(yield* Nbd.getUri(h2)).toBe(`nbd://localhost:${port}/`)
    })
  )

  it.live("IPv6 loopback: nbdkit and the test server on ::1", () =>
    Effect.gen(function* () {
      const port = yield* nbdkitTcp("::1", ["memory", "1M"])
      const h1 = yield* Nbd.make()
      yield* NodeNbd.connectTcp(h1, "::1", port)
      yield* roundTrip(h1, 2)
      expect(yield* Nbd.getUri(h1)).toBe(`nbd://[::1]:${port}/`)
      const s = yield* server({ listen: { _tag: "Tcp", host: "::1" }, exports: [{ name: "six", size: MiB }] })
      const h2 = yield* Nbd.make()
      const port2 = s.address._tag === "Tcp" ? s.address.port : 0
      yield* NodeNbd.connectUri(h2, `nbd://[::1]:${port2}/six`)
      yield* roundTrip(h2, 3)
      expect(yield* Nbd.getCanonicalExportName(h2)).toBe("six")
    })
  )

  it.live("the test server over TCP: connectTcp and its URI", () =>
    Effect.gen(function* () {
      const s = yield* server({ listen: { _tag: "Tcp" }, exports: [{ name: "disk", size: MiB }] })
      expect(s.address._tag).toBe("Tcp")
      const port = s.address._tag === "Tcp" ? s.address.port : 0
      const h = yield* Nbd.make()
      yield* Nbd.setExportName(h, "disk")
      yield* NodeNbd.connectTcp(h, "127.0.0.1", port)
      yield* roundTrip(h, 4)
      expect(yield* Nbd.getUri(h)).toBe(`nbd://127.0.0.1:${port}/disk`)
    })
  )

  // /etc/services maps "nbd" to 10809/tcp; Node's net resolves no service names, so the transport does.
  it.live("a service name as the port: 'nbd' is 10809", () =>
    Effect.gen(function* () {
      expect(Fs.readFileSync("/etc/services", "utf8")).toMatch(/^nbd\s+10809\/tcp/m)
      yield* server({ listen: { _tag: "Tcp", host: "127.0.0.1", port: 10809 }, exports: [{ name: "", size: MiB }] })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectTcp(h, "127.0.0.1", "nbd")
      yield* roundTrip(h, 5)
      expect(yield* Nbd.getUri(h)).toBe("nbd://127.0.0.1/")
    })
  )

  it.live("an unknown service name fails at once with EINVAL, leaving the handle new", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectTcp(h, "127.0.0.1", "no-such-service"))
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toContain("no-such-service")
      expect(HandleState.isCreated(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("nothing listening: the connect error's errno (ECONNREFUSED), and the handle is dead", () =>
    Effect.gen(function* () {
      const port = yield* freePort("127.0.0.1")
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectTcp(h, "127.0.0.1", port))
      expect(error.errno).toBe("ECONNREFUSED")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("a host name that does not resolve fails the connection", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectTcp(h, "no-such-host.invalid", 10809))
      expect(error.message).toContain("no-such-host.invalid")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )
})

describe("any Socket layer (Nbd.aioConnectSocket)", () => {
  it.live("@effect/platform-node's NodeSocket.layerNet: plaintext with no Transport, data both ways", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 8 * MiB }] })
      const path = s.address._tag === "Unix" ? s.address.path : ""
      const h = yield* Nbd.make()
      yield* Nbd.aioConnectSocket(h).pipe(Effect.provide(NodeSocket.layerNet({ path })))
      yield* Nbd.awaitConnected(h)
      expect(yield* Nbd.getSize(h)).toBe(BigInt(8 * MiB))
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(false)
      yield* roundTrip(h, 18)
      // Replies bigger than one read, several in flight: the socket's batches reach the decoder whole.
      const big = bytes(4 * MiB, 19)
      yield* Nbd.pwrite(h, big, 2 * MiB)
      const back = yield* Effect.forEach([0, 1, 2, 3], (i) => Nbd.pread(h, MiB, 2 * MiB + i * MiB), {
        concurrency: 4
      })
      expect(Buffer.concat(back).equals(big)).toBe(true)
      // No Transport: no address to give back, and no TLS to require.
      expect((yield* Effect.flip(Nbd.getUri(h))).errno).toBe("EINVAL")
      const secure = yield* Nbd.make()
      yield* Nbd.setTls(secure, "require")
      const error = yield* Effect.flip(
        Nbd.connectSocket(secure).pipe(Effect.provide(Layer.orDie(NodeSocket.layerNet({ path }))))
      )
      expect(error.errno).toBe("ENOTSUP")
    })
  )

  it.live("the Node transport's socket carries the same traffic (reads beyond its reused buffers)", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 8 * MiB }] })
      const path = s.address._tag === "Unix" ? s.address.path : ""
      const h = yield* Nbd.make()
      yield* Nbd.aioConnectSocket(h).pipe(Effect.provide(NodeNbd.layerUnix(path)))
      yield* Nbd.awaitConnected(h)
      const big = bytes(6 * MiB, 20)
      yield* Nbd.pwrite(h, big, 0)
      const back = yield* Effect.forEach([0, 1, 2, 3, 4, 5], (i) => Nbd.pread(h, MiB, i * MiB), { concurrency: 6 })
      expect(Buffer.concat(back).equals(big)).toBe(true)
      expect(yield* Nbd.getUri(h)).toBe(`nbd+unix:///?socket=${path}`)
    })
  )
})

/** A Unix socket server that runs `serve` on each connection; the path, for the scope. */
const rawServer = (serve: (socket: Net.Socket) => void) =>
  Effect.gen(function* () {
    const path = Path.join(yield* tempDir, "raw.sock")
    const sockets = new Set<Net.Socket>()
    yield* Effect.acquireRelease(
      Effect.callback<Net.Server>((resume) => {
        const srv = Net.createServer((socket) => {
          sockets.add(socket)
          socket.on("error", () => {})
          serve(socket)
        })
        srv.listen(path, () => resume(Effect.succeed(srv)))
      }),
      (srv) =>
        Effect.sync(() => {
          for (const socket of sockets) socket.destroy()
          srv.close()
        })
    )
    return path
  })

describe("the Node transport's socket (reused read buffers, pulled)", () => {
  it.live("a consumer that stalls stops the reads (the peer backs up), then gets every byte in order", () =>
    Effect.gen(function* () {
      const total = 48 * MiB
      const data = Crypto.randomBytes(total)
      let peer: Net.Socket | undefined
      const path = yield* rawServer((socket) => {
        peer = socket
        let at = 0
        const more = (): void => {
          while (at < total) {
            const n = Math.min(total - at, 1 + ((at * 7919) % 300_000))
            const room = socket.write(data.subarray(at, at + n))
            at += n
            if (!room) return void socket.once("drain", more)
          }
          socket.end()
        }
        more()
      })
      const { pull } = yield* OwnSocket.make({ path }).reader
      // Nothing pulled for a while: two buffers fill, then the socket stops reading and the peer waits.
      yield* Effect.sleep("300 millis")
      expect(peer).toBeDefined()
      expect(peer!.writableLength).toBeGreaterThan(0)
      const hash = Crypto.createHash("sha256")
      let received = 0
      let pulls = 0
      while (true) {
        const batch = yield* Effect.result(pull)
        if (batch._tag === "Failure") {
          expect(batch.failure.reason._tag).toBe("SocketCloseError")
          break
        }
        // A slow consumer now and then: reads go on meanwhile, into the regions no view still uses.
        if (++pulls % 3 === 0) yield* Effect.sleep("1 millis")
        for (const chunk of batch.success) {
          hash.update(chunk)
          received += chunk.length
        }
      }
      expect(received).toBe(total)
      expect(hash.digest("hex")).toBe(Crypto.createHash("sha256").update(data).digest("hex"))
    })
  )

  it.live("closing the reader's scope fails a pull that waits; a write then waits for the next connection", () =>
    Effect.gen(function* () {
      const path = yield* rawServer(() => {})
      const socket = OwnSocket.make({ path })
      const scope = yield* Scope.make()
      const { pull } = yield* Scope.provide(socket.reader, scope)
      const waiting = yield* Effect.forkChild(pull)
      yield* Effect.sleep("20 millis")
      yield* Scope.close(scope, Exit.void)
      const error = yield* Effect.flip(Fiber.join(waiting))
      expect(error.reason._tag).toBe("SocketCloseError")
      const writer = yield* socket.writer
      // No connection: a write waits for the next one rather than writing into a closed socket.
      const write = yield* Effect.timeoutOption(writer.write(new Uint8Array(4)), "50 millis")
      expect(write._tag).toBe("None")
    })
  )
})

describe("an already-connected socket (connectFd)", () => {
  it.live("nbdkit -s on the other end of a socket pair", () =>
    Effect.gen(function* () {
      const { a, b } = yield* socketPair
      const child = ChildProcess.spawn("nbdkit", ["-s", "--exit-with-parent", "memory", "1M"], {
        stdio: [b, b, "inherit"]
      })
      b.destroy()
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill()))
      const h = yield* Nbd.make()
      yield* NodeNbd.connectFd(h, fdOf(a))
      yield* roundTrip(h, 6)
      expect(yield* Nbd.getSize(h)).toBe(1048576n)
      const error = yield* Effect.flip(Nbd.getUri(h))
      expect(error.errno).toBe("EINVAL")
    })
  )

  it.live("a socket connected to the test server", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 2 * MiB }] })
      const path = s.address._tag === "Unix" ? s.address.path : ""
      const conn = yield* Effect.callback<Net.Socket>((resume) => {
        const c = new Net.Socket()
        c.pause()
        c.connect(path, () => resume(Effect.succeed(c)))
      })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectFd(h, fdOf(conn))
      expect(yield* Nbd.getSize(h)).toBe(BigInt(2 * MiB))
      expect(yield* Nbd.getExtendedHeadersNegotiated(h)).toBe(true)
      yield* roundTrip(h, 7)
    })
  )

  it.live("a descriptor that is not open fails with EBADF, a file with ENOTSOCK", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      expect((yield* Effect.flip(NodeNbd.connectFd(h, -1))).errno).toBe("EBADF")
      expect((yield* Effect.flip(NodeNbd.connectFd(h, 99999))).errno).toBe("EBADF")
      const dir = yield* tempDir
      const fd = Fs.openSync(Path.join(dir, "file"), "w")
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.closeSync(fd)))
      expect((yield* Effect.flip(NodeNbd.connectFd(h, fd))).errno).toBe("ENOTSOCK")
      expect(HandleState.isCreated(yield* Nbd.state(h))).toBe(true)
    })
  )
})

describe("a subprocess on a socket pair (connectCommand)", () => {
  it.live("nbdkit -s: data moves, the pid is known, and the child is reaped when the scope closes", () =>
    Effect.gen(function* () {
      const pid = yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make()
          yield* NodeNbd.connectCommand(h, ["nbdkit", "-s", "--exit-with-parent", "memory", "1M"])
          yield* roundTrip(h, 8)
          expect(yield* Nbd.getSize(h)).toBe(1048576n)
          const pid = yield* NodeNbd.getSubprocessPid(h)
          expect(alive(pid)).toBe(true)
          expect(Fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0]).toBe("nbdkit")
          // libnbd's get_uri fails for a command: there is no address to reconnect to.
          expect((yield* Effect.flip(Nbd.getUri(h))).errno).toBe("EINVAL")
          return pid
        })
      )
      expect(alive(pid)).toBe(false)
    })
  )

  it.live("a child still running after the connection closes is killed", () =>
    Effect.gen(function* () {
      const pid = yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make()
          // After nbdkit exits at EOF, the same process becomes a sleep that ignores the closed socket.
          yield* NodeNbd.connectCommand(h, ["sh", "-c", "nbdkit -s memory 1M; exec sleep 60"])
          yield* roundTrip(h, 9)
          return yield* NodeNbd.getSubprocessPid(h)
        })
      )
      expect(alive(pid)).toBe(false)
    })
  )

  it.live("TLS (PSK) over the socket pair: nbdkit -s --tls=require", () =>
    Effect.gen(function* () {
      const keys = yield* pskFile
      const h = yield* Nbd.make()
      yield* Nbd.setTls(h, "require")
      yield* Nbd.setTlsPskFile(h, keys)
      yield* Nbd.setTlsUsername(h, "alice")
      yield* NodeNbd.connectCommand(h, ["nbdkit", "-s", "--tls=require", `--tls-psk=${keys}`, "memory", "1M"])
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
      yield* roundTrip(h, 10)
    })
  )

  it.live("an empty argv fails with EINVAL; a missing program with ENOENT", () =>
    Effect.gen(function* () {
      const h1 = yield* Nbd.make()
      const empty = yield* Effect.flip(NodeNbd.connectCommand(h1, []))
      expect(empty.errno).toBe("EINVAL")
      expect(empty.message).toBe("missing command name in argv list")
      expect(HandleState.isCreated(yield* Nbd.state(h1))).toBe(true)
      const h2 = yield* Nbd.make()
      expect((yield* Effect.flip(NodeNbd.connectCommand(h2, ["/no/such/program"]))).errno).toBe("ENOENT")
      expect(HandleState.isDead(yield* Nbd.state(h2))).toBe(true)
      expect((yield* Effect.flip(NodeNbd.getSubprocessPid(h2))).errno).toBe("ESRCH")
    })
  )

  it.live("a handle connects once: a second connectCommand spawns nothing", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      yield* NodeNbd.connectCommand(h, ["nbdkit", "-s", "memory", "1M"])
      const pid = yield* NodeNbd.getSubprocessPid(h)
      const error = yield* Effect.flip(NodeNbd.connectCommand(h, ["nbdkit", "-s", "memory", "1M"]))
      expect(error.message).toContain("the handle must be newly created")
      expect(yield* NodeNbd.getSubprocessPid(h)).toBe(pid)
    })
  )
})

describe("systemd socket activation", () => {
  it.live("nbdkit (no -U: it finds LISTEN_FDS): data, getUri for a second client, SIGTERM at close", () =>
    Effect.gen(function* () {
      const pid = yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make()
          yield* NodeNbd.connectSystemdSocketActivation(h, ["nbdkit", "memory", "1M"])
          const data = bytes(4096, 11)
          yield* Nbd.pwrite(h, data, 0)
          const pid = yield* NodeNbd.getSubprocessPid(h)
          expect(Fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0]).toBe("nbdkit")
          const uri = yield* Nbd.getUri(h)
          expect(uri).toMatch(/^nbd\+unix:\/\/\/\?socket=\/.*\/sock$/)
          const h2 = yield* Nbd.make()
          yield* NodeNbd.connectUri(h2, uri)
          expect(Buffer.from(yield* Nbd.pread(h2, 4096, 0)).equals(data)).toBe(true)
          return pid
        })
      )
      expect(alive(pid)).toBe(false)
    })
  )

  it.live("qemu-nbd on a raw file", () =>
    Effect.gen(function* () {
      const pid = yield* Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const image = Path.join(dir, "disk.raw")
          const content = bytes(MiB, 12)
          Fs.writeFileSync(image, content)
          const h = yield* Nbd.make()
          yield* NodeNbd.connectSystemdSocketActivation(h, ["qemu-nbd", "-f", "raw", image])
          expect(yield* Nbd.getSize(h)).toBe(BigInt(MiB))
          expect(Buffer.from(yield* Nbd.pread(h, 65536, 65536)).equals(content.subarray(65536, 131072))).toBe(true)
          return yield* NodeNbd.getSubprocessPid(h)
        })
      )
      expect(alive(pid)).toBe(false)
    })
  )

  it.live("an empty argv fails with EINVAL", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      expect((yield* Effect.flip(NodeNbd.connectSystemdSocketActivation(h, []))).errno).toBe("EINVAL")
    })
  )
})

describe("connectUri", () => {
  it.live("nbd:// to the test server: the export from the path; getUri reconnects to it", () =>
    Effect.gen(function* () {
      const s = yield* server({
        listen: { _tag: "Tcp" },
        exports: [
          { name: "a b/c", size: MiB },
          { name: "other", size: 2 * MiB }
        ]
      })
      const h1 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h1, s.uriFor("a b/c"))
      const data = bytes(4096, 13)
      yield* Nbd.pwrite(h1, data, 4096)
      const uri = yield* Nbd.getUri(h1)
      expect(uri).toBe(s.uriFor("a b/c"))
      const h2 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h2, uri)
      expect(yield* Nbd.getSize(h2)).toBe(BigInt(MiB))
      expect(Buffer.from(yield* Nbd.pread(h2, 4096, 4096)).equals(data)).toBe(true)
    })
  )

  it.live("nbd+unix:// to the test server and to nbdkit, with getUri round trips", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "disk", size: MiB }] })
      const h1 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h1, s.uriFor("disk"))
      yield* roundTrip(h1, 14)
      const h2 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h2, yield* Nbd.getUri(h1))
      expect(yield* Nbd.getCanonicalExportName(h2)).toBe("disk")
      expect(Buffer.from(yield* Nbd.pread(h2, 65536, 8192)).equals(bytes(65536, 14))).toBe(true)

      const peer = yield* nbdkit(["memory", "1M"])
      const h3 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h3, peer.uri)
      yield* roundTrip(h3, 15)
      const h4 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h4, yield* Nbd.getUri(h3))
      expect(Buffer.from(yield* Nbd.pread(h4, 65536, 8192)).equals(bytes(65536, 15))).toBe(true)
    })
  )

  it.live("nbds+unix:// with a PSK file and tls-username, to nbdkit; getUri keeps the TLS settings", () =>
    Effect.gen(function* () {
      const keys = yield* pskFile
      const peer = yield* nbdkit(["--tls=require", `--tls-psk=${keys}`, "memory", "1M"])
      const uri = `nbds+unix:///?socket=${peer.socket}&tls-username=alice&tls-psk-file=${keys}`
      const h1 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h1, uri, { allowLocalFile: true })
      expect(yield* Nbd.getTlsNegotiated(h1)).toBe(true)
      expect(yield* Nbd.getTlsUsername(h1)).toBe("alice")
      expect(yield* Nbd.getTlsPskFile(h1)).toBe(keys)
      yield* roundTrip(h1, 16)
      const again = yield* Nbd.getUri(h1)
      expect(again).toBe(`nbds+unix:///?socket=${peer.socket}&tls-username=alice&tls-psk-file=${keys}`)
      const h2 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h2, again, { allowLocalFile: true })
      expect(yield* Nbd.getTlsNegotiated(h2)).toBe(true)
    })
  )

  it.live("nbds://alice@host:port/ with a PSK file, to the test server over TCP", () =>
    Effect.gen(function* () {
      const keys = yield* pskFile
      const s = yield* server({
        listen: { _tag: "Tcp" },
        tls: "require",
        tlsPsk: keys,
        exports: [{ name: "secure", size: MiB }]
      })
      const port = s.address._tag === "Tcp" ? s.address.port : 0
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, `nbds://alice@127.0.0.1:${port}/secure?tls-psk-file=${keys}`, {
        allowLocalFile: true
      })
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
      expect(yield* Nbd.getTls(h)).toBe("require")
      yield* roundTrip(h, 17)
      expect(yield* Nbd.getUri(h)).toBe(`nbds://alice@127.0.0.1:${port}/secure?tls-psk-file=${keys}`)
    })
  )

  it.live("local files, transports and TLS are permitted as the options say (EPERM otherwise)", () =>
    Effect.gen(function* () {
      const cases: ReadonlyArray<readonly [string, NodeNbd.UriOptions]> = [
        ["nbds+unix:///?socket=/nonexistent&tls-psk-file=/etc/keys.psk", {}],
        ["nbds://h/?tls-certificates=/etc/pki", {}],
        ["nbd+unix:///?socket=/nonexistent", { allowTransports: ["tcp"] }],
        ["nbd://127.0.0.1/", { allowTransports: ["unix"] }],
        ["nbds://127.0.0.1/", { allowTls: "disable" }],
        ["nbd://127.0.0.1/", { allowTls: "require" }]
      ]
      for (const [uri, options] of cases) {
        const h = yield* Nbd.make()
        const error = yield* Effect.flip(NodeNbd.connectUri(h, uri, options))
        expect(error.errno, uri).toBe("EPERM")
        expect(HandleState.isCreated(yield* Nbd.state(h))).toBe(true)
      }
    })
  )

  it.live("tls-hostname and tls-verify-peer reach the handle's settings", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      const port = yield* freePort("127.0.0.1")
      // Nothing listens: only the settings are of interest here.
      yield* Effect.flip(
        NodeNbd.connectUri(h, `nbds://127.0.0.1:${port}/?tls-hostname=nbd.example&tls-verify-peer=false`)
      )
      expect(yield* Nbd.getTlsHostname(h)).toBe("nbd.example")
      expect(yield* Nbd.getTlsVerifyPeer(h)).toBe(false)
    })
  )

  const malformed = [
    "",
    "nbd:example.com",
    "http://example.com/",
    "nbd+unix:///disk",
    "nbd://example.com/?socket=/tmp/s",
    "nbd://example.com:port/",
    "nbd://u:secret@example.com/",
    "nbds://h/?tls-verify-peer=perhaps",
    "nbd://example.com/%zz"
  ]
  it.live("malformed URIs fail with EINVAL and leave the handle new", () =>
    Effect.gen(function* () {
      for (const uri of malformed) {
        const h = yield* Nbd.make()
        const error = yield* Effect.flip(NodeNbd.connectUri(h, uri))
        expect(error.errno, uri).toBe("EINVAL")
        expect(error.operation).toBe("nbd_connect_uri")
        expect(HandleState.isCreated(yield* Nbd.state(h))).toBe(true)
      }
      const h = yield* Nbd.make()
      expect((yield* Effect.flip(NodeNbd.connectUri(h, `nbd://h/${"x".repeat(5000)}`))).errno).toBe("ENAMETOOLONG")
    })
  )
})
