package relay

import (
	"net/netip"
)

// maxClients bounds each per-client table (one generation of a
// windowCounter): a flood of addresses cannot grow it further.
const maxClients = 100000

// clientKey is the per-client limits' key for ip: the address for IPv4,
// its /bits prefix for IPv6 (as Postfix ≥ 3.8's
// smtpd_client_ipv6_prefix_length: one host's /64 or more would otherwise
// be 2^64 clients, each with its own fresh limits); bits outside 1..128
// count the whole address.
func clientKey(ip netip.Addr, bits int) string {
	ip = ip.Unmap()
	if !ip.Is6() {
		return ip.String()
	}
	if bits <= 0 || bits > 128 {
		bits = 128
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return ip.String()
	}
	return p.String()
}

// clientKeyOf is clientKey for an address string ("" stays "").
func clientKeyOf(addr string, bits int) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	return clientKey(ip, bits)
}
