// Package e2e is the end-to-end suite: it starts real servers from Debian
// packages on loopback (389 Directory Server seeded with deploy/seed.ldif,
// Postfix as the next hop, smtp-sink behind it), runs the mailfwd binary
// against them and drives it with swaks. What the tests share (the servers,
// the binary, the shared relay) is the harness TestMain builds
// (harness_test.go); the configs of the relays the tests start are
// templates, one directory per scenario, under testdata/ (its README). The
// tests are behind the e2e build tag; `make test` installs the packages and
// runs them.
package e2e
