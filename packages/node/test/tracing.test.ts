import { Nbd, NbdMetrics } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

const server = TestServer.make({ exports: [{ name: "disk", size: 1 << 20 }] }).pipe(Effect.orDie)

interface Recorded {
  readonly name: string
  readonly kind: Tracer.SpanKind
  readonly attributes: ReadonlyMap<string, unknown>
  ended: boolean
  failed: boolean
}

/** A tracer that keeps every span it starts, as a test's stand-in for an OpenTelemetry exporter. */
const recordingTracer = (): { readonly tracer: Tracer.Tracer; readonly spans: Array<Recorded> } => {
  const spans: Array<Recorded> = []
  const native = Effect.runSync(Effect.tracer)
  const tracer = Tracer.make({
    span: (options) => {
      const span = native.span(options)
      const recorded: Recorded = {
        name: options.name,
        kind: options.kind,
        attributes: span.attributes,
        ended: false,
        failed: false
      }
      spans.push(recorded)
      const end = span.end.bind(span)
      return Object.assign(span, {
        end: (endTime: bigint, exit: Parameters<typeof span.end>[1]) => {
          recorded.ended = true
          recorded.failed = exit._tag === "Failure"
          end(endTime, exit)
        }
      })
    }
  })
  return { tracer, spans }
}

describe("each call is a span when a tracer is installed", () => {
  it.live("named after the libnbd call, with the handle, export, server and arguments", () =>
    Effect.gen(function* () {
      const s = yield* server
      const { spans, tracer } = recordingTracer()
      yield* Effect.gen(function* () {
        const h = yield* Nbd.make({ handleName: "traced" })
        yield* NodeNbd.connectUri(h, s.uriFor("disk"))
        yield* Nbd.pwrite(h, new Uint8Array(4096).fill(7), 8192)
        yield* Nbd.pread(h, 4096, 8192)
        yield* Effect.result(Nbd.pread(h, 4096, 1 << 20))
      }).pipe(Effect.withTracer(tracer))
      const names = spans.map((span) => span.name)
      expect(names).toEqual(expect.arrayContaining(["nbd_connect_uri", "nbd_pwrite", "nbd_pread"]))
      const read = spans.find((span) => span.name === "nbd_pread")!
      expect(read.kind).toBe("client")
      expect(read.ended).toBe(true)
      expect(read.failed).toBe(false)
      expect(Object.fromEntries(read.attributes)).toMatchObject({
        "nbd.operation.name": "nbd_pread",
        "nbd.handle.name": "traced",
        "nbd.export.name": "disk",
        "nbd.offset": 8192,
        "nbd.count": 4096,
        "server.address": s.uriFor("disk")
      })
      // The read past the end failed its bounds check: its span says so.
      expect(spans.filter((span) => span.name === "nbd_pread").map((span) => span.failed)).toEqual([false, true])
    })
  )

  it.live("and no span at all with Effect's built-in tracer", () =>
    Effect.gen(function* () {
      const s = yield* server
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uriFor("disk"))
      const spanned = yield* Nbd.pread(h, 512, 0).pipe(
        Effect.andThen(Effect.currentSpan),
        Effect.option,
        Effect.map(Option.isSome)
      )
      // No span of ours is left current, nor was one made: reading the current span inside finds none.
      expect(spanned).toBe(false)
    })
  )
})

describe("metrics through Effect's Metric", () => {
  it.live("count calls by outcome and bytes by call, and time them, when asked for", () =>
    Effect.gen(function* () {
      const s = yield* server
      const calls = (call: string, outcome: string) => Metric.withAttributes(NbdMetrics.calls, { call, outcome })
      const bytes = Metric.withAttributes(NbdMetrics.bytes, { call: "nbd_pread" })
      const before = {
        reads: (yield* Metric.value(calls("nbd_pread", "success"))).count,
        failures: (yield* Metric.value(calls("nbd_pread", "failure"))).count,
        bytes: (yield* Metric.value(bytes)).count
      }
      const quiet = yield* Nbd.make()
      yield* NodeNbd.connectUri(quiet, s.uriFor("disk"))
      yield* Nbd.pread(quiet, 4096, 0)
      expect((yield* Metric.value(calls("nbd_pread", "success"))).count).toBe(before.reads)
      const h = yield* Nbd.make({ metrics: true })
      yield* NodeNbd.connectUri(h, s.uriFor("disk"))
      yield* Nbd.pread(h, 4096, 0)
      yield* Nbd.pread(h, 512, 4096)
      yield* Effect.result(Nbd.pread(h, 512, 1 << 20))
      expect((yield* Metric.value(calls("nbd_pread", "success"))).count).toBe(before.reads + 2)
      expect((yield* Metric.value(calls("nbd_pread", "failure"))).count).toBe(before.failures + 1)
      expect((yield* Metric.value(bytes)).count).toBe(before.bytes + 4608)
      const timer = yield* Metric.value(Metric.withAttributes(NbdMetrics.duration, { call: "nbd_pread" }))
      // A histogram's state: its buckets beside the count.
      expect(Array.isArray(timer.buckets)).toBe(true)
      expect(timer.count).toBeGreaterThanOrEqual(3)
    })
  )
})
