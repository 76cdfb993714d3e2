import * as NbdUri from "../../NbdUri.js"
import type { HandleImpl } from "./handle.js"

/**
 * The URI that reconnects to where the handle is connected, the same way (libnbd's nbd_get_uri): the
 * transport's address with the handle's current export name and TLS settings; undefined when the transport
 * gave no address (an inherited socket).
 */
export const uriOf = (h: HandleImpl): string | undefined => {
  const address = h.transport?.address()
  if (address === undefined) return undefined
  const s = h.settings
  const query = new Map<string, string>()
  if (s.tlsCertificates !== undefined) query.set("tls-certificates", s.tlsCertificates)
  if (s.tlsPskFile !== undefined) query.set("tls-psk-file", s.tlsPskFile)
  if (s.tlsHostname !== undefined && s.tlsHostname !== "") query.set("tls-hostname", s.tlsHostname)
  if (!s.tlsVerifyPeer) query.set("tls-verify-peer", "false")
  return NbdUri.format({
    transport: address,
    tls: s.tls === "require" || h.agreement.tlsNegotiated,
    exportName: s.exportName,
    ...(s.tlsUsername === undefined ? {} : { username: s.tlsUsername }),
    query
  })
}
