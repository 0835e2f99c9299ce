package resolve

import (
	"context"
	"encoding/hex"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestLookupMX(t *testing.T) {
	tests := []struct {
		name   string
		spec   func(t *testing.T) spec
		want   []MX
		null   bool
		secure bool
		err    error
	}{
		{
			name: "sorted by preference, ties in answer order",
			spec: func(t *testing.T) spec {
				return spec{answer: rrs(t,
					"d.example. 300 IN MX 20 mx3.example.",
					"d.example. 300 IN MX 10 MX1.Example.",
					"d.example. 300 IN MX 30 mx4.example.",
					"d.example. 300 IN MX 10 mx2.example.",
				)}
			},
			want: []MX{{"mx1.example", 10}, {"mx2.example", 10}, {"mx3.example", 20}, {"mx4.example", 30}},
		},
		{
			name:   "secure",
			spec:   func(t *testing.T) spec { return spec{ad: true, answer: rrs(t, "d.example. 300 IN MX 0 mx.example.")} },
			want:   []MX{{"mx.example", 0}},
			secure: true,
		},
		{
			name: "null MX",
			spec: func(t *testing.T) spec { return spec{ad: true, answer: rrs(t, "d.example. 300 IN MX 0 .")} },
			null: true, secure: true,
		},
		{
			name: "lone root target of other preference is null too",
			spec: func(t *testing.T) spec { return spec{answer: rrs(t, "d.example. 300 IN MX 10 .")} },
			null: true,
		},
		{
			name: "root target among others is dropped",
			spec: func(t *testing.T) spec {
				return spec{answer: rrs(t, "d.example. 300 IN MX 0 .", "d.example. 300 IN MX 10 mx.example.")}
			},
			want: []MX{{"mx.example", 10}},
		},
		{
			name: "no MX is no error",
			spec: func(t *testing.T) spec { return spec{ns: soa(t, 300, 300)} },
		},
		{
			name: "unrelated records ignored",
			spec: func(t *testing.T) spec {
				return spec{answer: rrs(t, "other.example. 300 IN MX 10 evil.example.", "d.example. 300 IN MX 10 mx.example.")}
			},
			want: []MX{{"mx.example", 10}},
		},
		{
			name: "domain is an alias",
			spec: func(t *testing.T) spec {
				return spec{answer: rrs(t, "d.example. 300 IN CNAME e.example.", "e.example. 300 IN MX 5 mx.e.example.")}
			},
			want: []MX{{"mx.e.example", 5}},
		},
		{
			name: "nxdomain",
			spec: func(t *testing.T) spec { return spec{rcode: dns.RcodeNameError, ns: soa(t, 300, 300)} },
			err:  ErrNotFound,
		},
		{
			name: "bogus is servfail is temporary",
			spec: func(t *testing.T) spec { return spec{rcode: dns.RcodeServerFailure} },
			err:  ErrTemporary,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, zone{"d.example. MX": tt.spec(t)}.handle)
			r, _ := newResolver(srv.addr)
			res, err := r.LookupMX(context.Background(), "d.example")
			wantClass(t, err, tt.err)
			if !slices.Equal(res.Records, tt.want) || res.Null != tt.null || res.Secure != tt.secure {
				t.Errorf("got %+v, want records %v null %v secure %v", res, tt.want, tt.null, tt.secure)
			}
		})
	}
}

func TestLookupAddrs(t *testing.T) {
	a := spec{ad: true, answer: rrs(t, "h.example. 300 IN A 192.0.2.1", "h.example. 300 IN A 192.0.2.2")}
	aaaa := spec{ad: true, answer: rrs(t, "h.example. 300 IN AAAA 2001:db8::1")}
	nodata := spec{ns: soa(t, 300, 300)}
	nx := spec{rcode: dns.RcodeNameError, ns: soa(t, 300, 300)}
	servfail := spec{rcode: dns.RcodeServerFailure}
	insecure := func(s spec) spec { s.ad = false; return s }
	tests := []struct {
		name    string
		ipv6    IPv6Mode
		a, aaaa spec
		want    []string
		secure  bool
		err     error
	}{
		{name: "both families", ipv6: IPv6On, a: a, aaaa: aaaa, want: []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}, secure: true},
		{name: "ipv6 off", ipv6: IPv6Off, a: a, aaaa: aaaa, want: []string{"192.0.2.1", "192.0.2.2"}, secure: true},
		{name: "one insecure answer", ipv6: IPv6On, a: a, aaaa: insecure(aaaa), want: []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}},
		{name: "only AAAA", ipv6: IPv6On, a: nodata, aaaa: aaaa, want: []string{"2001:db8::1"}},
		{name: "AAAA fails, A answers", ipv6: IPv6On, a: a, aaaa: servfail, want: []string{"192.0.2.1", "192.0.2.2"}},
		{name: "A fails, AAAA empty", ipv6: IPv6On, a: servfail, aaaa: nodata, err: ErrTemporary},
		{name: "nodata", ipv6: IPv6On, a: nodata, aaaa: nodata},
		{name: "nxdomain", ipv6: IPv6On, a: nx, aaaa: nx, err: ErrNotFound},
		{name: "nxdomain and servfail", ipv6: IPv6On, a: nx, aaaa: servfail, err: ErrTemporary},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, zone{"h.example. A": tt.a, "h.example. AAAA": tt.aaaa}.handle)
			r, _ := newResolver(srv.addr)
			r.IPv6 = tt.ipv6
			res, err := r.LookupAddrs(context.Background(), "h.example")
			wantClass(t, err, tt.err)
			var got []string
			for _, ip := range res.Addrs {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.want) || res.Secure != tt.secure || res.CNAME != "" {
				t.Errorf("got %v secure %v cname %q, want %v secure %v", got, res.Secure, res.CNAME, tt.want, tt.secure)
			}
			if aaaaQueries := srv.count("h.example", dns.TypeAAAA); (tt.ipv6 == IPv6Off) != (aaaaQueries == 0) {
				t.Errorf("%d AAAA queries with IPv6 mode %d", aaaaQueries, tt.ipv6)
			}
		})
	}
}

