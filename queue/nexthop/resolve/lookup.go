package resolve

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxCNAME bounds a CNAME chain; longer ones (and loops) fail temporarily,
// as a resolver's SERVFAIL would.
const maxCNAME = 8

var (
	errInvalidName = errors.New("invalid domain name")
	errCNAMEChain  = errors.New("CNAME chain too long or looping")
)

// MX is one mail exchanger. Host is lower case, without the trailing dot.
type MX struct {
	Host       string
	Preference uint16
}

// MXResult is the answer to LookupMX. Records are sorted by preference;
// records of equal preference keep the answer's order, and the caller
// shuffles them per delivery attempt (RFC 5321 §5.1). No records and no
// error is NODATA: the domain exists without MX, so the caller falls back
// to the domain's own address (implicit MX).
type MXResult struct {
	Records []MX
	// Null is RFC 7505's null MX (a lone MX with target "."): the domain
	// accepts no mail; Records is then empty.
	Null bool
	// Secure is the AD bit: every response on the way was validated.
	Secure bool
	// TTL is how much longer the answer is cached, the least of its parts.
	TTL time.Duration
}

// AddrResult is the answer to LookupAddrs. Addrs holds the A addresses,
// then the AAAA ones, in answer order.
type AddrResult struct {
	Addrs []netip.Addr
	// CNAME is the canonical name, without the trailing dot, when the name
	// asked for was an alias, else empty. An MX target with a CNAME breaks
	// RFC 2181 §10.3; Postfix refuses it, the caller decides.
	CNAME string
	// Secure: every answer (A and, when asked, AAAA) was validated.
	Secure bool
	TTL    time.Duration
}

// TLSA is one TLSA record (RFC 6698 §2.1).
type TLSA struct {
	Usage        uint8
	Selector     uint8
	MatchingType uint8
	Data         []byte // certificate association data
}

// TLSAResult is the answer to LookupTLSA. DANE (RFC 7672) uses the
// records only when Secure.
type TLSAResult struct {
	Records []TLSA
	Secure  bool
	TTL     time.Duration
}

// TXTResult is the answer to LookupTXT: one string per record, its
// character-strings joined without separator (RFC 8461 §3.1).
type TXTResult struct {
	Records []string
	Secure  bool
	TTL     time.Duration
}

// LookupMX returns the MX records of domain. NXDOMAIN is ErrNotFound.
func (r *Resolver) LookupMX(ctx context.Context, domain string) (MXResult, error) {
	ch, err := r.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return MXResult{}, err
	}
	res := MXResult{Secure: ch.secure, TTL: r.ttl(ch.expires)}
	for _, rr := range ch.rrs {
		if mx, ok := rr.(*dns.MX); ok {
			res.Records = append(res.Records, MX{Host: hostName(mx.Mx), Preference: mx.Preference})
		}
	}
	// RFC 7505 publishes the null MX with preference 0; a lone "." of
	// any preference leaves nothing to deliver to either, and must not
	// turn into implicit MX.
	if len(res.Records) == 1 && res.Records[0].Host == "" {
		res.Records, res.Null = nil, true
		return res, nil
	}
	res.Records = slices.DeleteFunc(res.Records, func(mx MX) bool { return mx.Host == "" })
	slices.SortStableFunc(res.Records, func(a, b MX) int { return cmp.Compare(a.Preference, b.Preference) })
	return res, nil
}

// LookupAddrs returns the addresses of host: A records and, unless the
// Resolver's IPv6 mode rules it out, AAAA records, asked in parallel. If
// one family fails and the other has addresses, those are returned
// without error (and Secure false); with no addresses, a temporary
// failure of either wins over NXDOMAIN. An IP literal is returned as is.
func (r *Resolver) LookupAddrs(ctx context.Context, host string) (AddrResult, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return AddrResult{Addrs: []netip.Addr{ip.Unmap()}}, nil
	}
	c, err := r.config()
	if err != nil {
		return AddrResult{}, newError(ErrTemporary, host, dns.TypeA, -1, err)
	}
	type result struct {
		ch  *chain
		err error
	}
	results := []result{{}}
	var wg sync.WaitGroup
	if c.ipv6 {
		results = append(results, result{})
		wg.Go(func() { results[1].ch, results[1].err = r.lookup(ctx, host, dns.TypeAAAA) })
	}
	results[0].ch, results[0].err = r.lookup(ctx, host, dns.TypeA)
	wg.Wait()

	res := AddrResult{Secure: true}
	var expires time.Time
	var temp, notFound error
	answered := false
	for _, x := range results {
		if x.err != nil {
			res.Secure = false
			if errors.Is(x.err, ErrNotFound) {
				notFound = x.err
			} else if temp == nil {
				temp = x.err
			}
			continue
		}
		answered = true
		res.Secure = res.Secure && x.ch.secure
		if expires.IsZero() || x.ch.expires.Before(expires) {
			expires = x.ch.expires
		}
		if res.CNAME == "" && x.ch.aliased {
			res.CNAME = hostName(x.ch.owner)
		}
		for _, rr := range x.ch.rrs {
			var ip netip.Addr
			switch rr := rr.(type) {
			case *dns.A:
				ip, _ = netip.AddrFromSlice(rr.A.To4())
			case *dns.AAAA:
				ip, _ = netip.AddrFromSlice(rr.AAAA.To16())
			}
			if ip.IsValid() {
				res.Addrs = append(res.Addrs, ip)
			}
		}
	}
	res.TTL = r.ttl(expires)
	switch {
	case len(res.Addrs) > 0:
		return res, nil
	case temp != nil:
		return AddrResult{}, temp
	case answered:
		return res, nil
	default:
		return AddrResult{}, notFound
	}
}

