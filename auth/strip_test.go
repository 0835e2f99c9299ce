package auth

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestStripForged(t *testing.T) {
	const id = "mx.relay.example.net"
	in := "Received: from x\r\n" +
		"Authentication-Results: mx.relay.example.net; spf=pass smtp.mailfrom=evil.example\r\n" +
		"authentication-results:   (comment) MX.Relay.Example.Net 1;\r\n\tdkim=pass header.d=bank.example\r\n" +
		"Authentication-Results: mx.relay.example.net.evil; dkim=pass\r\n" +
		"Authentication-Results: other.example; dmarc=pass\r\n" +
		"Subject: x\r\n" +
		"\r\n" +
		"Authentication-Results: mx.relay.example.net; in the body stays\r\n"
	want := "Received: from x\r\n" +
		"Authentication-Results: mx.relay.example.net.evil; dkim=pass\r\n" +
		"Authentication-Results: other.example; dmarc=pass\r\n" +
		"Subject: x\r\n" +
		"\r\n" +
		"Authentication-Results: mx.relay.example.net; in the body stays\r\n"
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"one-byte": iotest.OneByteReader(strings.NewReader(in)),
		"half":     iotest.HalfReader(strings.NewReader(in)),
	} {
		b, err := io.ReadAll(StripForged(r, id))
		if err != nil || string(b) != want {
			t.Errorf("%s: %v\n%q\nwant\n%q", name, err, b, want)
		}
	}
	if got := StripForgedHeader(in, id); got != want {
		t.Errorf("StripForgedHeader: %q", got)
	}
	// bare LF, and a forged field last without a body
	if got := StripForgedHeader("A: 1\nAuthentication-Results: mx.relay.example.net; x\n", id); got != "A: 1\n" {
		t.Errorf("LF: %q", got)
	}
	// an over-long line before a forged field does not hide it; the
	// over-long field itself passes whole
	long := "X-Long: " + strings.Repeat("a", 200<<10) + "\r\n"
	got := StripForgedHeader(long+"Authentication-Results: mx.relay.example.net; x\r\n\r\nbody", id)
	if got != long+"\r\nbody" {
		t.Errorf("long line: len %d", len(got))
	}
	// errors of the source are passed on
	_, err := io.ReadAll(StripForged(io.MultiReader(strings.NewReader("A: 1\r\n"), iotest.ErrReader(errors.New("boom"))), id))
	if err == nil || err.Error() != "boom" {
		t.Errorf("err %v", err)
	}
}

func TestStripThenCheck(t *testing.T) {
	// the relay: client data → StripForged → (spool, Check)
	e := setup(t, nil)
	msg := "Authentication-Results: mx.relay.example.net; dkim=pass header.d=example.org\r\n" + signed(t, origMsg, rsaA, "s1")
	c := e.a.Start(e.in("alice@example.org"))
	var spool strings.Builder
	if _, err := io.Copy(&spool, io.TeeReader(StripForged(strings.NewReader(msg), e.a.AuthServID()), c)); err != nil {
		t.Fatal(err)
	}
	v := c.Finish()
	if strings.Contains(spool.String(), "Authentication-Results") {
		t.Errorf("forged field spooled")
	}
	if strings.Count(v.Header, "Authentication-Results:") != 1 || v.Results.DKIM[0].Result != "pass" {
		t.Errorf("%q %+v", v.Header, v.Results.DKIM)
	}
}
