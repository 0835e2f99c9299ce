// Package directory holds the sources routing's Expander asks what an
// address rewrites to: each answers routing.Source's Lookup with the
// values its entries give (a routing.Match each), nothing when the address
// is not in the directory, and an error wrapping routing.ErrUnavailable when
// it cannot answer (a 4xx at RCPT, never a 5xx).
//
// Where things are:
//   - live LDAP (389-DS's mailRecipient schema, Schema): ldap.go, with a
//     bounded connection pool;
//   - Postfix's ldap_table(5) semantics (templates, result_format and the
//     special, leaf and terminal result attributes): ldap_table.go; a
//     Postfix .cf read unchanged: postfixcf.go;
//   - an LDIF file, reloaded when it changes: ldif.go;
//   - the live replica (RFC 4533 sync or 389-DS's persistent search) that
//     answers when the directory is down: replica.go (the store and the
//     freshness rules), replica_sync.go, replica_psearch.go,
//     replica_filter.go, replica_table.go;
//   - the answer cache in front of any source: cache.go.
package directory
