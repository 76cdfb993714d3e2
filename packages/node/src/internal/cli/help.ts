/**
 * `--help` and `--version` as libnbd's tools print them: a short usage, the defaults, examples, plain text
 * (no colour, so `--help | grep` and `--help | cat` read as they should).
 *
 * @since 0.2.0
 */
import * as Fs from "node:fs"
import * as Path from "node:path"

const root = `
NBD tools on effect-nbd, in the manner of libnbd's nbdinfo, nbdcopy, nbddump,
nbddiscard and nbdzero:

    effect-nbd info [OPTIONS] [NBD-URI | [ CMD ARGS ... ] | -- CMD ARGS ...]
    effect-nbd copy [OPTIONS] SOURCE DESTINATION
    effect-nbd dump [-n N] [NBD-URI | [ CMD ARGS ... ] | -- CMD ARGS ...]
    effect-nbd discard [OPTIONS] NBD-URI | [ CMD ARGS ... ] | -- CMD ARGS ...
    effect-nbd zero [OPTIONS] NBD-URI | [ CMD ARGS ... ] | -- CMD ARGS ...

Other options:

    effect-nbd SUBCOMMAND --help
    effect-nbd -V|--version

Examples:

    effect-nbd info nbd://localhost
    effect-nbd copy nbd://example.com local.img
    effect-nbd dump -- nbdkit -s memory 1G
    effect-nbd discard -y nbd://localhost

Without a URI, info and dump start an embedded test server (1M).
`

const info = `
Display information and metadata about NBD servers and exports:

    effect-nbd info [--json] [--content|--no-content] NBD-URI | [ CMD ARGS ... ]
    effect-nbd info --size [--json] NBD-URI | [ CMD ARGS ... ]
    effect-nbd info --is|--isnt read-only|rotational|tls NBD-URI | [ CMD ARGS ... ]
    effect-nbd info --can|--cannot block-status-payload|cache|connect|df|fast-zero|flush|
                    fua|multi-conn|open|read|trim|write|zero NBD-URI | [ CMD ARGS ... ]
    effect-nbd info --has|--hasnt extended-headers|structured-reply|CONTEXT NBD-URI
    effect-nbd info --map[=CONTEXT] [--totals] [--json] NBD-URI | [ CMD ARGS ... ]
    effect-nbd info -L|--list [--json] NBD-URI | [ CMD ARGS ... ]

  --map alone maps base:allocation; qemu's contexts work too (qemu:dirty-bitmap:NAME,
  qemu:allocation-depth). --can, --is and --has exit 0 when true, 2 when false,
  1 on error; --cannot, --isnt and --hasnt 0 when false, 2 when true. As in
  nbdinfo, the three are one question: each takes any feature. connect: the
  handshake works; open: the server opens the export; read: always, once
  connected; write: not read-only; tls: TLS was negotiated; CONTEXT: a meta
  context the server has (base:allocation, qemu:dirty-bitmap:NAME).
  --content (the default without --list) runs the first 8K through file(1).
  [ CMD ARGS ... ] starts a server by socket activation (nbdkit memory 1G);
  -- CMD ARGS ... runs a server on stdin/stdout (nbdkit -s memory 1G).
  Without a URI: an embedded test server.

Other options:

    effect-nbd info --help
    effect-nbd info --version

Examples:

    effect-nbd info nbd://localhost
    effect-nbd info "nbd+unix:///?socket=/tmp/unixsock"
    effect-nbd info --size nbd://example.com
    effect-nbd info --can connect nbd://example.com
    effect-nbd info --cannot trim nbd://example.com
    effect-nbd info --has extended-headers nbd://example.com
    effect-nbd info --map --totals nbd://example.com
    effect-nbd info --list --json nbd://example.com
    effect-nbd info -- nbdkit -s memory 1G
    effect-nbd info --map -- [ qemu-nbd -r -f qcow2 file.qcow2 ]
`

const copy = `
Copy to and from an NBD server:

    effect-nbd copy [--allocated] [--blkhash[=DIGEST[/SIZE]]] [--blkhash-file=FILE]
                    [-C N|--connections=N] [-R N|--requests=N] [--request-size=N]
                    [--queue-size=N] [-T N|--threads=N]
                    [--destination-is-zero|--target-is-zero] [--flush]
                    [--no-extents] [-p|--progress|--progress=FD]
                    [--reconnect-delay=SECONDS]
                    [-S N|--sparse=N] [--synchronous] [-v|--verbose]
                    SOURCE DESTINATION

    SOURCE, DESTINATION := - | FILE | DEVICE | NBD-URI | [ CMD ARGS ... ]
    DESTINATION += null:

Defaults (nbdcopy's): 4 connections (when the server advertises multi-conn),
64 requests in flight each, 256K per request (--request-size at most 32M),
--queue-size=16M in flight per connection (so at most 16M/request-size
requests); -T 0. nbdcopy runs one thread per connection: here the engine is
single-threaded, so -T N caps the connections at N and -T 0 leaves them to
-C. -S 4096 (or an NBD destination's preferred block size, if larger): zero
blocks of that size become holes or zeroes (-S 0 writes every byte as data);
--allocated writes zeroes, never holes. An NBD destination is flushed at the
end (--flush also fsyncs a file). --progress=FD writes "N/100" lines to FD;
-p draws a bar with the rate and time left on stderr.
--blkhash prints libnbd's block hash of the data copied (default sha256 over
64K blocks; DIGEST is any of node's, e.g. md5, sha512/512k), with any
destination (to - give --blkhash-file).
--reconnect-delay=SECONDS (qemu's name; default 0: never): when a server
drops the connection, its side tries to reconnect every 100 ms for that long,
and the requests waiting are sent again; the copy fails only if it cannot.

Other options:

    effect-nbd copy --help
    effect-nbd copy -V|--version

Examples:

    effect-nbd copy nbd://example.com local.img
    effect-nbd copy -C4 -R64 --request-size=1M local.img nbd://example.com
    effect-nbd copy nbd://example.com - | file -
    effect-nbd copy --blkhash nbd://example.com null:
    effect-nbd copy -T2 --queue-size=4M --allocated nbd://example.com local.img
    effect-nbd copy --reconnect-delay=60 nbd://example.com local.img
    cat disk1 disk2 | effect-nbd copy -- - [ qemu-nbd -f qcow2 output.qcow2 ]
`

