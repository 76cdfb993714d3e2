/**
 * Node's floor for `pnpm bench`: the least a Node NBD client can do for a sequential read or write, with no
 * Effect and no library code, so the bench can say how far our client sits above what Node itself costs.
 *
 * Its own few lines of the wire format: the fixed-newstyle handshake ending in NBD_OPT_EXPORT_NAME (with
 * NBD_FLAG_C_NO_ZEROES when offered), simple replies only, `net.connect` to the Unix socket, 64 requests of
 * 256 KiB in flight. Reads arrive through the `onread` option into one reused buffer, and each payload is
 * copied once into a pooled buffer (one per slot); writes send a pooled buffer per request.
 *
 * With `threads` above 1, a read is split into that many equal slices, each read by a session of its own in a
 * worker thread of its own (`node:worker_threads`): one connection and one event loop per thread, the least a
 * Node client spreading a copy over threads could do, so the bench can say whether threads pay on this
 * machine at all.
 *
 * `node examples/dist/floor.js --worker JSON` runs one task and prints its runs as JSON, the same shape as
 * bench.js's worker: `seconds` (connect, transfer, disconnect) and `transferSeconds` (the transfer alone).
 */
import * as Crypto from "node:crypto"
import * as Net from "node:net"
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads"

export interface FloorTask {
  readonly mode: "read" | "write"
  /** `nbd+unix:///?socket=PATH`: the only form the floor speaks. */
  readonly uri: string
  readonly reps: number
  /** An untimed session of this many bytes first, as bench.js's worker does. */
  readonly warmupBytes: number
  /** Reads only: the worker threads the export is split over (default 1: this thread alone). */
  readonly threads?: number
}

/** The part of the export one session moves: `length` bytes from `base`, a multiple of the request size. */
interface Slice {
  readonly base: number
  readonly length: number
}

export interface FloorRun {
  readonly seconds: number
  readonly transferSeconds: number
  readonly bytes: number
  readonly requests: number
  /** When the transfer began and ended, in ms since the epoch: comparable across threads. */
  readonly transferStart: number
  readonly transferEnd: number
  /** The size the server gave. */
  readonly exportSize: number
}

const REQUEST_SIZE = 256 * 1024
const DEPTH = 64

const IHAVEOPT = 0x49484156454f5054n
const FLAG_FIXED_NEWSTYLE = 1
const FLAG_NO_ZEROES = 2
const OPT_EXPORT_NAME = 1
const REQUEST_MAGIC = 0x25609513
const SIMPLE_REPLY_MAGIC = 0x67446698
const CMD_READ = 0
const CMD_WRITE = 1
const CMD_DISC = 2
const REQUEST_HEADER = 28
const REPLY_HEADER = 16

const socketOf = (uri: string): string => {
  const path = new URL(uri).searchParams.get("socket")
  if (path === null) throw new Error(`floor: no socket in ${uri}`)
  return path
}

/**
 * One session: connect, handshake, move `limit` bytes (or the whole export), disconnect. Every byte that
 * arrives goes through `consume`, which is swapped from the handshake's steps to the reply parser.
 */
