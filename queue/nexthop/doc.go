// Package nexthop hands messages to the next hop: an SMTP or LMTP client
// (client.go speaks the protocol, nexthop.go decides what to send and
// keeps each server's connection pool), MX resolution for the Internet
// (mx.go), and the transport routing that picks a recipient's destination
// (route.go). It knows nothing of queues or retries: the scheduler
// (package queue) decides when, this package how and where.
package nexthop
