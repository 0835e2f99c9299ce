// Package e2e is the end-to-end suite: it starts real servers from Debian
// packages on loopback (389 Directory Server seeded with deploy/seed.ldif,
// Postfix as the next hop, smtp-sink behind it), runs the mailfwd binary
// against them and drives it with swaks. The tests are behind the e2e build
// tag; `make test` installs the packages and runs them.
package e2e
