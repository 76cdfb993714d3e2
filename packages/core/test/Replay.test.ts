/**
 * The recorded sessions (test/transcripts/*.json, recorded against nbdkit, qemu-nbd and our test server by
 * packages/node/test/fuzz/record.ts) replayed through the engine alone: no socket, no Effect runtime. The
 * server's bytes go straight into the engine (handshake, then transmission), the test issues the commands the
 * recorded session issued, and it checks that the engine sends exactly the bytes the client sent live and
 * that each step ends as it did live.
 *
 * What it covers is the engine's part of the session: the handshake machine and its agreement, request
 * framing, reply matching, read data, structured read chunks, block status, server errors, NBD_CMD_DISC and
 * the commands in flight. What it does not cover is the Effect layer above: the handle's state, the call
 * wrapper, and the command checks of api/commands.ts. Where the recorded session was refused by a check
 * before anything was sent (block status without structured replies), the test asserts that the agreement
 * is what makes the check refuse, and that nothing was sent for it. The "info" step is the agreement read
 * with the rules of Nbd's getters (flags, block sizes, can_meta_context).
 *
 * Then properties: the same sessions with the server's bytes cut at random points give the same results and
 * the same client bytes, and with one byte of the server's stream changed give a typed error or a result at
 * each step (never a throw, never a hang), with every command settled exactly once.
 */
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { NbdError, Protocol } from "@effect-nbd/core"
import type * as ClientCodec from "@effect-nbd/core/ClientCodec"
import { makeCollector } from "../src/internal/engine/blockStatus.js"
import type { Outcome } from "../src/internal/engine/completion.js"
import { concat } from "../src/internal/wire/bytes.js"
import { handshakeSettings } from "./util/handshake.js"
import { frame } from "../src/internal/engine/outbox.js"
import type { CommandRequest } from "../src/internal/engine/pending.js"
import { type Stats, Transmission } from "../src/internal/engine/transmission.js"

// ---------------------------------------------------------------------------------------------------------------
// The transcripts
// ---------------------------------------------------------------------------------------------------------------

interface Exchange {
  readonly client: Uint8Array
  readonly server: Uint8Array
}

interface Transcript {
  readonly name: string
  readonly exchanges: ReadonlyArray<Exchange>
  readonly result: ReadonlyArray<StepOutcome>
}

interface ErrorSummary {
  readonly tag: string
  readonly errno: string
  readonly message: string
  readonly typed: boolean
}

type StepOutcome =
  { readonly step: string; readonly ok: unknown } | { readonly step: string; readonly error: ErrorSummary }

const directory = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "transcripts")

const fromHex = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex, "hex"))

const transcripts: ReadonlyArray<Transcript> = Fs.readdirSync(directory)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => {
    const json = JSON.parse(Fs.readFileSync(Path.join(directory, f), "utf8")) as {
      readonly name: string
      readonly exchanges: ReadonlyArray<{ readonly client: string; readonly server: string }>
      readonly result: ReadonlyArray<StepOutcome>
    }
    return {
      name: json.name,
      exchanges: json.exchanges.map((e) => ({ client: fromHex(e.client), server: fromHex(e.server) })),
      result: json.result
    }
  })

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex")

// ---------------------------------------------------------------------------------------------------------------
// The replay: the engine, and a server that answers only what the client has asked so far
// ---------------------------------------------------------------------------------------------------------------

/** The settings of the recording session: Nbd.make's defaults, with base:allocation added. */
const settings = handshakeSettings()

/** How the server's stream is delivered: cut before these offsets, and with one byte changed, if any. */
interface Delivery {
  readonly cuts: ReadonlyArray<number>
  readonly corrupt?: { readonly at: number; readonly mask: number } | undefined
}

const summarise = (error: NbdError.NbdError): ErrorSummary => ({
  tag: error._tag,
  errno: error.errno,
  message: error.message,
  typed: NbdError.isNbdError(error)
})

/**
 * One replayed connection. The server's answer to a client message is delivered only once the engine has
 * sent that message (as bytes, in the recorded order), so a reply never comes before its request.
 */
class Replay {
  readonly stats: Stats = { bytesSent: 0, chunksSent: 0, bytesReceived: 0, chunksReceived: 0, reconnects: 0 }
  readonly engine = new Transmission(
    { stats: this.stats, adopt: () => false },
    { queued: () => {}, handshakeBytes: () => {} }
  )
  /** What the engine sent, as the writer would frame it. */
  readonly sent: Array<Uint8Array> = []
  private sentBytes = 0
  private readonly stream: Uint8Array
  private delivered = 0
  /** Set once the connection has ended: by a decoding error, or by the server having nothing more to say. */
  ended: { readonly error: NbdError.NbdError | undefined } | undefined = undefined
  /** How many times each command settled. */
  readonly settled = new Map<number, number>()

