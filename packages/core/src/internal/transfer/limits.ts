/**
 * A transfer's defaults and limits (nbdcopy's request size and count, the largest zero extent and block-status
 * range). The checks of the numbers an entry point is given are the handle's own (../arguments.ts).
 */

/** nbdcopy's defaults: 256 KiB requests, 64 in flight per connection. */
export const DEFAULT_REQUEST_SIZE = 256 * 1024
export const DEFAULT_REQUESTS = 64
export const MAX_REQUESTS = 1024

/** The largest zero extent handed out at once (one NBD_CMD_WRITE_ZEROES), and the largest block-status range. */
export const MAX_ZERO = 1 << 30
export const MAX_STATUS = 1 << 30
