package queue

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/dsn")

// The DSNs we generate, byte for byte (boundary normalised), as golden
// files: a failed local recipient, a failed forward (the outside address
// hidden, then revealed), a forward expired, a delayed forward.
func TestDSNGolden(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	env := &Envelope{ID: "6619B0A1B2C3D4E5F60", From: "alice@example.org", Received: now.Add(-2 * time.Hour), DSNEnvID: "env-42"}
	local := &Recipient{Addr: "central@company.com", OrigTo: "sales@company.com", Status: Failed,
		LastReply: "550 5.1.1 <central@company.com>: Recipient address rejected: User unknown"}
	fwd := &Recipient{Addr: "john.private@gmail.example", OrigTo: "john@company.com", External: true, Status: Failed,
		LastReply: "550 5.1.1 The email account <john.private@gmail.example> that you tried to reach does not exist"}
	expired := &Recipient{Addr: "john.private@gmail.example", OrigTo: "john@company.com", External: true, Status: Failed,
		LastReply: "message expired after 120h0m0s in the queue; last error: 451 4.7.1 <john.private@gmail.example> greylisted", expired: true}
	delayed := &Recipient{Addr: "john.private@gmail.example", OrigTo: "john@company.com", External: true, Status: Pending,
		LastReply: "421 4.7.0 [192.0.2.9] try again later, john.private@gmail.example"}
	orig := "Received: from client.example\r\nFrom: Alice <alice@example.org>\r\nTo: john@company.com\r\nSubject: lunch\r\nMessage-ID: <m1@example.org>\r\n\r\nthe body\r\n"
	for _, c := range []struct {
		name   string
		rcpts  []*Recipient
		kind   dsnKind
		reveal bool
	}{
		{"failed-local", []*Recipient{local}, dsnFailed, false},
		{"failed-forward", []*Recipient{fwd}, dsnFailed, false},
		{"failed-forward-revealed", []*Recipient{fwd}, dsnFailed, true},
		{"expired-forward", []*Recipient{expired}, dsnFailed, false},
		{"delayed-forward", []*Recipient{delayed}, dsnDelayed, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := writeDSN(&b, "mx.company.com", env, c.rcpts, c.kind, strings.NewReader(orig), now, now.Add(118*time.Hour), c.reveal); err != nil {
				t.Fatal(err)
			}
			got := regexp.MustCompile(`mailfwd-[0-9a-f]{24}`).ReplaceAllString(b.String(), "mailfwd-BOUNDARY")
			path := filepath.Join("testdata", "dsn", c.name+".eml")
			if *updateGolden {
				os.WriteFile(path, []byte(got), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test ./queue -run TestDSNGolden -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("DSN differs from %s:\n%s", path, got)
			}
			hidden := !c.reveal && c.rcpts[0].External
			if leaks := strings.Contains(got, "john.private@gmail.example"); hidden && leaks {
				t.Errorf("the DSN names the outside address:\n%s", got)
			} else if !hidden && c.rcpts[0].External && !leaks {
				t.Errorf("revealed, but the outside address is missing:\n%s", got)
			}
		})
	}
}

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
			q := &Scheduler{Spool: s, Hop: hop, Workers: 2, Hostname: "relay.test", ForwardDSN: c.policy,
				Retry: Retry{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { q.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			w, _ := s.Create()
			w.Write([]byte("Subject: x\r\n\r\nx\r\n"))
			env := &Envelope{From: "alice@example.org", SenderAuth: c.senderAuth,
				Recipients: []Recipient{{Addr: "gone@outside.test", OrigTo: "john@company.test", External: c.external, Status: Pending}}}
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
	env := &Envelope{From: "alice@example.org", ForwardHeader: "DKIM-Signature: original\r\n",
		FromRewrite: &FromRewrite{Offset: int64(from), Length: int64(len("From: Alice <alice@example.org>\r\n")),
			Fields: "From: \"Alice via us\" <fwd@us.test>\r\nX-Original-From: Alice <alice@example.org>\r\n", ForwardHeader: "DKIM-Signature: rewritten\r\n"},
		Recipients: []Recipient{
			{Addr: "a@outside.test", External: true, RewriteFrom: true, Status: Pending},
			{Addr: "b@outside.test", External: true, Status: Pending},
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