const session = (task: FloorTask, limit: number, slice?: Slice): Promise<FloorRun> =>
  new Promise((resolve, reject) => {
    const t0 = performance.now()
    let t1 = 0
    let t2 = 0
    let size = 0
    let exportSize = 0
    let requests = 0
    const pool = Array.from({ length: DEPTH }, () => {
      const b = Buffer.allocUnsafe(REQUEST_SIZE)
      if (task.mode === "write") Crypto.randomFillSync(b)
      return b
    })
    const headers = Array.from({ length: DEPTH }, () => Buffer.alloc(REQUEST_HEADER))
    const lengths = new Array<number>(DEPTH).fill(0)

    // Gathers exactly `n` bytes (the handshake's fixed-size pieces) before handing them on.
    let consume: (chunk: Buffer) => void = () => {}
    const need = (n: number, then: (b: Buffer) => void) => {
      const acc = Buffer.alloc(n)
      let have = 0
      consume = (chunk) => {
        const take = Math.min(n - have, chunk.length)
        chunk.copy(acc, have, 0, take)
        have += take
        if (have < n) return
        consume = () => {}
        then(acc)
        if (take < chunk.length) consume(chunk.subarray(take))
      }
    }
    const fail = (e: Error) => {
      socket.destroy()
      reject(e)
    }

    const readBuffer = Buffer.allocUnsafe(4 * 1024 * 1024)
    const socket = Net.connect({
      path: socketOf(task.uri),
      onread: {
        buffer: readBuffer,
        callback: (n) => {
          consume(readBuffer.subarray(0, n))
          return true
        }
      }
    })
    socket.on("error", fail)
    let finished = false
    socket.once("close", () => {
      if (!finished) reject(new Error("floor: the server closed the connection"))
    })

    let count = 0
    let issued = 0
    const base = slice?.base ?? 0
    let done = 0
    const issue = (slot: number) => {
      const offset = base + issued * REQUEST_SIZE
      const len = Math.min(REQUEST_SIZE, size - issued * REQUEST_SIZE)
      const h = headers[slot]!
      h.writeUInt32BE(REQUEST_MAGIC, 0)
      h.writeUInt16BE(0, 4)
      h.writeUInt16BE(task.mode === "read" ? CMD_READ : CMD_WRITE, 6)
      h.writeUInt32BE(0, 8)
      h.writeUInt32BE(slot, 12) // cookie: the slot, so a reply finds its buffer
      h.writeBigUInt64BE(BigInt(offset), 16)
      h.writeUInt32BE(len, 24)
      lengths[slot] = len
      issued++
      if (task.mode === "read") socket.write(h)
      else {
        socket.cork()
        socket.write(h)
        socket.write(len === REQUEST_SIZE ? pool[slot]! : pool[slot]!.subarray(0, len))
        socket.uncork()
      }
    }
    const finish = () => {
      t2 = performance.now()
      finished = true
      const disc = Buffer.alloc(REQUEST_HEADER)
      disc.writeUInt32BE(REQUEST_MAGIC, 0)
      disc.writeUInt16BE(CMD_DISC, 6)
      socket.end(disc)
      socket.once("close", () => {
        const t3 = performance.now()
        const epoch = (t: number) => performance.timeOrigin + t
        resolve({
          seconds: (t3 - t0) / 1000,
          transferSeconds: (t2 - t1) / 1000,
          bytes: size,
          requests,
          transferStart: epoch(t1),
          transferEnd: epoch(t2),
          exportSize
        })
      })
    }
    const completed = (slot: number) => {
      done++
      if (issued < count) issue(slot)
      else if (done === count) finish()
    }

    // Simple replies: a 16-byte header, then (for a read) the payload, copied once into the slot's buffer.
    const header = Buffer.alloc(REPLY_HEADER)
    let headerHave = 0
    let payloadSlot = -1
    let payloadHave = 0
    const replies = (chunk: Buffer) => {
      let at = 0
      while (at < chunk.length) {
        if (payloadSlot >= 0) {
          const len = lengths[payloadSlot]!
          const take = Math.min(len - payloadHave, chunk.length - at)
          chunk.copy(pool[payloadSlot]!, payloadHave, at, at + take)
          payloadHave += take
          at += take
          if (payloadHave === len) {
            const slot = payloadSlot
            payloadSlot = -1
            completed(slot)
          }
          continue
        }
        const take = Math.min(REPLY_HEADER - headerHave, chunk.length - at)
        chunk.copy(header, headerHave, at, at + take)
        headerHave += take
        at += take
        if (headerHave < REPLY_HEADER) return
        headerHave = 0
        if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) return fail(new Error("floor: bad reply magic"))
        const error = header.readUInt32BE(4)
        if (error !== 0) return fail(new Error(`floor: server error ${error}`))
        const slot = header.readUInt32BE(12)
        if (task.mode === "read") {
          payloadSlot = slot
          payloadHave = 0
        } else completed(slot)
      }
    }

    // Fixed newstyle: NBDMAGIC IHAVEOPT flags(16); our flags(32); NBD_OPT_EXPORT_NAME ""; size(64) flags(16).
    need(18, (greeting) => {
      if (greeting.toString("latin1", 0, 8) !== "NBDMAGIC" || greeting.readBigUInt64BE(8) !== IHAVEOPT)
        return fail(new Error("floor: not a newstyle server"))
      const noZeroes = (greeting.readUInt16BE(16) & FLAG_NO_ZEROES) !== 0
      const out = Buffer.alloc(4 + 16)
      out.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (noZeroes ? FLAG_NO_ZEROES : 0), 0)
      out.writeBigUInt64BE(IHAVEOPT, 4)
      out.writeUInt32BE(OPT_EXPORT_NAME, 12)
      out.writeUInt32BE(0, 16)
      socket.write(out)
      need(noZeroes ? 10 : 134, (info) => {
        exportSize = Number(info.readBigUInt64BE(0))
        size = Math.min(slice?.length ?? exportSize, limit)
        count = Math.ceil(size / REQUEST_SIZE)
        requests = count
        consume = replies
        t1 = performance.now()
        if (count === 0) return finish()
        for (let slot = 0; slot < DEPTH && issued < count; slot++) issue(slot)
      })
    })
  })

