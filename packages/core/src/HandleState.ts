/**
 * The lifecycle of a handle and libnbd's seven predicates over it, as pure functions.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type { NbdError } from "./NbdError.js"

/**
 * Where a handle is in its life.
 *
 * - `Created`: newly made, not connected (libnbd's START).
 * - `Connecting`: the handshake, or an option in flight in option mode.
 * - `Negotiating`: paused in option mode, waiting for the next `opt*` call.
 * - `Ready`: in the transmission phase, idle or with commands waiting for replies.
 * - `Processing`: in the transmission phase, in the middle of sending a request or receiving a reply.
 * - `Dead`: a fatal error ended the connection; `error` says which.
 * - `Closed`: the connection ended cleanly, or the handle was closed.
 *
 * @since 0.1.0
 * @category models
 */
export type HandleState = Data.TaggedEnum<{
  Created: {}
  Connecting: {}
  Negotiating: {}
  Ready: {}
  Processing: {}
  Dead: { readonly error: NbdError }
  Closed: {}
}>

const HandleState = Data.taggedEnum<HandleState>()

/**
 * @since 0.1.0
 * @category constructors
 */
export const Created: HandleState = HandleState.Created()
/**
 * @since 0.1.0
 * @category constructors
 */
export const Connecting: HandleState = HandleState.Connecting()
/**
 * @since 0.1.0
 * @category constructors
 */
export const Negotiating: HandleState = HandleState.Negotiating()
/**
 * @since 0.1.0
 * @category constructors
 */
export const Ready: HandleState = HandleState.Ready()
/**
 * @since 0.1.0
 * @category constructors
 */
export const Processing: HandleState = HandleState.Processing()
/**
 * @since 0.1.0
 * @category constructors
 */
export const Closed: HandleState = HandleState.Closed()
/**
 * @since 0.1.0
 * @category constructors
 */
export const Dead = (error: NbdError): HandleState => HandleState.Dead({ error })

/**
 * @since 0.1.0
 * @category predicates
 */
export const isCreated = (s: HandleState): boolean => s._tag === "Created"
/**
 * @since 0.1.0
 * @category predicates
 */
export const isConnecting = (s: HandleState): boolean => s._tag === "Connecting"
/**
 * @since 0.1.0
 * @category predicates
 */
export const isNegotiating = (s: HandleState): boolean => s._tag === "Negotiating"
/**
 * @since 0.1.0
 * @category predicates
 */
export const isReady = (s: HandleState): boolean => s._tag === "Ready"
/**
 * @since 0.1.0
 * @category predicates
 */
export const isProcessing = (s: HandleState): boolean => s._tag === "Processing"
/**
 * @since 0.1.0
 * @category predicates
 */
export const isDead = (s: HandleState): boolean => s._tag === "Dead"
/**
 * @since 0.1.0
 * @category predicates
 */
export const isClosed = (s: HandleState): boolean => s._tag === "Closed"

/**
 * Ready or Processing: libnbd's "connected with the server", where commands are permitted.
 * @since 0.1.0
 * @category predicates
 */
export const isConnected = (s: HandleState): boolean => s._tag === "Ready" || s._tag === "Processing"

/**
 * libnbd's short state name, used in messages ("START", "READY", ...).
 * @since 0.1.0
 * @category formatting
 */
export const shortName = (s: HandleState): string => {
  switch (s._tag) {
    case "Created":
      return "START"
    case "Connecting":
      return "CONNECTING"
    case "Negotiating":
      return "NEGOTIATING"
    case "Ready":
      return "READY"
    case "Processing":
      return "PROCESSING"
    case "Dead":
      return "DEAD"
    case "Closed":
      return "CLOSED"
  }
}
