import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import { fileReader, fileWriter } from "../src/internal/transfer/fileSides.js"
import type { Started } from "../src/internal/transfer/sides.js"

// Files without positional I/O (a handle per lane, seek then read or write, in a fiber per I/O): what
// stopping one of their I/O promises.

const SIZE = 64 * 1024

/**
 * A file whose reads and writes run as Node's do under FileSystem (a callback API made an effect): once
 * begun they run to their end, even when the fiber that waits for them is interrupted. `busy` counts those
 * still running: a read fills its buffer only as it ends.
 */
const slowFile = () => {
  const state = { busy: 0 }
  const io = (buffer: Uint8Array, n: number) =>
    Effect.callback<number>((resume) => {
      state.busy++
      setTimeout(() => {
        buffer.fill(0xff)
        state.busy--
        resume(Effect.succeed(n))
      }, 30)
    })
  const file = {
    [FileSystem.FileTypeId]: FileSystem.FileTypeId,
    stat: Effect.succeed({ size: BigInt(SIZE), type: "File" }),
    seek: () => Effect.succeed(0n),
    sync: Effect.void,
    truncate: () => Effect.void,
    read: (buffer: Uint8Array) => io(buffer, buffer.length),
    write: (buffer: Uint8Array) => io(new Uint8Array(0), buffer.length),
    writeAll: (buffer: Uint8Array) => Effect.asVoid(io(new Uint8Array(0), buffer.length))
  } as unknown as FileSystem.File
  const fs = FileSystem.makeNoop({ open: () => Effect.succeed(file) })
  return { state, fs }
}

/** Starts an I/O, stops it while it runs, and answers how many were still running when its `done` came. */
const stopWhileRunning = (state: { busy: number }, start: (done: () => void) => Started) =>
  Effect.gen(function* () {
    let busyAtDone: number | undefined
    const started = start(() => {
      busyAtDone = state.busy
    })
    yield* Effect.sleep("5 millis")
    expect(state.busy).toBe(1)
    // It cannot be stopped at once: its `done` still comes, once it has ended.
    expect(started.cancel()).toBe(false)
    for (let i = 0; i < 200 && busyAtDone === undefined; i++) yield* Effect.sleep("1 millis")
    return busyAtDone
  })

describe("file sides without positional I/O", () => {
  it.live("a read stopped while it runs ends only once the file system has let go of its buffer", () =>
    Effect.gen(function* () {
      const { state, fs } = slowFile()
      const reader = yield* fileReader("source", 1).pipe(Effect.provideService(FileSystem.FileSystem, fs))
      const buffer = new Uint8Array(4096)
      expect(yield* stopWhileRunning(state, (done) => reader.read(0, 0, buffer.length, buffer, done))).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live("a write stopped while it runs ends only once the file system has let go of its data", () =>
    Effect.gen(function* () {
      const { state, fs } = slowFile()
      const writer = yield* fileWriter("destination", 1, undefined, false, false).pipe(
        Effect.provideService(FileSystem.FileSystem, fs)
      )
      const data = new Uint8Array(4096)
      expect(yield* stopWhileRunning(state, (done) => writer.write(0, 0, data, done))).toBe(0)
    }).pipe(Effect.scoped)
  )
})
