/**
 * @since 0.1.0
 */
export * as ClientCodec from "./ClientCodec.js"
/**
 * @since 0.1.0
 */
export * as HandleState from "./HandleState.js"
/**
 * @since 0.1.0
 */
export * as Nbd from "./Nbd.js"
/**
 * @since 0.1.0
 */
export * as NbdError from "./NbdError.js"
/**
 * @since 0.1.0
 */
export * as Protocol from "./Protocol.js"
/**
 * @since 0.1.0
 */
export * as NbdUri from "./NbdUri.js"
/**
 * @since 0.2.0
 */
export * as Transport from "./Transport.js"
/**
 * @since 0.2.0
 */
export * as NbdMetrics from "./NbdMetrics.js"
/**
 * @since 0.2.0
 */
export * as NbdCopy from "./NbdCopy.js"
/**
 * @since 0.2.0
 */
export * as NbdPool from "./NbdPool.js"
/**
 * @since 0.2.0
 */
export * as NbdStream from "./NbdStream.js"
/**
 * @since 0.2.0
 */
export * as TlsPsk from "./TlsPsk.js"
/**
 * @since 0.3.0
 */
export * as TlsPriority from "./TlsPriority.js"
/**
 * @since 0.2.0
 */
export * as NbdClient from "./NbdClient.js"
/**
 * @since 0.2.0
 */
export * as PositionalFile from "./PositionalFile.js"
