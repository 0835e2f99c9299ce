package auth

import (
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
)

func TestAllPass(t *testing.T) {
	e := setup(t, nil)
	msg := signed(t, origMsg, rsaA, "s1")
	for _, chunk := range []int{0, 1, 7, 4096} {
		v := e.check(e.in("alice@example.org"), msg, chunk)
		if v.Err != nil {
			t.Fatal(v.Err)
		}
		id, m := parseAR(t, v.Header)
		if id != "mx.relay.example.net" {
			t.Errorf("authserv-id %q", id)
		}
		for k, want := range map[string]string{"spf": "pass", "dkim": "pass", "dmarc": "pass", "arc": "none"} {
			if got := value(m[k]); got != want {
				t.Errorf("chunk %d: %s=%s, want %s (header %q)", chunk, k, got, want, v.Header)
			}
		}
		if s := m["spf"].(*authres.SPFResult); s.From != "example.org" {
			t.Errorf("smtp.mailfrom=%q", s.From)
		}
		if d := m["dkim"].(*authres.DKIMResult); d.Domain != "example.org" {
			t.Errorf("header.d=%q", d.Domain)
		}
		if d := m["dmarc"].(*authres.DMARCResult); d.From != "example.org" {
			t.Errorf("header.from=%q", d.From)
		}
		if v.Action != Accept || !v.Results.DMARC.SPFAligned || !v.Results.DMARC.DKIMAligned {
			t.Errorf("verdict %+v", v.Results.DMARC)
		}
	}
}

func TestEd25519Signature(t *testing.T) {
	e := setup(t, nil)
	msg := signed(t, origMsg, edA, "ed")
	v := e.check(e.in("alice@example.org"), msg, 0)
	if d := v.Results.DKIM; len(d) != 1 || d[0].Result != "pass" {
		t.Fatalf("dkim %+v", d)
	}
}

func TestSPFResults(t *testing.T) {
	e := setup(t, nil)
	e.dns.txt["soft.example"] = []string{"v=spf1 ~all"}
	e.dns.txt["helo.example"] = []string{"v=spf1 ip4:192.0.2.10 -all"}
	cases := []struct {
		ip, helo, from, want, dom string
		heloID                    bool
	}{
		{"192.0.2.10", "x", "a@example.org", "pass", "example.org", false},
		{"198.51.100.1", "x", "a@example.org", "fail", "example.org", false},
		{"198.51.100.1", "x", "a@soft.example", "softfail", "soft.example", false},
		{"198.51.100.1", "x", "a@nothing.example", "none", "nothing.example", false},
		{"192.0.2.10", "helo.example", "", "pass", "helo.example", true},
	}
	for _, c := range cases {
		v := e.check(Inbound{ClientIP: net.ParseIP(c.ip), Helo: c.helo, MailFrom: c.from}, origMsg, 0)
		s := v.Results.SPF
		if s.Result != c.want || s.Domain != c.dom || s.Helo != c.heloID {
			t.Errorf("%+v: got %+v", c, s)
		}
		_, m := parseAR(t, v.Header)
		sr := m["spf"].(*authres.SPFResult)
		if string(sr.Value) != c.want || (c.heloID && sr.Helo != c.dom) || (!c.heloID && sr.From != c.dom) {
			t.Errorf("A-R spf %+v", sr)
		}
	}
}

func TestDKIMFailAndDMARCPolicy(t *testing.T) {
	msg := strings.Replace(signed(t, origMsg, rsaA, "s1"), "this is", "this was", 1)
	bad := net.ParseIP("198.51.100.1")
	for _, c := range []struct {
		spf, dmarc Action
		action     Action
		code       int
		enh        [3]int
	}{
		{Accept, Accept, Accept, 0, [3]int{}},
		{Accept, Tag, Tag, 0, [3]int{}},
		{Accept, Reject, Reject, 550, [3]int{5, 7, 26}},
		{Reject, Reject, Reject, 550, [3]int{5, 7, 1}},
		{Tag, Accept, Tag, 0, [3]int{}},
	} {
		e := setup(t, func(cfg *Config) { cfg.SPFFail, cfg.DMARCReject = c.spf, c.dmarc })
		v := e.check(Inbound{ClientIP: bad, Helo: "h", MailFrom: "alice@example.org"}, msg, 3)
		_, m := parseAR(t, v.Header)
		if value(m["dkim"]) != "fail" || value(m["spf"]) != "fail" || value(m["dmarc"]) != "fail" {
			t.Fatalf("results %q", v.Header)
		}
		if v.Action != c.action || v.Code != c.code || v.EnhancedCode != c.enh {
			t.Errorf("%v/%v: action %v %d %v %q", c.spf, c.dmarc, v.Action, v.Code, v.EnhancedCode, v.Message)
		}
		if tagged := strings.Contains(v.Header, TagHeader+": fail"); tagged != (c.action == Tag) {
			t.Errorf("tag header: %q", v.Header)
		}
	}
}