  constructor(
    private readonly transcript: Transcript,
    private readonly delivery: Delivery
  ) {
    const stream = concat(transcript.exchanges.map((e) => e.server))
    if (delivery.corrupt !== undefined && stream.length > 0) {
      const at = delivery.corrupt.at % stream.length
      stream[at] = stream[at]! ^ delivery.corrupt.mask
    }
    this.stream = stream
  }

  /** Takes what the engine queued, as the driver's writer does. */
  private flush(): void {
    const items = this.engine.queue.splice(0)
    let at = 0
    while (at < items.length) {
      const framed = frame(items, at)
      for (const chunk of framed.chunks) {
        this.sent.push(chunk)
        this.sentBytes += chunk.length
      }
      if (framed.end) return
      at = framed.next
    }
  }

  /** The end of the server's stream the client has earned: the answers to every message it has sent. */
  private get earned(): number {
    let client = 0
    let server = 0
    for (const e of this.transcript.exchanges) {
      client += e.client.length
      if (client > this.sentBytes) break
      server += e.server.length
    }
    return server
  }

  /** Delivers what the server would send now, in the delivery's pieces; false when there is nothing to send. */
  pump(): boolean {
    this.flush()
    if (this.ended !== undefined) return false
    const until = this.earned
    if (until <= this.delivered) return false
    const cuts = this.delivery.cuts.filter((c) => c > this.delivered && c < until)
    for (const cut of [...cuts, until]) {
      const error = this.engine.receive(this.stream.slice(this.delivered, cut))
      this.delivered = cut
      if (error !== undefined) {
        this.end(new NbdError.ProtocolError({ errno: error.errno, operation: "recv", message: error.message }))
        break
      }
    }
    return true
  }

  /** The connection ends, as the driver ends it: every command still waiting settles. */
  end(error: NbdError.NbdError | undefined): void {
    if (this.ended !== undefined) return
    this.ended = { error }
    this.engine.end(error)
  }

  /** The handshake, driven as session/handshake.ts drives it; undefined once in transmission, else the error. */
  handshake(): NbdError.NbdError | undefined {
    const machine = this.engine.handshake
    machine.start(settings, { operation: "nbd_connect_unix", optionMode: false, tlsAvailable: false })
    for (let guard = 0; guard < 100_000; guard++) {
      const step = machine.next()
      switch (step._tag) {
        case "Read":
          if (!this.pump()) {
            const error =
              this.ended?.error ??
              new NbdError.ProtocolError({ errno: "", operation: "recv", message: "server disconnected unexpectedly" })
            this.end(error)
            return error
          }
          break
        case "Done": {
          const error = this.engine.startTransmission()
          this.flush()
          if (error === undefined) return undefined
          const failure = new NbdError.ProtocolError({ errno: error.errno, operation: "recv", message: error.message })
          this.end(failure)
          return failure
        }
        case "Failed":
          this.flush()
          this.end(step.error)
          return step.error
        case "StartTls":
        case "Negotiating":
          throw new Error(`the recorded session never asks for ${step._tag}`)
      }
    }
    throw new Error("the handshake did not finish")
  }

  /** Issues commands at once (a pipeline), then delivers the server's answers until each has settled. */
  run(commands: ReadonlyArray<readonly [CommandRequest, number, number]>): Array<Outcome> {
    const outcomes: Array<Outcome | undefined> = commands.map(() => undefined)
    if (this.ended !== undefined) return commands.map(() => ({ ok: false, error: this.notConnected() }))
    commands.forEach(([command, offset, count], i) => {
      const pending = this.engine.issue(command, offset, count)
      pending.completion.listen((outcome) => {
        outcomes[i] = outcome
        this.settled.set(pending.cookie, (this.settled.get(pending.cookie) ?? 0) + 1)
      })
      this.settled.set(pending.cookie, this.settled.get(pending.cookie) ?? 0)
    })
    while (outcomes.some((o) => o === undefined)) {
      if (this.pump()) continue
      // A server with nothing more to say closes the connection: what still waits settles then.
      if (this.ended === undefined) this.end(undefined)
      else expect.fail("a command was still waiting after the connection ended: it would wait forever")
    }
    return outcomes as Array<Outcome>
  }