func TestLookupAddrsLiteral(t *testing.T) {
	r, _ := newResolver(closedPort(t))
	for _, lit := range []string{"192.0.2.7", "2001:db8::7", "::ffff:192.0.2.7"} {
		res, err := r.LookupAddrs(context.Background(), lit)
		if err != nil {
			t.Fatal(err)
		}
		want := netip.MustParseAddr(lit).Unmap()
		if len(res.Addrs) != 1 || res.Addrs[0] != want {
			t.Errorf("%s: %v", lit, res.Addrs)
		}
	}
}

func TestCNAME(t *testing.T) {
	tests := []struct {
		name    string
		zone    func(t *testing.T) zone
		want    []string
		cname   string
		secure  bool
		err     error
		queries int
	}{
		{
			name: "not an alias",
			zone: func(t *testing.T) zone {
				return zone{"w.example. A": {ad: true, answer: rrs(t, "w.example. 300 IN A 192.0.2.1")}}
			},
			want: []string{"192.0.2.1"}, secure: true, queries: 1,
		},
		{
			name: "chain in one answer",
			zone: func(t *testing.T) zone {
				return zone{"w.example. A": {ad: true, answer: rrs(t,
					// out of order on purpose: the chain is followed, not the order
					"y.example. 300 IN A 192.0.2.9",
					"w.example. 300 IN CNAME x.example.",
					"x.example. 300 IN CNAME Y.example.",
				)}}
			},
			want: []string{"192.0.2.9"}, cname: "y.example", secure: true, queries: 1,
		},
		{
			name: "resolver stopped at a CNAME",
			zone: func(t *testing.T) zone {
				return zone{
					"w.example. A": {ad: true, answer: rrs(t, "w.example. 300 IN CNAME x.other.")},
					"x.other. A":   {answer: rrs(t, "x.other. 300 IN A 192.0.2.5")},
				}
			},
			want: []string{"192.0.2.5"}, cname: "x.other", queries: 2, // x.other is insecure
		},
		{
			name: "alias of a name without addresses",
			zone: func(t *testing.T) zone {
				return zone{"w.example. A": {answer: rrs(t, "w.example. 300 IN CNAME x.example."), ns: soa(t, 300, 300)}}
			},
			queries: 1, cname: "x.example",
		},
		{
			name: "alias of a name that does not exist",
			zone: func(t *testing.T) zone {
				return zone{"w.example. A": {rcode: dns.RcodeNameError, answer: rrs(t, "w.example. 300 IN CNAME x.example."), ns: soa(t, 300, 300)}}
			},
			err: ErrNotFound, queries: 1,
		},
		{
			name: "loop",
			zone: func(t *testing.T) zone {
				return zone{
					"w.example. A": {answer: rrs(t, "w.example. 300 IN CNAME x.example.", "x.example. 300 IN CNAME w.example.")},
				}
			},
			err: ErrTemporary, queries: 1,
		},
		{
			name: "loop across answers",
			zone: func(t *testing.T) zone {
				return zone{
					"w.example. A": {answer: rrs(t, "w.example. 300 IN CNAME x.example.")},
					"x.example. A": {answer: rrs(t, "x.example. 300 IN CNAME w.example.")},
				}
			},
			err: ErrTemporary, queries: 2, // then both are cached
		},
		{
			name: "chain of 8 is fine",
			zone: func(t *testing.T) zone { return zone{"w.example. A": {answer: cnameChain(t, 8)}} },
			want: []string{"192.0.2.8"}, cname: "c8.example", queries: 1,
		},
		{
			name: "chain of 9 is too long",
			zone: func(t *testing.T) zone { return zone{"w.example. A": {answer: cnameChain(t, 9)}} },
			err:  ErrTemporary, queries: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, tt.zone(t).handle)
			r, _ := newResolver(srv.addr)
			res, err := r.LookupAddrs(context.Background(), "w.example")
			wantClass(t, err, tt.err)
			var got []string
			for _, ip := range res.Addrs {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.want) || res.CNAME != tt.cname || res.Secure != tt.secure {
				t.Errorf("got %v cname %q secure %v, want %v %q %v", got, res.CNAME, res.Secure, tt.want, tt.cname, tt.secure)
			}
			if n := srv.total(); n != tt.queries {
				t.Errorf("%d queries, want %d", n, tt.queries)
			}
		})
	}
}

