// Package routing decides where mail for an address goes. It parses
// envelope addresses, asks a directory Source what an address rewrites to,
// and expands aliases the way Postfix's cleanup expands virtual_alias_maps:
// recursively, with fan-out, self-mapping addresses as final, and limits
// that defer instead of truncating.
//
// Routing answers at RCPT time with the same resolver that decides delivery,
// so an address is never accepted that routing would later refuse.
//
// Where things are:
//   - alias expansion: expand.go (Expander.expand), over the Source
//     interface of source.go (a Match, ErrNotFound, ErrUnavailable);
//   - addresses and their wire form: address.go, external.go;
//   - the directory sources are their own package, routing/directory: live
//     LDAP and Postfix ldap_table semantics, a Postfix .cf read unchanged,
//     LDIF, the live replica (RFC 4533), the cache;
//   - the SRS codec (formats, hashes, postsrsd compatibility) is its own
//     package, routing/srs, with its sender stores in routing/srsstore.
//     Whether a forward's sender is rewritten, and what a bounce may do, is
//     decided by the front end, in relay/srs.go.
package routing