  private notConnected(): NbdError.NbdError {
    return new NbdError.ConnectionError({ errno: "ENOTCONN", operation: "replay", message: "the connection has ended" })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The recorded session, step by step (packages/node/test/fuzz/session.ts)
// ---------------------------------------------------------------------------------------------------------------

const digest = (data: Uint8Array): string => Crypto.createHash("sha256").update(data).digest("hex").slice(0, 16)

/** The bytes the session writes. */
const pattern = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff)

const readOf = (operation: string, extra: Partial<CommandRequest> = {}): CommandRequest => ({
  operation,
  type: Protocol.Cmd.READ,
  flags: 0,
  fresh: true,
  ...extra
})

const outcomeOf = (step: string, outcome: Outcome, render: (value: Uint8Array | undefined) => unknown): StepOutcome =>
  outcome.ok ? { step, ok: render(outcome.value) } : { step, error: summarise(outcome.error) }

/** The agreement as Nbd's getters read it. */
const info = (r: Replay): unknown => {
  const a = r.engine.handshake.agreement
  const i = a.info!
  const has = (flag: number) => (i.flags & flag) !== 0
  return {
    size: String(i.size),
    protocol: a.protocol,
    structuredReplies: a.structuredReplies,
    extendedHeaders: a.extendedHeaders,
    readOnly: has(Protocol.TFlag.READ_ONLY),
    canFlush: has(Protocol.TFlag.SEND_FLUSH),
    canFua: has(Protocol.TFlag.SEND_FUA),
    canTrim: has(Protocol.TFlag.SEND_TRIM),
    canZero: has(Protocol.TFlag.SEND_WRITE_ZEROES),
    canCache: has(Protocol.TFlag.SEND_CACHE),
    canMultiConn: has(Protocol.TFlag.CAN_MULTI_CONN),
    blockSize: [i.blockSizes?.minimum ?? 0, i.blockSizes?.preferred ?? 0, i.blockSizes?.maximum ?? 0],
    baseAllocation: a.metaValid
      ? [...(a.metaContexts?.values() ?? [])].includes(Protocol.CONTEXT_BASE_ALLOCATION)
      : "invalid"
  }
}

const renderEntries = (entries: ReadonlyArray<ClientCodec.BlockStatusEntry>) =>
  entries.map((e) => ({
    context: e.context,
    offset: String(e.offset),
    extents: e.extents.map((x) => [String(x.length), x.flags])
  }))

/**
 * Runs the session on a replay. The steps after a failed handshake are not run: the handle would be dead, and
 * what it answers then is the Effect layer's.
 */
const session = (r: Replay): Array<StepOutcome> => {
  const steps: Array<StepOutcome> = []
  const failed = r.handshake()
  if (failed !== undefined) return [{ step: "connect", error: summarise(failed) }]
  steps.push({ step: "connect", ok: null })
  steps.push({ step: "info", ok: info(r) })
  const a = r.engine.handshake.agreement
  const one = (
    step: string,
    command: CommandRequest,
    offset: number,
    count: number,
    render: (v: Uint8Array | undefined) => unknown
  ) => steps.push(outcomeOf(step, r.run([[command, offset, count]])[0]!, render))

  one("pread 0+1024", readOf("nbd_pread"), 0, 1024, (v) => digest(v!))
  const payloadLen = a.extendedHeaders ? Protocol.CmdFlag.PAYLOAD_LEN : 0
  one(
    "pwrite 1024+1024",
    { operation: "nbd_pwrite", type: Protocol.Cmd.WRITE, flags: payloadLen, payload: pattern(1024) },
    1024,
    1024,
    () => null
  )
  one("pread 0+4096", readOf("nbd_pread"), 0, 4096, (v) => digest(v!))
  const chunks: Array<ClientCodec.ReadChunk> = []
  one(
    "pread-structured 512+2048",
    readOf("nbd_pread_structured", { fresh: false, buffer: new Uint8Array(2048), chunks }),
    512,
    2048,
    (v) => ({
      data: digest(v!),
      chunks: chunks.length === 0 ? [{ _tag: "Data", offset: 512, length: 2048 }] : chunks
    })
  )
  const pipelined = r.run([0, 512, 1024].map((offset) => [readOf("nbd_aio_pread"), offset, 512] as const))
  const failure = pipelined.find((o) => !o.ok)
  steps.push(
    failure !== undefined && !failure.ok
      ? { step: "pipelined reads 3x512", error: summarise(failure.error) }
      : { step: "pipelined reads 3x512", ok: pipelined.map((o) => (o.ok ? digest(o.value!) : "")) }
  )
  // api/commands.ts refuses block status before anything is sent without structured replies or contexts.
  if (!a.structuredReplies)
    steps.push({
      step: "block-status 0+65536",
      error: {
        tag: "UnsupportedError",
        errno: "ENOTSUP",
        message: "server does not support structured replies",
        typed: true
      }
    })
  else {
    const { entries, onBlockStatus } = makeCollector(a.metaContexts, a.info!.size, "nbd_block_status", 0, 65536)
    one(
      "block-status 0+65536",
      { operation: "nbd_block_status", type: Protocol.Cmd.BLOCK_STATUS, flags: 0, onBlockStatus },
      0,
      65536,
      () => renderEntries(entries)
    )
  }
  one("flush", { operation: "nbd_flush", type: Protocol.Cmd.FLUSH, flags: 0 }, 0, 0, () => null)
  r.engine.disconnect()
  r.pump()
  // The server closes after NBD_CMD_DISC.
  r.end(undefined)
  steps.push({ step: "shutdown", ok: null })
  steps.push({ step: "in-flight", ok: r.engine.inFlight })
  return steps
}

const clientBytes = (t: Transcript): string => hex(concat(t.exchanges.map((e) => e.client)))

const replay = (t: Transcript, delivery: Delivery) => {
  const r = new Replay(t, delivery)
  const result = session(r)
  return { r, result, sent: hex(concat(r.sent)) }
}

// ---------------------------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------------------------

const SEED = 0x7e91

describe("recorded sessions replayed through the engine, with no socket", () => {
  it("there is a transcript of every peer kind", () => {
    expect(transcripts.map((t) => t.name).sort()).toEqual([
      "nbdkit-memory",
      "nbdkit-memory-no-sr",
      "nbdkit-newstyle-not-fixed",
      "nbdkit-oldstyle",
      "qemu-nbd-raw",
      "testserver-extended",
      "testserver-extended-out-of-order"
    ])
  })

  for (const t of transcripts) {
    describe(t.name, () => {
      it("delivered whole, the engine sends the recorded bytes and each step ends as it did live", () => {
        const { r, result, sent } = replay(t, { cuts: [] })
        expect(result).toEqual(t.result)
        expect(sent).toBe(clientBytes(t))
        expect([...r.settled.values()].every((n) => n === 1)).toBe(true)
      })

      it("delivered one byte at a time, the same", () => {
        const length = t.exchanges.reduce((n, e) => n + e.server.length, 0)
        const { result, sent } = replay(t, { cuts: Array.from({ length }, (_, i) => i + 1) })
        expect(result).toEqual(t.result)
        expect(sent).toBe(clientBytes(t))
      })

      it("delivered in random pieces, the same", () => {
        const length = t.exchanges.reduce((n, e) => n + e.server.length, 0)
        fc.assert(
          fc.property(fc.uniqueArray(fc.integer({ min: 1, max: length - 1 }), { maxLength: 40 }), (cuts) => {
            const { result, sent } = replay(t, { cuts: [...cuts].sort((x, y) => x - y) })
            expect(result).toEqual(t.result)
            expect(sent).toBe(clientBytes(t))
          }),
          { seed: SEED, numRuns: 60 }
        )
      })

      it("with one byte of the server's stream changed: a typed error or a result at each step, every command settled once", () => {
        const length = t.exchanges.reduce((n, e) => n + e.server.length, 0)
        fc.assert(
          fc.property(
            fc.integer({ min: 0, max: length - 1 }),
            fc.integer({ min: 1, max: 255 }),
            fc.uniqueArray(fc.integer({ min: 1, max: length - 1 }), { maxLength: 8 }),
            (at, mask, cuts) => {
              const { r, result } = replay(t, { cuts: [...cuts].sort((x, y) => x - y), corrupt: { at, mask } })
              for (const step of result) if ("error" in step) expect(step.error.typed).toBe(true)
              // Every command issued settled, exactly once, and nothing is left waiting.
              expect([...r.settled.values()].every((n) => n === 1)).toBe(true)
              expect(r.engine.inFlight).toBe(0)
              // A change the protocol cannot see (inside read data) changes a digest, not the outcome's kind.
              expect(result.map((s) => s.step)).toEqual(
                "error" in result[0]! ? ["connect"] : t.result.map((s) => s.step)
              )
            }
          ),
          { seed: SEED, numRuns: 150 }
        )
      })
    })
  }
})
