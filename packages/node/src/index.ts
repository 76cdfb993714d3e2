/**
 * @since 0.1.0
 */
export * as NodeNbd from "./NodeNbd.js"
/**
 * @since 0.2.0
 */
export * as NodePositionalFile from "./NodePositionalFile.js"