func TestDMARCDetails(t *testing.T) {
	e := setup(t, func(cfg *Config) { cfg.DMARCReject = Reject })
	bad := net.ParseIP("198.51.100.1")
	// subdomain: org record with sp=none applies; nothing rejected
	e.dns.txt["_dmarc.example.org"] = []string{"v=DMARC1; p=reject; sp=none"}
	sub := strings.Replace(origMsg, "alice@example.org", "alice@news.example.org", 1)
	v := e.check(Inbound{ClientIP: bad, Helo: "h", MailFrom: "x@news.example.org"}, sub, 0)
	if d := v.Results.DMARC; d.Result != "fail" || d.Policy != "none" || v.Action != Accept {
		t.Errorf("subdomain: %+v %v", d, v.Action)
	}
	// relaxed alignment: DKIM d=example.org aligns with news.example.org
	msg := signed(t, sub, rsaA, "s1")
	v = e.check(Inbound{ClientIP: bad, Helo: "h", MailFrom: "x@other.example"}, msg, 0)
	if d := v.Results.DMARC; d.Result != "pass" || !d.DKIMAligned {
		t.Errorf("relaxed: %+v", d)
	}
	// strict alignment
	e.dns.txt["_dmarc.example.org"] = []string{"v=DMARC1; p=reject; adkim=s"}
	v = e.check(Inbound{ClientIP: bad, Helo: "h", MailFrom: "x@other.example"}, msg, 0)
	if d := v.Results.DMARC; d.Result != "fail" || v.Action != Reject {
		t.Errorf("strict: %+v %v", d, v.Action)
	}
	// pct<100 never rejects
	e.dns.txt["_dmarc.example.org"] = []string{"v=DMARC1; p=reject; pct=50"}
	v = e.check(Inbound{ClientIP: bad, Helo: "h", MailFrom: "alice@example.org"}, origMsg, 0)
	if v.Results.DMARC.Result != "fail" || v.Action != Accept {
		t.Errorf("pct: %+v %v", v.Results.DMARC, v.Action)
	}
	// no record
	delete(e.dns.txt, "_dmarc.example.org")
	v = e.check(Inbound{ClientIP: bad, Helo: "h", MailFrom: "alice@example.org"}, origMsg, 0)
	if v.Results.DMARC.Result != "none" {
		t.Errorf("no record: %+v", v.Results.DMARC)
	}
	// two From fields
	two := "From: a@example.org\r\n" + origMsg
	v = e.check(Inbound{ClientIP: bad, Helo: "h", MailFrom: "alice@example.org"}, two, 0)
	if v.Results.DMARC.Result != "permerror" {
		t.Errorf("two From: %+v", v.Results.DMARC)
	}
}

func TestDNSFailureIsTemperror(t *testing.T) {
	for _, mode := range []string{"fail", "hang", "hang-ignoring-ctx"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, func(cfg *Config) {
				cfg.SPFFail, cfg.DMARCReject = Reject, Reject
				cfg.LookupTimeout = 200 * time.Millisecond
			})
			msg := signed(t, origMsg, rsaA, "s1")
			switch mode {
			case "fail":
				e.dns.fail["*"] = true
			default:
				e.dns.hang["*"] = true
				e.dns.ignoreCtx = mode == "hang-ignoring-ctx"
			}
			start := time.Now()
			v := e.check(e.in("alice@example.org"), msg, 0)
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("took %v", el)
			}
			_, m := parseAR(t, v.Header)
			for _, k := range []string{"spf", "dkim", "dmarc"} {
				if value(m[k]) != "temperror" {
					t.Errorf("%s=%s, want temperror (%q)", k, value(m[k]), v.Header)
				}
			}
			if v.Action != Accept {
				t.Errorf("temperror must not reject: %v %s", v.Action, v.Message)
			}
		})
	}
}

func TestOverallTimeout(t *testing.T) {
	// a resolver slower than Timeout: Finish still returns in time
	e := setup(t, func(cfg *Config) { cfg.LookupTimeout = 5 * time.Second; cfg.Timeout = 300 * time.Millisecond })
	e.dns.hang["*"] = true
	start := time.Now()
	v := e.check(e.in("alice@example.org"), signed(t, origMsg, rsaA, "s1"), 0)
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %v", el)
	}
	if v.Results.SPF.Result != "temperror" || v.Results.DMARC.Result != "temperror" {
		t.Errorf("%+v", v.Results)
	}
}

