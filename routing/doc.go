// Package routing decides where mail for an address goes. It parses
// envelope addresses, asks directory sources (LDAP, an LDIF file) what an
// address rewrites to, and expands aliases the way Postfix's cleanup expands
// virtual_alias_maps: recursively, with fan-out, self-mapping addresses as
// final, and limits that defer instead of truncating.
//
// Routing answers at RCPT time with the same resolver that decides delivery,
// so an address is never accepted that routing would later refuse.
package routing
