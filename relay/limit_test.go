package relay

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestClientKey(t *testing.T) {
	k := func(s string) string { return clientKey(netip.MustParseAddr(s), 84) }
	if k("192.0.2.1") == k("192.0.2.2") || k("192.0.2.1") != "192.0.2.1" {
		t.Errorf("IPv4 clients are single addresses: %q %q", k("192.0.2.1"), k("192.0.2.2"))
	}
	if k("::ffff:192.0.2.1") != "192.0.2.1" {
		t.Errorf("v4-mapped: %q", k("::ffff:192.0.2.1"))
	}
	// one host's /64 is one client; a /84 apart is another
	if k("2001:db8:1:2::1") != k("2001:db8:1:2:0:fff:ffff:ffff") {
		t.Errorf("same /84: %q %q", k("2001:db8:1:2::1"), k("2001:db8:1:2:0:fff:ffff:ffff"))
	}
	if k("2001:db8:1:2::1") == k("2001:db8:1:2:0:1000::1") {
		t.Errorf("different /84s share a key: %q", k("2001:db8:1:2::1"))
	}
	if got := clientKey(netip.MustParseAddr("2001:db8::1"), 128); got != "2001:db8::1/128" {
		t.Errorf("/128: %q", got)
	}
}

// The connection limits key on the /84: a host rotating through its /64
// meets one rate limit; and the rate table stays bounded under a flood of
// new addresses, in constant time per client.
func TestListenerLimitsIPv6AndBounded(t *testing.T) {
	l := Listen(nil, ListenLimits{RatePerIP: 5, IPv6Prefix: 84}).(*limitListener)
	for i := range 5 {
		if why, _ := l.admit(clientKey(netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1)), 84)); why != "" {
			t.Fatalf("connection %d: %s", i, why)
		}
	}
	if why, _ := l.admit(clientKey(netip.MustParseAddr("2001:db8::ffff"), 84)); why == "" {
		t.Error("a 6th connection from the same /84 within the minute was admitted")
	}
	if why, _ := l.admit(clientKey(netip.MustParseAddr("2001:db8:0:0:1000::1"), 84)); why != "" {
		t.Errorf("another /84: %s", why)
	}
	for i := range 3 * maxClients {
		l.admit(fmt.Sprintf("198.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		l.leave(fmt.Sprintf("198.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	if n := l.rates.size(); n > 2*maxClients {
		t.Errorf("rate table holds %d clients after a flood, want <= %d", n, 2*maxClients)
	}
}
