/** What `Nbd.getPackageName` and `Nbd.getVersion` answer; a test keeps VERSION equal to package.json's. */
export const PACKAGE_NAME = "effect-nbd"

export const VERSION = "1.0.0"

/** What `Nbd.getVersionExtra` answers: a packager's build note (libnbd's --with-extra); none upstream. */
export const VERSION_EXTRA = ""
