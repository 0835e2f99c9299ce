package resolve

import (
	"net"
	"net/netip"
)

// HostHasIPv6 reports whether this host has a global unicast IPv6
// address, i.e. whether connecting to an AAAA address can work. Link-local,
// loopback and unique local (fc00::/7) addresses do not count.
func HostHasIPv6() bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if ok && isGlobalIPv6(ip) {
			return true
		}
	}
	return false
}

func isGlobalIPv6(ip netip.Addr) bool {
	return ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() && !ip.IsPrivate()
}
