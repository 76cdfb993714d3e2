/**
 * How `effect-nbd copy`'s parallelism options become the copy's connections and requests in flight, as
 * nbdcopy reads them: `-C` connections, `-R` requests per connection, `--queue-size` bytes in flight per
 * connection (so at most queue-size / request-size requests, and always one), and `-T` threads. nbdcopy
 * runs one worker thread per connection and never more connections than threads, and `-T 0` (the default)
 * is as many threads as the machine has processors: so `-T N` caps the connections at N, and `-T 0` at the
 * processors this process may run on, as nbdcopy's do (on a 2-core machine nbdcopy's default and `-C 4`
 * both run 2 connections). `--synchronous` is one connection with one request.
 *
 * @since 0.2.0
 */

/**
 * The options as given on the command line.
 * @since 0.2.0
 * @category models
 */
export interface Given {
  readonly connections: number
  readonly requests: number
  readonly requestSize: number
  readonly queueSize: number
  readonly threads: number
  readonly synchronous: boolean
  /** What `-T 0` stands for: the processors this process may run on. */
  readonly processors: number
}

/**
 * What the copy runs with.
 * @since 0.2.0
 * @category models
 */
export interface Limits {
  readonly connections: number
  readonly requests: number
}

/**
 * nbdcopy's defaults: 16 MiB in flight per connection (64 requests of 256 KiB), threads autodetected.
 * @since 0.2.0
 * @category defaults
 */
export const defaults = { queueSize: "16M", threads: 0 } as const

/** The most connections a side opens, as NbdPool allows. */
const MAX_CONNECTIONS = 64
/** The most requests in flight per connection, as NbdCopy allows. */
const MAX_REQUESTS = 1024

const between = (name: string, n: number, min: number, max: number): string | undefined =>
  Number.isInteger(n) && n >= min && n <= max
    ? undefined
    : `${name}: must be between ${min} and ${max}, got ${n} (EINVAL)`

/**
 * The connections and requests in flight for the options, or the one-line error of the first bad one.
 * @since 0.2.0
 * @category parsing
 */
export const resolve = (given: Given): { readonly limits: Limits } | { readonly error: string } => {
  const error =
    between("--connections", given.connections, 1, MAX_CONNECTIONS) ??
    between("--requests", given.requests, 1, MAX_REQUESTS) ??
    between("--threads", given.threads, 0, MAX_CONNECTIONS) ??
    (Number.isSafeInteger(given.queueSize) && given.queueSize >= 1
      ? undefined
      : `--queue-size: must be 1 or more, got ${given.queueSize} (EINVAL)`)
  if (error !== undefined) return { error }
  if (given.synchronous) return { limits: { connections: 1, requests: 1 } }
  // A queue smaller than one request still lets one through, as nbdcopy always starts one.
  const fit = Math.max(1, Math.floor(given.queueSize / given.requestSize))
  return {
    limits: {
      connections: Math.min(given.connections, given.threads === 0 ? Math.max(1, given.processors) : given.threads),
      requests: Math.min(given.requests, fit)
    }
  }
}
