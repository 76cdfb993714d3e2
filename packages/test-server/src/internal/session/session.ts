/**
 * One client connection as a protocol engine with no I/O: bytes in (`receive`), replies and the end of the
 * connection out through callbacks (`send`, `end`), requests' services handed to `fork`. It owns the
 * decoder and the phase (client flags, options, STARTTLS, transmission, closing), the handshake that
 * negotiates (handshake.ts) and, once an export is chosen, the transmission phase that serves it
 * (transmission.ts); connection.ts drives it on a socket.
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import type * as Effect from "effect/Effect"
import type * as Flow from "../flow.js"
import * as Handshake from "./handshake.js"
import type * as Settings from "./settings.js"
import * as Transmission from "./transmission.js"

/**
 * The largest request payload read and discarded to refuse it with an error: over the maximum payload a
 * client must not send, a payload up to 32 MiB (the default maximum, which a server must not treat as an
 * attack) is consumed so that the connection stays usable; a larger one ends the connection at its header,
 * before any of it is read.
 */
const maxSkip = (maximum: number): number => Math.max(maximum, Protocol.Limits.DEFAULT_PAYLOAD_MAX)

const EMPTY = new Uint8Array(0)

/** @internal */
export class Session {
  private phase: "flags" | "options" | "starttls" | "transmission" | "closing" = "flags"
  private readonly decoder: ServerCodec.Decoder
  private readonly handshake: Handshake.Handshake
  /** The transmission phase, once the handshake chose an export. */
  private transmission: Transmission.Transmission | undefined = undefined
  /** The decode loop is running: a resume from inside it must not start a second one. */
  private decoding = false
  /** The client half-closed: once every request it sent is decoded, the session ends gracefully. */
  private clientDone = false

  constructor(
    readonly settings: Settings.Settings,
    readonly flow: Flow.Flow,
    readonly send: (out: ReadonlyArray<Uint8Array>) => void,
    /** Runs a request's service concurrently; `cost` is what it holds until answered. */
    readonly fork: (effect: Effect.Effect<void>, cost: number) => void,
    readonly end: (how: Settings.Ending) => void,
    /** After the STARTTLS ACK: upgrades the connection, giving it the bytes already received. */
    readonly startTls: (received: Uint8Array) => void
  ) {
    this.decoder = ServerCodec.makeDecoder({
      phase: settings.protocol === "oldstyle" ? "transmission" : "newstyle",
      maxPayload: settings.blockSize.maximum,
      maxSkip: maxSkip(settings.blockSize.maximum),
      payloadBuffer: (length) => this.transmission?.payloadBuffer(length)
    })
    this.handshake = new Handshake.Handshake(settings, {
      send,
      close: (how) => this.close(how),
      startTls: () => {
        this.phase = "starttls"
        this.startTls(this.decoder.takeBuffered())
      },
      enterTransmission: (exp) => this.enterTransmission(exp)
    })
  }

  start(): void {
    const settings = this.settings
    if (settings.protocol === "oldstyle") {
      const exp = settings.exports[0]!
      const flags = this.enterTransmission(exp)
      this.send([ServerCodec.oldstyleGreeting(exp.size, flags)])
      return
    }
    let flags = settings.noZeroes ? Protocol.FLAG_NO_ZEROES : 0
    if (settings.protocol === "fixed-newstyle") flags |= Protocol.FLAG_FIXED_NEWSTYLE
    this.send([ServerCodec.newstyleGreeting(flags)])
  }

  receive(chunk: Uint8Array): void {
    if (this.phase === "closing") return
    if (chunk.length > 0) this.decoder.push(chunk)
    if (this.decoding) return
    this.decoding = true
    try {
      this.decode()
    } finally {
      this.decoding = false
    }
  }

  /** The flow has drained after a pause: decode what is buffered, then read again. */
  resume(): void {
    this.receive(EMPTY)
  }

  /** The client sent its FIN: end once what it sent before is decoded (some may wait behind a pause). */
  clientEnded(): void {
    if (this.phase === "starttls") return this.close("graceful")
    this.clientDone = true
    this.receive(EMPTY)
  }

  private decode(): void {
    for (;;) {
      // Backpressure: owing too much, read no further; the bytes wait in the decoder and the socket.
      if (this.flow.full) return this.flow.pause()
      const message = this.decoder.next()
      if (message === undefined) {
        if (this.clientDone) this.close("graceful")
        return
      }
      switch (message._tag) {
        case "ServerCodecDecodeError":
          return this.close("hard")
        case "ClientFlags":
          if (!this.handshake.clientFlags(message.flags)) return this.close("hard")
          this.phase = "options"
          break
        case "Option":
          this.handshake.option(message)
          break
        case "Request":
          // The decoder gives requests only in the transmission phase.
          this.transmission!.request(message)
          break
      }
      if (this.closing() || this.phase === "starttls") return
    }
  }

  /**
   * TLS is active: the handshake's options start afresh (NBD_OPT_STARTTLS makes the server forget structured
   * replies, extended headers and meta contexts).
   */
  tlsStarted(): void {
    if (this.phase !== "starttls") return
    this.handshake.tlsStarted()
    this.phase = "options"
  }

  private closing(): boolean {
    return this.phase === "closing"
  }

  private close(how: Settings.Ending): void {
    this.phase = "closing"
    this.end(how)
  }

  /** Starts the transmission phase on `exp` with what the handshake settled; gives its transmission flags. */
  private enterTransmission(exp: Settings.ResolvedExport): number {
    const negotiated = this.handshake.negotiated(exp)
    const transmission = new Transmission.Transmission(this.settings, exp, negotiated, {
      send: this.send,
      fork: this.fork,
      close: (how) => this.close(how)
    })
    this.transmission = transmission
    this.phase = "transmission"
    this.decoder.startTransmission(negotiated.extended)
    return transmission.flags
  }
}
