package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"mailfwd/queue/envelope"
)

// A failed forward bounces only to a sender authenticated at our edge
// (ForwardDSN default); local failures bounce as always.
func TestForwardDSNPolicy(t *testing.T) {
	for _, c := range []struct {
		name       string
		policy     ForwardDSN
		senderAuth string
		external   bool
		wantDSN    bool
	}{
		{"forward, sender authenticated by SPF", "", "spf", true, true},
		{"forward, sender authenticated by DKIM", ForwardDSNAuthenticated, "dkim", true, true},
		{"forward, sender not authenticated", "", "", true, false},
		{"forward, always", ForwardDSNAlways, "", true, true},
		{"forward, never", ForwardDSNNever, "spf", true, false},
		{"local recipient, sender not authenticated", "", "", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openTestSpool(t)
			hop := newScriptHop(map[string][]int{"gone@outside.test": {550}})
			q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 2, Hostname: "relay.test", ForwardDSN: c.policy,
				Retry: Retry{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond}})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { q.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			w, _ := s.Create()
			w.Write([]byte("Subject: x\r\n\r\nx\r\n"))
			env := &envelope.Envelope{From: "alice@example.org", SenderAuth: c.senderAuth,
				Recipients: []envelope.Recipient{{Addr: "gone@outside.test", OrigTo: "john@company.test", Forward: c.external, Status: envelope.Pending}}}
			if err := w.Commit(env); err != nil {
				t.Fatal(err)
			}
			q.Submit(env)
			waitFor(t, "spool to empty", spoolEmpty(s))
			time.Sleep(100 * time.Millisecond)
			_, got := hop.delivered("alice@example.org")
			if got != c.wantDSN {
				t.Errorf("DSN to the sender: %v, want %v", got, c.wantDSN)
			}
		})
	}
}

// A forward with RewriteFrom leaves with the From field replaced and the
// rewritten signatures, in a transaction of its own; the other as spooled.
// (Recipient.rewrites: only external forwards are ever rewritten.)
func TestFromRewriteDelivery(t *testing.T) {
	s := openTestSpool(t)
	hop := newScriptHop(nil)
	q, stop := runScheduler(t, s, hop)
	defer stop()
	body := "Received: by us\r\nFrom: Alice <alice@example.org>\r\nSubject: x\r\n\r\nbody\r\n"
	from := strings.Index(body, "From:")
	w, _ := s.Create()
	w.Write([]byte(body))
	env := &envelope.Envelope{From: "alice@example.org", ForwardHeader: "DKIM-Signature: original\r\n",
		FromRewrite: &envelope.FromRewrite{Offset: int64(from), Length: int64(len("From: Alice <alice@example.org>\r\n")),
			Fields: "From: \"Alice via us\" <fwd@us.test>\r\nX-Original-From: Alice <alice@example.org>\r\n", ForwardHeader: "DKIM-Signature: rewritten\r\n"},
		Recipients: []envelope.Recipient{
			{Addr: "a@outside.test", Forward: true, RewriteFrom: true, Status: envelope.Pending},
			{Addr: "b@outside.test", Forward: true, Status: envelope.Pending},
		}}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	q.Submit(env)
	waitFor(t, "spool to empty", spoolEmpty(s))
	a, _ := hop.delivered("a@outside.test")
	b, _ := hop.delivered("b@outside.test")
	wantA := "DKIM-Signature: rewritten\r\nReceived: by us\r\nFrom: \"Alice via us\" <fwd@us.test>\r\nX-Original-From: Alice <alice@example.org>\r\nSubject: x\r\n\r\nbody\r\n"
	if a != wantA {
		t.Errorf("rewritten forward:\n%q\nwant\n%q", a, wantA)
	}
	if b != "DKIM-Signature: original\r\n"+body {
		t.Errorf("forward without RewriteFrom:\n%q", b)
	}
	hop.mu.Lock()
	n := hop.sends
	hop.mu.Unlock()
	if n != 2 {
		t.Errorf("%d transactions, want 2 (one per header form)", n)
	}
}
