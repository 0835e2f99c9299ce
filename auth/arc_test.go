package auth

import (
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
)

// hop2 is a second ARC-sealing forwarder using the same DNS.
func (e *env) hop2(t *testing.T) *Authenticator {
	k := &Key{Domain: "other.example", Selector: "arc", Signer: rsaA}
	e.dns.publish(k)
	a, err := New(Config{AuthServID: "mx.other.example", Resolver: e.dns, LookupTimeout: time.Second, Timeout: 3 * time.Second, ARCKey: k})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func run(a *Authenticator, in Inbound, msg string) *Verdict {
	c := a.Start(in)
	c.Write([]byte(msg))
	return c.Finish()
}

var instRe = regexp.MustCompile(`(?m)^(ARC-[A-Za-z-]+): i=(\d+);(?: a=rsa-sha256; cv=(\w+);)?`)

func arcSummary(h string) []string {
	var out []string
	for _, m := range instRe.FindAllStringSubmatch(h, -1) {
		out = append(out, m[1]+" "+m[2]+" "+m[3])
	}
	return out
}

func TestARCChain(t *testing.T) {
	e := setup(t, nil)
	msg := signed(t, origMsg, rsaA, "s1")

	// hop 1 (us): no chain yet → i=1, cv=none
	v1 := e.check(e.in("alice@example.org"), msg, 0)
	if v1.Err != nil {
		t.Fatal(v1.Err)
	}
	got := arcSummary(v1.ForwardHeader)
	want := []string{"ARC-Seal 1 none", "ARC-Message-Signature 1 ", "ARC-Authentication-Results 1 "}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("set 1: %q\n%s", got, v1.ForwardHeader)
	}
	if !strings.Contains(v1.ForwardHeader, "ARC-Authentication-Results: i=1; mx.relay.example.net;") {
		t.Errorf("AAR: %s", v1.ForwardHeader)
	}
	// the AAR payload parses as Authentication-Results
	for _, f := range parseHeader([]byte(v1.ForwardHeader)) {
		if f.lower() == "arc-authentication-results" {
			_, p, _ := strings.Cut(f.value(), ";")
			id, res, err := authres.Parse(p)
			if err != nil || id != "mx.relay.example.net" || len(res) != 4 {
				t.Errorf("AAR parse: %q %v %v", id, res, err)
			}
		}
	}
	out1 := delivered(v1, msg)

	// hop 2 validates our set and extends the chain
	a2 := e.hop2(t)
	in2 := Inbound{ClientIP: net.ParseIP("203.0.113.5"), Helo: "mx.relay.example.net", MailFrom: "SRS0=x@relay.example.net", Forward: true}
	v2 := run(a2, in2, out1)
	if r := v2.Results.ARC; r.Result != CVPass || r.Instances != 1 {
		t.Fatalf("hop 2 sees %+v", r)
	}
	if got := arcSummary(v2.ForwardHeader); len(got) != 3 || got[0] != "ARC-Seal 2 pass" {
		t.Fatalf("set 2: %q", got)
	}
	if d := v2.Results.DKIM; len(d) != 2 || d[0].Result != "pass" || d[1].Result != "pass" {
		t.Errorf("dkim after hop 1: %+v", d)
	}
	out2 := v2.ForwardHeader + v2.Header + out1

	// hop 3 sees a 2-set chain that passes
	v3 := run(e.a, in2, out2)
	if r := v3.Results.ARC; r.Result != CVPass || r.Instances != 2 {
		t.Fatalf("hop 3 sees %+v", r)
	}
	if got := arcSummary(v3.ForwardHeader); len(got) != 3 || got[0] != "ARC-Seal 3 pass" {
		t.Fatalf("set 3: %q", got)
	}

	// a changed body byte: the latest AMS fails, so the chain fails
	bad := strings.Replace(out2, "this is", "this iz", 1)
	vb := run(e.a, in2, bad)
	if r := vb.Results.ARC; r.Result != CVFail || !strings.Contains(r.Reason, "body hash") {
		t.Fatalf("tampered body: %+v", r)
	}
	_, m := parseAR(t, vb.Header)
	if value(m["arc"]) != "fail" {
		t.Errorf("A-R arc=%s", value(m["arc"]))
	}
	// we seal a failed chain with cv=fail over our set only
	if got := arcSummary(vb.ForwardHeader); len(got) != 3 || got[0] != "ARC-Seal 3 fail" {
		t.Fatalf("set after fail: %q", got)
	}
	// ... and the next hop sees the chain as failed and terminated: no new set
	vt := run(a2, in2, vb.ForwardHeader+vb.Header+bad)
	if r := vt.Results.ARC; r.Result != CVFail || !strings.Contains(r.Reason, "cv=fail") {
		t.Errorf("after cv=fail: %+v", r)
	}
	if strings.Contains(vt.ForwardHeader, "ARC-") {
		t.Errorf("sealed a terminated chain: %s", vt.ForwardHeader)
	}

	// a changed signed header (Subject) fails too
	vs := run(e.a, in2, strings.Replace(out2, "Subject: hello", "Subject: HELLO", 1))
	if vs.Results.ARC.Result != CVFail {
		t.Errorf("tampered subject: %+v", vs.Results.ARC)
	}
	// a changed older seal fails the chain
	vo := run(e.a, in2, strings.Replace(out2, "ARC-Authentication-Results: i=1; mx.relay.example.net;", "ARC-Authentication-Results: i=1; mx.relay.example.net; x=y;", 1))
	if r := vo.Results.ARC; r.Result != CVFail || !strings.Contains(r.Reason, "ARC-Seal i=") {
		t.Errorf("tampered AAR 1: %+v", r)
	}
}

func TestARCStructure(t *testing.T) {
	e := setup(t, nil)
	msg := signed(t, origMsg, rsaA, "s1")
	v1 := e.check(e.in("alice@example.org"), msg, 0)
	out := delivered(v1, msg)
	in := Inbound{ClientIP: net.ParseIP("203.0.113.5"), Helo: "h", MailFrom: "", Forward: true}

	// missing AAR
	var b strings.Builder
	for _, f := range parseHeader([]byte(v1.ForwardHeader)) {
		if f.lower() != "arc-authentication-results" {
			b.WriteString(f.Raw)
		}
	}
	v := run(e.a, in, b.String()+v1.Header+msg)
	if r := v.Results.ARC; r.Result != CVFail || !strings.Contains(r.Reason, "incomplete") {
		t.Errorf("missing AAR: %+v", r)
	}
	// duplicate set
	v = run(e.a, in, v1.ForwardHeader+out)
	if r := v.Results.ARC; r.Result != CVFail || !strings.Contains(r.Reason, "duplicate") {
		t.Errorf("duplicate: %+v", r)
	}
	// DNS failure for the seal key: fail, flagged temporary (no crash)
	e.dns.fail["fwd._domainkey.relay.example.net"] = true
	v = run(e.a, in, out)
	if r := v.Results.ARC; r.Result != CVFail {
		t.Errorf("dns failure: %+v", r)
	}
}