const dump = `
Hexdump the content of a disk over NBD:

    effect-nbd dump [-n N|--length=N] NBD-URI | [ CMD ARGS ... ] | -- CMD ARGS ...

  -n N dumps at most N bytes (suffixes K, M, G). Without a URI: an embedded test server.

Other options:

    effect-nbd dump --help
    effect-nbd dump --version

Examples:

    effect-nbd dump nbd://localhost
    effect-nbd dump -- [ qemu-nbd -r -f qcow2 file.qcow2 ]
`

const discard = `
Discard all data (or a range) of an NBD export, like nbddiscard:

    effect-nbd discard [-c|--check] [-z|--zero] [--fast-zero] [-q|--quiet]
                       [-v|--verbose] [-y|--yes] [-o|--offset OFFSET] [-l|--length LENGTH]
                       NBD-URI | [ CMD ARGS ... ] | -- CMD ARGS ...

  Frees the range with NBD_CMD_TRIM (a server without trim keeps its data,
  with a warning that -q silences); -z writes allocated zeroes instead, as
  effect-nbd zero does, and --fast-zero (which implies -z) zeroes with
  NBD_CMD_FLAG_FAST_ZERO, failing at once if the server cannot zero fast.
  All data in the range is PERMANENTLY ERASED: it asks first (y/N on stdin)
  unless -y. The range: -o OFFSET (default 0), -l LENGTH bytes (default: to
  the end), with suffixes K, M, G, T. -c changes nothing: exit status 0 if
  the range is already sparse (with -z: reads as zeroes), 2 if not. Exit
  status 1 on any error.

Other options:

    effect-nbd discard --help
    effect-nbd discard --version

Examples:

    effect-nbd discard nbd://localhost
    effect-nbd discard -y -o 1M -l 64K nbd://localhost
    effect-nbd discard --check nbd://localhost
`

const zero = `
Zero all data (or a range) of an NBD export, like nbdzero:

    effect-nbd zero [-c|--check] [--fast-zero] [-q|--quiet] [-v|--verbose]
                    [-y|--yes] [-o|--offset OFFSET] [-l|--length LENGTH]
                    NBD-URI | [ CMD ARGS ... ] | -- CMD ARGS ...

  Replaces the range with allocated zeroes: NBD_CMD_WRITE_ZEROES with
  NO_HOLE, or zeroes written as data when the server cannot zero.
  --fast-zero zeroes with NBD_CMD_FLAG_FAST_ZERO, failing at once if the
  server cannot zero fast. All data in the range is PERMANENTLY ERASED: it
  asks first (y/N on stdin) unless -y. The range: -o OFFSET (default 0),
  -l LENGTH bytes (default: to the end), with suffixes K, M, G, T. -c changes
  nothing: exit status 0 if the range already reads as zeroes, 2 if not.
  Exit status 1 on any error.

Other options:

    effect-nbd zero --help
    effect-nbd zero --version

Examples:

    effect-nbd zero nbd://localhost
    effect-nbd zero -y --fast-zero -o 1M -l 64K nbd://localhost
    effect-nbd zero --check nbd://localhost
`

/**
 * The help text of a subcommand, or of the whole command.
 * @since 0.2.0
 * @category help
 */
export const text = (subcommand: string | undefined): string =>
  subcommand === "info"
    ? info
    : subcommand === "copy"
      ? copy
      : subcommand === "dump"
        ? dump
        : subcommand === "discard"
          ? discard
          : subcommand === "zero"
            ? zero
            : root

/**
 * The package.json of @effect-nbd/node, found upwards from the script that runs (dist/bin.js, or the bin in
 * dist/cli/, through any node_modules/.bin link); the bundle is CommonJS, so `import.meta` is not at hand.
 */
const manifest = (): { readonly name: string; readonly version: string } => {
  let dir = Path.dirname(Fs.realpathSync(process.argv[1] ?? "."))
  for (let i = 0; i < 5; i++) {
    const file = Path.join(dir, "package.json")
    if (Fs.existsSync(file)) {
      const json = JSON.parse(Fs.readFileSync(file, "utf8")) as { name?: string; version?: string }
      if (json.name === "@effect-nbd/node" && json.version !== undefined)
        return { name: json.name, version: json.version }
    }
    dir = Path.dirname(dir)
  }
  return { name: "@effect-nbd/node", version: "unknown" }
}

/**
 * What `-V` prints: the command, then its package, each with the version (as nbdinfo prints itself and
 * libnbd).
 * @since 0.2.0
 * @category help
 */
export const version = (): string => {
  const m = manifest()
  return `effect-nbd ${m.version}\n${m.name} ${m.version}\n`
}
