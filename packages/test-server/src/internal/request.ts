/**
 * The request a backend call serves, as the server tells the filters under it.
 *
 * @internal
 */
import * as FiberRef from "effect/FiberRef"
import * as GlobalValue from "effect/GlobalValue"
import type * as Backend from "../Backend.js"

/**
 * Set by the server around each request it hands to the backend; undefined for a call made outside a
 * server. Internal: the filters' triggers (`nth`, `when`) are how it is read.
 * @internal
 */
export const currentRequest: FiberRef.FiberRef<Backend.Request | undefined> = GlobalValue.globalValue(
  "@effect-nbd/test-server/currentRequest",
  () => FiberRef.unsafeMake<Backend.Request | undefined>(undefined)
)
