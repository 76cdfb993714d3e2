import { Nbd, NbdCopy, NbdMetrics } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Tracer from "effect/Tracer"

// A copy's NBD requests go through commands.submit, with no fiber and no call wrapper: what a handle's debug
// output, metrics and a tracer see of them.

const KiB = 1024
const SIZE = 1024 * KiB
const REQUEST = 64 * KiB

const server = TestServer.make({ exports: [{ name: "", size: SIZE }] }).pipe(Effect.orDie)

interface Recorded {
  readonly name: string
  readonly parent: string | undefined
  ended: boolean
}

/** A tracer that keeps every span it starts, with its parent's name. */
const recordingTracer = () => {
  const native = Effect.runSync(Effect.tracer)
  const spans: Array<Recorded> = []
  const tracer = Tracer.make({
    span: (options) => {
      const span = native.span(options)
      const recorded: Recorded = {
        name: options.name,
        parent: Option.getOrUndefined(Option.map(options.parent, (p) => (p._tag === "Span" ? p.name : "external"))),
        ended: false
      }
      spans.push(recorded)
      const end = span.end.bind(span)
      return Object.assign(span, {
        end: (endTime: bigint, exit: Parameters<typeof span.end>[1]) => {
          recorded.ended = true
          end(endTime, exit)
        }
      })
    }
  })
  return { tracer, spans }
}

const connected = (uri: string, settings: Nbd.Settings = {}) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make({ metaContexts: ["base:allocation"], ...settings })
    yield* NodeNbd.connectUri(h, uri)
    return h
  })

describe("a copy's requests", () => {
  it.live("on a debug handle, each request and its reply are logged, in the caller's logger", () =>
    Effect.gen(function* () {
      const s = yield* server
      const lines: Array<string> = []
      const logger = Logger.make(({ message }) => {
        lines.push(String(Array.isArray(message) ? message.join(" ") : message))
      })
      const source = yield* connected(s.uri, { debug: true })
      yield* Nbd.pwrite(source, new Uint8Array(SIZE).fill(1), 0)
      const destination = yield* connected(s.uri)
      lines.length = 0
      yield* NbdCopy.copy(source, destination, { requestSize: REQUEST }).pipe(
        Effect.provide(Logger.layer([logger])),
        Effect.provideService(References.MinimumLogLevel, "Debug")
      )
      const sent = lines.filter((l) => /^sending read cookie=\d+ offset=\d+ count=65536 flags=0x0$/.test(l))
      const received = lines.filter((l) => /^received reply to read cookie=\d+: success$/.test(l))
      expect(sent).toHaveLength(SIZE / REQUEST)
      expect(received).toHaveLength(SIZE / REQUEST)
    })
  )

  it.live("on a metrics handle, each request counts as its aio call, with its bytes", () =>
    Effect.gen(function* () {
      const s = yield* server
      const calls = (call: string) => Metric.withAttributes(NbdMetrics.calls, { call, outcome: "success" })
      const bytes = Metric.withAttributes(NbdMetrics.bytes, { call: "nbd_aio_pwrite" })
      const source = yield* connected(s.uri)
      yield* Nbd.pwrite(source, new Uint8Array(SIZE).fill(2), 0)
      const destination = yield* connected(s.uri, { metrics: true })
      const before = {
        writes: (yield* Metric.value(calls("nbd_aio_pwrite"))).count,
        reads: (yield* Metric.value(calls("nbd_aio_pread"))).count,
        bytes: (yield* Metric.value(bytes)).count
      }
      yield* NbdCopy.copy(source, destination, { requestSize: REQUEST })
      expect((yield* Metric.value(calls("nbd_aio_pwrite"))).count).toBe(before.writes + SIZE / REQUEST)
      expect((yield* Metric.value(bytes)).count).toBe(before.bytes + SIZE)
      // The source's handle keeps no metrics.
      expect((yield* Metric.value(calls("nbd_aio_pread"))).count).toBe(before.reads)
    })
  )

  it.live("under a tracer: no span per request; the calls a copy makes are spans under the caller's", () =>
    Effect.gen(function* () {
      const s = yield* server
      const source = yield* connected(s.uri)
      yield* Nbd.pwrite(source, new Uint8Array(SIZE / 2).fill(3), 0)
      const destination = yield* connected(s.uri)
      const { spans, tracer } = recordingTracer()
      yield* NbdCopy.copy(source, destination, { requestSize: REQUEST, flush: true }).pipe(
        Effect.withSpan("outer"),
        Effect.withTracer(tracer)
      )
      const names = spans.map((span) => span.name)
      expect(names.filter((n) => /^nbd_aio_/.test(n))).toEqual([])
      expect(names).toEqual(expect.arrayContaining(["outer", "nbd_block_status", "nbd_flush"]))
      for (const span of spans) if (span.name !== "outer") expect(span.parent).toBe("outer")
      expect(spans.every((span) => span.ended)).toBe(true)
    })
  )
})
