/**
 * @since 0.1.0
 */
export * as NodeNbd from "./NodeNbd.js"
