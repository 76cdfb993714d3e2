/**
 * Systemd socket activation, read before anything else in the bin: which descriptors the parent passed,
 * and stdout set aside. No Effect import here: this module must load before Effect's, see `stdoutSetAside`.
 *
 * @internal
 */
import * as Fs from "node:fs"

/**
 * The listening sockets systemd socket activation passed (sd_listen_fds(3)): fds 3 to 3 + LISTEN_FDS - 1
 * when LISTEN_PID is this process, as nbdkit reads them. Gives none without both variables; none with
 * `ignored` set when they were meant for another process or are not numbers; none with `error` set when
 * LISTEN_FDS is out of nbdkit's range (1 to 16).
 * @internal
 */
export const activatedFds = (
  env: Readonly<Record<string, string | undefined>>,
  pid: number
): { readonly fds: ReadonlyArray<number>; readonly ignored?: string; readonly error?: string } => {
  const listenPid = env["LISTEN_PID"]
  const listenFds = env["LISTEN_FDS"]
  if (listenPid === undefined || listenFds === undefined) return { fds: [] }
  if (Number(listenPid) !== pid) return { fds: [], ignored: "LISTEN_PID was not for us (ignored)" }
  if (!/^[0-9]+$/.test(listenFds)) return { fds: [], ignored: `LISTEN_FDS=${listenFds} is not a number (ignored)` }
  const count = Number(listenFds)
  if (count < 1 || count > 16) return { fds: [], error: `socket activation: LISTEN_FDS=${listenFds} out of range` }
  return { fds: Array.from({ length: count }, (_, i) => 3 + i) }
}

/**
 * Points fd 1 at /dev/null when it is a pipe or a socket. A socket-activated server shares its client's
 * stdout (`nbdcopy -- [ effect-nbd-server ... ] -` writes the disk there), and Node opens a pipe on fd 1 in
 * non-blocking mode as soon as anything reads `process.stdout` (Effect's logger does, when it loads): the
 * client's own writes would then fail with EAGAIN. The server prints nothing in that mode. Closing fd 1 and
 * opening /dev/null is dup2 without dup2: the lowest free descriptor is reused.
 */
const setStdoutAside = (): boolean => {
  try {
    const stat = Fs.fstatSync(1)
    if (!stat.isFIFO() && !stat.isSocket()) return false
    Fs.closeSync(1)
    const fd = Fs.openSync("/dev/null", "w")
    if (fd !== 1) Fs.closeSync(fd)
    return fd === 1
  } catch {
    return false
  }
}

/** @internal */
export const activation = activatedFds(process.env, process.pid)

/**
 * Whether stdout was set aside; done when this module loads, so before any module that reads
 * `process.stdout`.
 * @internal
 */
export const stdoutSetAside: boolean = activation.fds.length > 0 && setStdoutAside()
