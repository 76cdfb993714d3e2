import { Nbd, NbdError } from "@effect-nbd/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"

const longName = "x".repeat(5000)

/** A setting `make` must refuse, and the setter call that refuses the same value on a new handle. */
interface Bad {
  readonly settings: Nbd.Settings
  readonly errno: string
  readonly setter: (h: Nbd.Handle) => Effect.Effect<void, NbdError.NbdError>
}

// Values outside the types are what JavaScript callers and decoded configuration can pass.
const unchecked = <A>(value: unknown): A => value as A

const bad: ReadonlyArray<readonly [string, Bad]> = [
  [
    "handshakeFlags 99",
    { settings: { handshakeFlags: 99 }, errno: "EINVAL", setter: (h) => Nbd.setHandshakeFlags(h, 99) }
  ],
  [
    "handshakeFlags 1.5",
    { settings: { handshakeFlags: 1.5 }, errno: "EINVAL", setter: (h) => Nbd.setHandshakeFlags(h, 1.5) }
  ],
  ["strictMode -1", { settings: { strictMode: -1 }, errno: "EINVAL", setter: (h) => Nbd.setStrictMode(h, -1) }],
  ["strictMode 0x80", { settings: { strictMode: 0x80 }, errno: "EINVAL", setter: (h) => Nbd.setStrictMode(h, 0x80) }],
  [
    "tls bogus",
    {
      settings: { tls: unchecked<Nbd.TlsMode>("bogus") },
      errno: "EINVAL",
      setter: (h) => Nbd.setTls(h, unchecked<Nbd.TlsMode>("bogus"))
    }
  ],
  [
    "exportName of 5000 bytes",
    { settings: { exportName: longName }, errno: "ENAMETOOLONG", setter: (h) => Nbd.setExportName(h, longName) }
  ],
  [
    "a meta context of 5000 bytes",
    {
      settings: { metaContexts: ["base:allocation", longName] },
      errno: "ENAMETOOLONG",
      setter: (h) => Nbd.addMetaContext(h, longName)
    }
  ],
  [
    "a meta context that is not a string",
    {
      settings: { metaContexts: unchecked<ReadonlyArray<string>>([42]) },
      errno: "EINVAL",
      setter: (h) => Nbd.addMetaContext(h, unchecked<string>(42))
    }
  ],
  [
    "handleName not a string",
    {
      settings: { handleName: unchecked<string>(7) },
      errno: "EINVAL",
      setter: (h) => Nbd.setHandleName(h, unchecked<string>(7))
    }
  ],
  [
    "optMode not a boolean",
    {
      settings: { optMode: unchecked<boolean>("yes") },
      errno: "EINVAL",
      setter: (h) => Nbd.setOptMode(h, unchecked<boolean>("yes"))
    }
  ],
  [
    "tlsVerifyPeer not a boolean",
    {
      settings: { tlsVerifyPeer: unchecked<boolean>(1) },
      errno: "EINVAL",
      setter: (h) => Nbd.setTlsVerifyPeer(h, unchecked<boolean>(1))
    }
  ],
  [
    "tlsPskFile not a string",
    {
      settings: { tlsPskFile: unchecked<string>({}) },
      errno: "EINVAL",
      setter: (h) => Nbd.setTlsPskFile(h, unchecked<string>({}))
    }
  ],
  [
    "preadInitialize not a boolean",
    {
      settings: { preadInitialize: unchecked<boolean>(0) },
      errno: "EINVAL",
      setter: (h) => Nbd.setPreadInitialize(h, unchecked<boolean>(0))
    }
  ],
  [
    "debug not a boolean",
    {
      settings: { debug: unchecked<boolean>("on") },
      errno: "EINVAL",
      setter: (h) => Nbd.setDebug(h, unchecked<boolean>("on"))
    }
  ]
]

describe("Nbd.make checks every setting as its setter does", () => {
  for (const [what, { errno, setter, settings }] of bad) {
    it.effect(`${what}: make fails ${errno}, as the setter does`, () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(Nbd.make(settings))
        expect(error._tag).toBe("InvalidArgumentError")
        expect(error.errno).toBe(errno)
        expect(error.operation).toBe("nbd_create")
        expect(error.message).toContain(Object.keys(settings)[0]!)
        const refused = yield* Effect.flip(Effect.flatMap(Nbd.make(), setter))
        expect(refused._tag).toBe("InvalidArgumentError")
        expect(refused.errno).toBe(errno)
      })
    )
  }

  it.effect("the issue's example is refused as a whole", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Nbd.make({
          handshakeFlags: 99,
          strictMode: -1,
          tls: unchecked<Nbd.TlsMode>("bogus"),
          exportName: longName
        })
      )
      expect(NbdError.isNbdError(error)).toBe(true)
      expect(error.errno).toBe("EINVAL")
    })
  )

  it.effect("an unknown setting is refused", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Nbd.make(unchecked<Nbd.Settings>({ exportname: "typo" })))
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toContain("exportname")
    })
  )

  it.effect("good settings are taken, and the getters give them back", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make({
        exportName: "é".repeat(2048),
        handleName: "mine",
        tls: "allow",
        handshakeFlags: Nbd.HandshakeFlag.FIXED_NEWSTYLE,
        strictMode: 0,
        metaContexts: ["base:allocation"],
        optMode: true,
        preadInitialize: false,
        debug: false
      })
      expect(yield* Nbd.getExportName(h)).toBe("é".repeat(2048))
      expect(yield* Nbd.getHandleName(h)).toBe("mine")
      expect(yield* Nbd.getTls(h)).toBe("allow")
      expect(yield* Nbd.getHandshakeFlags(h)).toBe(1)
      expect(yield* Nbd.getStrictMode(h)).toBe(0)
      expect(yield* Nbd.getMetaContexts(h)).toEqual(["base:allocation"])
      expect(yield* Nbd.getOptMode(h)).toBe(true)
      expect(yield* Nbd.getPreadInitialize(h)).toBe(false)
      expect(yield* Nbd.getDebug(h)).toBe(false)
    })
  )
})
