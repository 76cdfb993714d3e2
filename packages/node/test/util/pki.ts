/**
 * X.509 credentials for TLS tests, made with GnuTLS's certtool as nbdkit-tls(1) describes: a CA, and
 * certificates it signs (`NAME-cert.pem`, `NAME-key.pem`) in the same folder.
 */
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"

export const certtool = (dir: string, args: ReadonlyArray<string>): void => {
  execFileSync("certtool", [...args], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] })
}

/** ca-key.pem and ca-cert.pem in `dir`. */
export const makeCa = (dir: string): void => {
  Fs.mkdirSync(dir, { recursive: true })
  certtool(dir, ["--generate-privkey", "--outfile", "ca-key.pem"])
  Fs.writeFileSync(Path.join(dir, "ca.info"), "cn = effect-nbd test CA\nca\ncert_signing_key\nexpiration_days = 30\n")
  certtool(dir, [
    "--generate-self-signed",
    "--load-privkey",
    "ca-key.pem",
    "--template",
    "ca.info",
    "--outfile",
    "ca-cert.pem"
  ])
}

/** `NAME-key.pem` and `NAME-cert.pem` in `dir`, signed by the CA there, from a certtool template. */
export const makeCert = (dir: string, name: string, template: string): void => {
  certtool(dir, ["--generate-privkey", "--outfile", `${name}-key.pem`])
  Fs.writeFileSync(Path.join(dir, `${name}.info`), template)
  certtool(dir, [
    "--generate-certificate",
    "--load-ca-certificate",
    "ca-cert.pem",
    "--load-ca-privkey",
    "ca-key.pem",
    "--load-privkey",
    `${name}-key.pem`,
    "--template",
    `${name}.info`,
    "--outfile",
    `${name}-cert.pem`
  ])
}