/** The size of the export, from a session that moves nothing. */
const exportSize = async (task: FloorTask): Promise<number> => {
  const probe = await session({ ...task, mode: "read" }, 0)
  return probe.exportSize
}

/**
 * One read split over `threads` worker threads, each a session on its own slice: timed from the first
 * thread's start to the last one's end, the transfer from the first transfer's start to the last one's end.
 */
const threaded = async (task: FloorTask, threads: number, size: number): Promise<FloorRun> => {
  const blocks = Math.ceil(size / REQUEST_SIZE)
  const slices = Array.from({ length: threads }, (_, i): Slice => {
    const from = Math.floor((i * blocks) / threads) * REQUEST_SIZE
    const to = Math.min(size, Math.floor(((i + 1) * blocks) / threads) * REQUEST_SIZE)
    return { base: from, length: to - from }
  })
  const t0 = performance.now()
  const runs = await Promise.all(
    slices.map(
      (slice) =>
        new Promise<FloorRun>((resolve, reject) => {
          const worker = new Worker(new URL(import.meta.url), { workerData: { task, slice } })
          worker.once("message", (run: FloorRun) => resolve(run))
          worker.once("error", reject)
          worker.once("exit", (code) => reject(new Error(`floor: a worker thread exited with ${code}`)))
        })
    )
  )
  const seconds = (performance.now() - t0) / 1000
  const transferStart = Math.min(...runs.map((r) => r.transferStart))
  const transferEnd = Math.max(...runs.map((r) => r.transferEnd))
  return {
    seconds,
    transferSeconds: (transferEnd - transferStart) / 1000,
    bytes: runs.reduce((n, r) => n + r.bytes, 0),
    requests: runs.reduce((n, r) => n + r.requests, 0),
    transferStart,
    transferEnd,
    exportSize: size
  }
}

export const runFloor = async (task: FloorTask): Promise<ReadonlyArray<FloorRun>> => {
  const threads = task.threads ?? 1
  if (threads > 1 && task.mode !== "read") throw new Error("floor: only reads run in worker threads")
  if (task.warmupBytes > 0) await session(task, task.warmupBytes)
  const size = threads > 1 ? await exportSize(task) : 0
  const runs: Array<FloorRun> = []
  for (let i = 0; i < task.reps; i++)
    runs.push(threads > 1 ? await threaded(task, threads, size) : await session(task, Infinity))
  return runs
}

if (!isMainThread) {
  const { slice, task } = workerData as { readonly task: FloorTask; readonly slice: Slice }
  void session(task, Infinity, slice).then((run) => parentPort!.postMessage(run))
} else {
  const argv = process.argv.slice(2)
  if (argv[0] === "--worker") {
    runFloor(JSON.parse(argv[1] ?? "{}") as FloorTask).then(
      (runs) => process.stdout.write(JSON.stringify(runs)),
      (error: unknown) => {
        process.stderr.write(`floor worker: ${String(error)}\n`)
        process.exit(1)
      }
    )
  }
}
