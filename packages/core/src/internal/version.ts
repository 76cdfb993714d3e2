/** What `Nbd.getPackageName` and `Nbd.getVersion` answer; a test keeps VERSION equal to package.json's. */
export const PACKAGE_NAME = "effect-nbd"

export const VERSION = "0.1.0"
