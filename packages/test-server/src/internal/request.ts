/**
 * The request a backend call serves, as the server tells the filters under it.
 *
 * @internal
 */
import * as Context from "effect/Context"
import type * as Backend from "../Backend.js"

/**
 * A request the server is serving: its ordinal, and what a fault drew for it once for several filters (a
 * fault with a delay and an error is two filters that must act on the same requests: internal/faults.ts).
 * @internal
 */
export class Served implements Backend.Request {
  /** Each shared draw's outcome for this request, by the draw that made it; none until a fault draws. */
  private draws: Map<object, boolean> | undefined = undefined

  constructor(readonly ordinal: number) {}

  /** What `by` drew for this request: drawn with `draw` the first time, then the same. */
  drawOnce(by: object, draw: () => boolean): boolean {
    this.draws ??= new Map()
    let fire = this.draws.get(by)
    if (fire === undefined) {
      fire = draw()
      this.draws.set(by, fire)
    }
    return fire
  }
}

/**
 * Set by the server around each request it hands to the backend; undefined for a call made outside a
 * server. Internal: the filters' triggers (`nth`, `when`) are how it is read.
 * @internal
 */
export const currentRequest: Context.Reference<Served | undefined> = Context.Reference<Served | undefined>(
  "@effect-nbd/test-server/currentRequest",
  { defaultValue: () => undefined }
)