// cnameChain is w.example → c1.example → … → cN.example, which has an address.
func cnameChain(t *testing.T, n int) []dns.RR {
	lines := []string{"w.example. 300 IN CNAME c1.example."}
	for i := 1; i < n; i++ {
		lines = append(lines, "c"+strconv.Itoa(i)+".example. 300 IN CNAME c"+strconv.Itoa(i+1)+".example.")
	}
	lines = append(lines, "c"+strconv.Itoa(n)+".example. 300 IN A 192.0.2."+strconv.Itoa(n))
	return rrs(t, lines...)
}

func TestLookupTLSA(t *testing.T) {
	const h1 = "8f6b3e7d2c1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e"
	srv := startServer(t, zone{
		"_25._tcp.mx.example. TLSA": {ad: true, answer: rrs(t,
			"_25._tcp.mx.example. 300 IN TLSA 3 1 1 "+h1,
			"_25._tcp.mx.example. 300 IN TLSA 2 0 0 3082",
		)},
		"_25._tcp.alias.example. TLSA": {ad: true, answer: rrs(t,
			"_25._tcp.alias.example. 300 IN CNAME _dane.mx.example.",
			"_dane.mx.example. 300 IN TLSA 3 0 1 "+h1,
		)},
		"_25._tcp.none.example. TLSA": {ad: true, ns: soa(t, 300, 300)},
	}.handle)
	r, _ := newResolver(srv.addr)
	ctx := context.Background()
	b1, _ := hex.DecodeString(h1)

	res, err := r.LookupTLSA(ctx, 25, "mx.example")
	if err != nil {
		t.Fatal(err)
	}
	want := []TLSA{{3, 1, 1, b1}, {2, 0, 0, []byte{0x30, 0x82}}}
	if !reflect.DeepEqual(res.Records, want) || !res.Secure {
		t.Errorf("got %+v, want %+v secure", res, want)
	}

	res, err = r.LookupTLSA(ctx, 25, "alias.example.")
	if err != nil {
		t.Fatal(err)
	}
	if want := []TLSA{{3, 0, 1, b1}}; !reflect.DeepEqual(res.Records, want) || !res.Secure {
		t.Errorf("via CNAME: got %+v, want %+v secure", res, want)
	}

	res, err = r.LookupTLSA(ctx, 25, "none.example")
	if err != nil || len(res.Records) != 0 || !res.Secure {
		t.Errorf("no TLSA: got %+v, %v; want no records, secure (authenticated denial)", res, err)
	}

	_, err = r.LookupTLSA(ctx, 0, "mx.example")
	wantClass(t, err, ErrNotFound)
}

func TestLookupTXT(t *testing.T) {
	srv := startServer(t, zone{
		"_mta-sts.example. TXT": {answer: rrs(t,
			`_mta-sts.example. 300 IN TXT "v=STSv1; " "id=20240101T000000;"`,
			`_mta-sts.example. 300 IN TXT "unrelated"`,
		)},
		"_smtp._tls.example. TXT": {answer: rrs(t,
			`_smtp._tls.example. 300 IN TXT "v=TLSRPTv1; rua=mailto:\"q\"@example" "\\x\001"`,
		)},
	}.handle)
	r, _ := newResolver(srv.addr)
	ctx := context.Background()

	res, err := r.LookupTXT(ctx, "_mta-sts.example")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"v=STSv1; id=20240101T000000;", "unrelated"}; !slices.Equal(res.Records, want) {
		t.Errorf("got %q, want %q", res.Records, want)
	}

	res, err = r.LookupTXT(ctx, "_smtp._tls.example")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"v=TLSRPTv1; rua=mailto:\"q\"@example\\x\x01"}; !slices.Equal(res.Records, want) {
		t.Errorf("got %q, want %q (escapes undone)", res.Records, want)
	}
}

func TestInvalidNames(t *testing.T) {
	r, _ := newResolver(closedPort(t))
	for _, name := range []string{"", ".", "a..example", strings.Repeat("a", 64) + ".example"} {
		_, err := r.LookupMX(context.Background(), name)
		wantClass(t, err, ErrNotFound)
	}
}

func TestIsGlobalIPv6(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"2a00:1450:4001::1", true},
		{"2001:db8::1", true},
		{"fe80::1", false},
		{"::1", false},
		{"fd12:3456::1", false},
		{"ff02::1", false},
		{"192.0.2.1", false},
		{"::ffff:192.0.2.1", false},
	}
	for _, tt := range tests {
		if got := isGlobalIPv6(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.ip, got, tt.want)
		}
	}
	_ = HostHasIPv6() // depends on the host; must not fail
}