// LookupTLSA returns the TLSA records of _port._tcp.host (RFC 7672 §3).
// Records whose data does not decode are left out, as unusable.
func (r *Resolver) LookupTLSA(ctx context.Context, port int, host string) (TLSAResult, error) {
	name := "_" + strconv.Itoa(port) + "._tcp." + host
	if port <= 0 || port > 65535 {
		return TLSAResult{}, newError(ErrNotFound, name, dns.TypeTLSA, -1, errors.New("invalid port"))
	}
	ch, err := r.lookup(ctx, name, dns.TypeTLSA)
	if err != nil {
		return TLSAResult{}, err
	}
	res := TLSAResult{Secure: ch.secure, TTL: r.ttl(ch.expires)}
	for _, rr := range ch.rrs {
		t, ok := rr.(*dns.TLSA)
		if !ok {
			continue
		}
		data, err := hex.DecodeString(t.Certificate)
		if err != nil {
			continue
		}
		res.Records = append(res.Records, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
	}
	return res, nil
}

// LookupTXT returns the TXT records of name, such as _mta-sts.DOMAIN or
// _smtp._tls.DOMAIN. Which record counts (the one starting "v=STSv1") is
// the caller's business.
func (r *Resolver) LookupTXT(ctx context.Context, name string) (TXTResult, error) {
	ch, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return TXTResult{}, err
	}
	res := TXTResult{Secure: ch.secure, TTL: r.ttl(ch.expires)}
	for _, rr := range ch.rrs {
		if t, ok := rr.(*dns.TXT); ok {
			var b strings.Builder
			for _, s := range t.Txt {
				b.WriteString(unescapeTXT(s))
			}
			res.Records = append(res.Records, b.String())
		}
	}
	return res, nil
}

// chain is the outcome of a lookup after following CNAMEs.
type chain struct {
	owner   string   // the canonical name, FQDN
	aliased bool     // owner is not the name asked for
	rrs     []dns.RR // the records at owner
	secure  bool     // every response on the way had AD
	expires time.Time
}

// lookup asks name/qtype, following CNAMEs across responses when the
// resolver did not, up to maxCNAME in all.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (*chain, error) {
	fq := strings.ToLower(dns.Fqdn(name))
	if _, ok := dns.IsDomainName(fq); !ok || fq == "." {
		return nil, newError(ErrNotFound, fq, qtype, -1, errInvalidName)
	}
	ch := &chain{owner: fq, secure: true}
	hops := 0
	for {
		a, err := r.query(ctx, ch.owner, qtype)
		if err != nil {
			return nil, err
		}
		ch.secure = ch.secure && a.secure
		if ch.expires.IsZero() || a.expires.Before(ch.expires) {
			ch.expires = a.expires
		}
		hops += a.aliases
		if hops > maxCNAME {
			return nil, newError(ErrTemporary, fq, qtype, -1, errCNAMEChain)
		}
		ch.owner, ch.rrs = a.owner, a.rrs
		ch.aliased = ch.aliased || a.aliases > 0
		if a.complete {
			return ch, nil
		}
	}
}

// ttl is how long from now an answer stays cached.
func (r *Resolver) ttl(expires time.Time) time.Duration {
	return max(expires.Sub(r.clock()), 0)
}

// hostName is a domain name as delivery uses it: lower case, no trailing
// dot; the root becomes "".
func hostName(fqdn string) string {
	return strings.TrimSuffix(strings.ToLower(fqdn), ".")
}

// unescapeTXT undoes miekg/dns's presentation escapes (\" \\ \DDD) of a
// character-string, giving back the bytes on the wire.
func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n, _ := strconv.Atoi(s[i+1 : i+4])
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		i++
		b.WriteByte(s[i])
	}
	return b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
