/**
 * @since 0.1.0
 */

/**
 * Export storage: the backend interface and the sparse memory, null and pattern backends.
 *
 * @since 0.1.0
 */
export * as Backend from "./Backend.js"

/**
 * The in-process NBD server and its layer.
 *
 * @since 0.1.0
 */
export * as TestServer from "./TestServer.js"

/**
 * A file or block device backend, like nbdkit's file plugin.
 *
 * @since 0.1.0
 */
export * as FileBackend from "./FileBackend.js"

/**
 * Filters over any backend, as nbdkit layers them: error, delay, read-only, nozero, notrim, noextents,
 * multi-conn, blocksize-policy, evil.
 *
 * @since 0.1.0
 */
export * as Filter from "./Filter.js"
