// Package routing decides where mail for an address goes. It parses
// envelope addresses, asks directory sources (LDAP, an LDIF file) what an
// address rewrites to, and expands aliases the way Postfix's cleanup expands
// virtual_alias_maps: recursively, with fan-out, self-mapping addresses as
// final, and limits that defer instead of truncating.
//
// Routing answers at RCPT time with the same resolver that decides delivery,
// so an address is never accepted that routing would later refuse.
//
// Where things are, in this package:
//   - alias expansion: expand.go (Expander.expand), over the Source
//     interface of source.go;
//   - the directory sources: ldap.go and ldap_table.go (live LDAP, Postfix
//     ldap_table semantics), postfixcf.go (a Postfix .cf read unchanged),
//     ldif.go, the live replica replica*.go (RFC 4533), cache.go;
//   - addresses and their wire form: address.go, external.go;
//   - the SRS codec (formats, hashes, postsrsd compatibility) is its own
//     package, routing/srs, with its sender stores in routing/srsstore.
//     Whether a forward's sender is rewritten, and what a bounce may do, is
//     decided by the front end, in relay/srs.go.
package routing