func TestAbortAndNoBody(t *testing.T) {
	e := setup(t, nil)
	c := e.a.Start(e.in("alice@example.org"))
	c.Write([]byte(signed(t, origMsg, rsaA, "s1")[:300]))
	c.Abort()
	c.Abort()
	if v := c.Finish(); v.Err == nil {
		t.Error("Finish after Abort should report an error")
	}
	// header only, no blank line
	v := e.check(e.in("alice@example.org"), "From: alice@example.org\r\nSubject: x\r\n", 0)
	if v.Results.DMARC.From != "example.org" || v.Err != nil {
		t.Errorf("%+v %v", v.Results, v.Err)
	}
}

func TestForwardSignatures(t *testing.T) {
	e := setup(t, nil)
	msg := signed(t, origMsg, rsaA, "s1")
	v := e.check(e.in("alice@example.org"), msg, 5)
	if v.Err != nil {
		t.Fatal(v.Err)
	}
	out := delivered(v, msg)
	vs := verifyAll(t, e.dns, out)
	if len(vs) != 2 {
		t.Fatalf("%d signatures", len(vs))
	}
	doms := map[string]bool{}
	for _, x := range vs {
		if x.Err != nil {
			t.Errorf("%s: %v", x.Domain, x.Err)
		}
		doms[x.Domain] = true
	}
	if !doms["example.org"] || !doms["relay.example.net"] {
		t.Errorf("domains %v", doms)
	}
	// not a forward: no ARC, no signature
	in := e.in("alice@example.org")
	in.Forward = false
	if v := e.check(in, msg, 0); v.ForwardHeader != "" {
		t.Errorf("ForwardHeader without forward: %q", v.ForwardHeader)
	}
}

func TestSignStreamDSN(t *testing.T) {
	e := setup(t, nil)
	dsn := "From: MAILER-DAEMON@relay.example.net\nTo: alice@example.org\nSubject: Undelivered\nMIME-Version: 1.0\n\nbody line\n"
	for _, k := range []*Key{e.relay, {Domain: "relay.example.net", Selector: "ed", Signer: edA}} {
		e.dns.publish(k)
		sig, err := Sign(k, strings.NewReader(dsn))
		if err != nil {
			t.Fatal(err)
		}
		vs := verifyAll(t, e.dns, sig+dsn)
		if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "relay.example.net" {
			t.Errorf("%s: %+v", k.Algorithm(), vs[0])
		}
	}
}

func TestNewValidation(t *testing.T) {
	keys(t)
	if _, err := New(Config{}); err == nil {
		t.Error("no authserv-id accepted")
	}
	if _, err := New(Config{AuthServID: "x", LookupTimeout: time.Second, Timeout: time.Second, ARCKey: &Key{Domain: "d", Selector: "s", Signer: edA}}); err == nil {
		t.Error("Ed25519 ARC key accepted")
	}
	if _, err := New(Config{AuthServID: "x", LookupTimeout: time.Second}); err == nil {
		t.Error("no Timeout accepted")
	}
}

// A message whose DKIM key lookup hangs costs a bounded amount of memory
// while it waits: the verifier's pipe holds a little and then makes the
// writer wait (back-pressure), and the header is not copied over and over.
func TestDKIMHangBoundedMemory(t *testing.T) {
	e := setup(t, func(c *Config) { c.LookupTimeout = 2 * time.Second; c.Timeout = 3 * time.Second })
	e.dns.hang["s1._domainkey.example.org"] = true
	msg := signed(t, origMsg, rsaA, "s1")
	hdr := msg[:strings.Index(msg, "\r\n\r\n")+4]
	big := "X-Pad: " + strings.Repeat("p", 200) + "\r\n"
	hdr = strings.Repeat(big, 900) + hdr                                   // ~190 KiB of header
	body := []byte(strings.Repeat(strings.Repeat("b", 998)+"\r\n", 8<<10)) // 8 MiB
	const sessions = 20
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	peak := make(chan uint64, 1)
	started := make(chan struct{}, sessions)
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.a.Start(e.in("alice@example.org"))
			c.Write([]byte(hdr))
			started <- struct{}{}
			for b := body; len(b) > 0; b = b[min(len(b), 64<<10):] {
				c.Write(b[:min(len(b), 64<<10)])
			}
			c.Finish()
		}()
	}
	for range sessions {
		<-started
	}
	time.Sleep(500 * time.Millisecond) // every session blocked on its hanging key
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	peak <- during.HeapInuse
	wg.Wait()
	perSession := (int64(<-peak) - int64(before.HeapInuse)) / sessions
	t.Logf("heap per session while the key lookup hangs: %d KiB", perSession>>10)
	if perSession > 2<<20 {
		t.Errorf("%d KiB of heap per waiting session, want under 2 MiB", perSession>>10)
	}
}
