/**
 * A server that replays a plan over a Unix socket: for each step it waits until the client has sent the
 * step's number of bytes (counted from the start), then writes the step's pieces, each after its delay. When
 * the plan runs out, or the client goes quiet while the server waits for it, or the client ends its side, the
 * server ends the connection (FIN) or resets it, as the plan says.
 *
 * Delays: a negative delay writes at once (the kernel may merge it with the previous piece); 0 waits two
 * event-loop turns, so the client's poll phase runs in between and it reads the pieces separately; a positive
 * delay waits that many milliseconds.
 */
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"

/** One write of the server, after `delayMs`. */
export interface Write {
  readonly bytes: Uint8Array
  readonly delayMs: number
}

/** Wait for `client` bytes from the client (in this step), then write. */
export interface Step {
  readonly client: number
  readonly writes: ReadonlyArray<Write>
}

export interface Plan {
  readonly steps: ReadonlyArray<Step>
  /** How the server ends the connection: a FIN after what it wrote, or a reset. */
  readonly end: "end" | "destroy"
  /** How long the server waits for client bytes it is owed before it ends the connection. */
  readonly idleMs: number
}

/** What one connection saw. */
export interface Served {
  /** Every byte the client sent, in order. */
  readonly received: Uint8Array
  /** The steps whose writes were all sent. */
  readonly stepsDone: number
  /** Whether the client ended its side before the server did. */
  readonly clientEnded: boolean
}

export interface ReplayServer {
  readonly path: string
  /** Serves the next connection with `plan`; resolves once that connection is closed on both sides. */
  readonly serve: (plan: Plan) => Promise<Served>
  /** Connections open now (0 between runs, or a connection leaked). */
  readonly openConnections: () => number
  readonly close: () => Promise<void>
}

/** Long past any run's bound: only a connection the client never closes lives this long. */
const LINGER_MS = 10_000

const twoTurns = (): Promise<void> => new Promise((resolve) => setImmediate(() => setImmediate(resolve)))
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const pause = (delayMs: number): Promise<void> | undefined =>
  delayMs < 0 ? undefined : delayMs === 0 ? twoTurns() : sleep(delayMs)

const serveConnection = (socket: Net.Socket, plan: Plan, done: (served: Served) => void): void => {
  const received: Array<Buffer> = []
  let count = 0
  let step = 0
  let owed = plan.steps[0]?.client ?? 0
  let sending = false
  let clientEnded = false
  let finished = false
  let idle: NodeJS.Timeout | undefined
  let linger: NodeJS.Timeout | undefined

  const finish = (): void => {
    if (finished) return
    finished = true
    clearTimeout(idle)
    if (plan.end === "destroy") socket.destroy()
    else {
      socket.end()
      linger = setTimeout(() => socket.destroy(), LINGER_MS)
    }
  }

  const armIdle = (): void => {
    clearTimeout(idle)
    if (!finished) idle = setTimeout(finish, plan.idleMs)
  }

  const pump = async (): Promise<void> => {
    if (sending || finished) return
    sending = true
    clearTimeout(idle)
    while (step < plan.steps.length && count >= owed) {
      for (const write of plan.steps[step]!.writes) {
        await pause(write.delayMs)
        if (finished || socket.destroyed) return
        socket.write(write.bytes)
      }
      step += 1
      owed += plan.steps[step]?.client ?? 0
    }
    sending = false
    if (step === plan.steps.length || clientEnded) finish()
    else armIdle()
  }

  socket.on("data", (data) => {
    received.push(Buffer.from(data))
    count += data.length
    void pump()
  })
  socket.on("end", () => {
    clientEnded = true
    if (!sending) finish()
  })
  // A client that resets the connection is a normal end here.
  socket.on("error", () => {})
  socket.on("close", () => {
    finished = true
    clearTimeout(idle)
    clearTimeout(linger)
    done({ received: new Uint8Array(Buffer.concat(received)), stepsDone: step, clientEnded })
  })
  void pump()
}

/** A replay server on a Unix socket in a fresh temporary directory. */
export const makeReplayServer = async (): Promise<ReplayServer> => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-replay-"))
  const path = Path.join(dir, "replay.sock")
  const plans: Array<{ plan: Plan; resolve: (s: Served) => void }> = []
  const open = new Set<Net.Socket>()
  const server = Net.createServer((socket) => {
    open.add(socket)
    socket.on("close", () => open.delete(socket))
    const next = plans.shift()
    if (next === undefined) {
      socket.destroy()
      return
    }
    serveConnection(socket, next.plan, next.resolve)
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(path, () => {
      server.off("error", reject)
      resolve()
    })
  })
  return {
    path,
    serve: (plan) => new Promise<Served>((resolve) => plans.push({ plan, resolve })),
    openConnections: () => open.size,
    close: async () => {
      for (const socket of open) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      Fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** What a transcript's exchanges become in a plan: wait for each client message, then answer. */
export interface ExchangeBytes {
  readonly client: Uint8Array
  readonly server: Uint8Array
}

/** Each answer in one write, as soon as its client message is in. */
export const wholePlan = (exchanges: ReadonlyArray<ExchangeBytes>, idleMs = 1000): Plan => ({
  steps: exchanges.map((e) => ({
    client: e.client.length,
    writes: e.server.length === 0 ? [] : [{ bytes: e.server, delayMs: -1 }]
  })),
  end: "end",
  idleMs
})

/** Where one answer is cut, and how long to wait before each piece (see `Write`). */
export interface Cut {
  readonly at: number
  readonly delayMs: number
}

/** Cuts `bytes` at the given positions (modulo its length, deduplicated), each piece after its cut's delay. */
export const cutWrites = (bytes: Uint8Array, cuts: ReadonlyArray<Cut>, firstDelayMs = -1): Array<Write> => {
  if (bytes.length === 0) return []
  const delays = new Map<number, number>()
  for (const c of cuts) {
    const at = c.at % bytes.length
    if (at > 0 && !delays.has(at)) delays.set(at, c.delayMs)
  }
  const points = [...delays.keys()].sort((a, b) => a - b)
  const writes: Array<Write> = []
  let from = 0
  let delayMs = firstDelayMs
  for (const at of [...points, bytes.length]) {
    writes.push({ bytes: bytes.subarray(from, at), delayMs })
    delayMs = delays.get(at) ?? 0
    from = at
  }
  return writes
}

/** Every answer cut as `cuts[i]` says. */
export const splitPlan = (
  exchanges: ReadonlyArray<ExchangeBytes>,
  cuts: ReadonlyArray<ReadonlyArray<Cut>>,
  idleMs = 1000
): Plan => ({
  steps: exchanges.map((e, i) => ({ client: e.client.length, writes: cutWrites(e.server, cuts[i] ?? []) })),
  end: "end",
  idleMs
})
