package tlsrpt

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

// mailbox is a SendMail that keeps what it is given.
type mailbox struct {
	mu   sync.Mutex
	err  error
	msgs []sentMail
}

type sentMail struct {
	from, to string
	msg      []byte
}

func (m *mailbox) send(_ context.Context, from, to string, msg []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.msgs = append(m.msgs, sentMail{from, to, msg})
	return nil
}

func (m *mailbox) sent() []sentMail {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]sentMail(nil), m.msgs...)
}

func (m *mailbox) setErr(err error) {
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
}

type env struct {
	clk *clock
	rec *Recorder
	rp  *Reporter
	dns *resolver
	mb  *mailbox
	ps  *postServer
}

func newEnv(t *testing.T, path string) *env {
	t.Helper()
	e := &env{
		clk: newClock("2016-04-01T10:00:00Z"),
		dns: &resolver{txt: map[string][]string{}, fail: map[string]bool{}},
		mb:  &mailbox{},
		ps:  newPostServer(t),
	}
	e.rec = openRecorder(t, RecorderOptions{Path: path, Now: e.clk.Now})
	e.rp = e.reporter(t, e.rec)
	return e
}

func (e *env) reporter(t *testing.T, rec *Recorder) *Reporter {
	t.Helper()
	rp, err := NewReporter(Config{
		Recorder:   rec,
		Info:       testInfo,
		Resolver:   e.dns,
		SendMail:   e.mb.send,
		HTTPClient: e.ps.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

func TestSendDay(t *testing.T) {
	const name = "_smtp._tls.company-y.example"
	tests := []struct {
		name      string
		txt       func(url string) []string // nil: NXDOMAIN
		dnsFail   bool
		status    int
		mailErr   error
		wantErr   bool
		mails     int // delivered on the first attempt
		posts     int
		kept      bool // counts left for a retry
		mails2    int  // delivered by the retry, once all is well
		posts2    int
		noMailCfg bool
	}{
		{name: "mailto", txt: func(string) []string { return []string{"v=TLSRPTv1; rua=mailto:tls@company-y.example"} },
			mails: 1},
		{name: "https", txt: func(u string) []string { return []string{"v=TLSRPTv1; rua=" + u} }, posts: 1},
		{name: "both", txt: func(u string) []string {
			return []string{"v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls@company-y.example," + u}
		}, mails: 1, posts: 1},
		{name: "no record", txt: nil},
		{name: "unusable record", txt: func(string) []string {
			return []string{"v=TLSRPTv1; rua=mailto:a@company-y.example", "v=TLSRPTv1; rua=mailto:b@company-y.example"}
		}},
		{name: "transport not configured", noMailCfg: true,
			txt: func(string) []string { return []string{"v=TLSRPTv1; rua=mailto:tls@company-y.example"} }},
		{name: "dns failure retried", dnsFail: true,
			txt:     func(u string) []string { return []string{"v=TLSRPTv1; rua=mailto:tls@company-y.example," + u} },
			wantErr: true, kept: true, mails2: 1, posts2: 1},
		{name: "https failure retried alone", status: http.StatusServiceUnavailable,
			txt:     func(u string) []string { return []string{"v=TLSRPTv1; rua=mailto:tls@company-y.example," + u} },
			wantErr: true, mails: 1, kept: true, posts2: 1},
		{name: "mail failure retried alone", mailErr: errors.New("spool full"),
			txt:     func(u string) []string { return []string{"v=TLSRPTv1; rua=mailto:tls@company-y.example," + u} },
			wantErr: true, posts: 1, kept: true, mails2: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, filepath.Join(t.TempDir(), "state.json"))
			if tt.noMailCfg {
				e.rp.cfg.SendMail = nil
			}
			if tt.txt != nil {
				e.dns.txt[name] = tt.txt(e.ps.URL + "/tlsrpt")
			}
			e.dns.fail[name] = tt.dnsFail
			if tt.status != 0 {
				e.ps.setStatus(tt.status)
			}
			e.mb.setErr(tt.mailErr)
			for range 4 {
				e.rec.Success(stsPolicy)
			}
			want := e.rec.Reports(e.clk.Now(), testInfo)[0]
			e.clk.Set("2016-04-02T00:30:00Z")

			err := e.rp.SendDay(context.Background(), want.DateRange.Start)
			if (err != nil) != tt.wantErr {
				t.Fatalf("SendDay: %v, want error %v", err, tt.wantErr)
			}
			check := func(mails, posts int, kept bool) {
				t.Helper()
				if n := len(e.mb.sent()); n != mails {
					t.Errorf("%d mails sent, want %d", n, mails)
				}
				if n := len(e.ps.received()); n != posts {
					t.Errorf("%d POSTs, want %d", n, posts)
				}
				for _, p := range e.ps.received() {
					if !reflect.DeepEqual(p, want) {
						t.Errorf("POSTed report differs: %+v", p)
					}
				}
				for _, m := range e.mb.sent() {
					if m.from != "noreply-tlsrpt@mail.company-x.example" || m.to != "tls@company-y.example" {
						t.Errorf("mail from %q to %q", m.from, m.to)
					}
					parseMail(t, m.msg, m.from, m.to, testInfo.Submitter, want)
				}
				if got := len(e.rec.Reports(want.DateRange.Start, testInfo)) == 1; got != kept {
					t.Errorf("counts kept = %v, want %v", got, kept)
				}
			}
			check(tt.mails, tt.posts, tt.kept)
			if !tt.kept {
				return
			}

			// A restart before the retry: what was delivered is remembered.
			rec2 := openRecorder(t, RecorderOptions{Path: e.rec.opts.Path, Now: e.clk.Now})
			e.rec, e.rp = rec2, e.reporter(t, rec2)
			e.dns.fail[name] = false
			e.ps.setStatus(http.StatusOK)
			e.mb.setErr(nil)
			if err := e.rp.SendDay(context.Background(), want.DateRange.Start); err != nil {
				t.Fatalf("retry: %v", err)
			}
			check(tt.mails+tt.mails2, tt.posts+tt.posts2, false)
		})
	}
}

func TestSendDayNotOver(t *testing.T) {
	e := newEnv(t, "")
	e.rec.Success(stsPolicy)
	for _, day := range []string{"2016-04-01T00:00:00Z", "2016-04-01T23:59:59Z", "2016-04-05T00:00:00Z"} {
		if err := e.rp.SendDay(context.Background(), newClock(day).Now()); !errors.Is(err, ErrDayNotOver) {
			t.Errorf("SendDay(%s) = %v, want ErrDayNotOver", day, err)
		}
	}
	if len(e.rec.Reports(e.clk.Now(), testInfo)) != 1 {
		t.Error("counts of today were touched")
	}
}

func TestSendDayManyDomains(t *testing.T) {
	e := newEnv(t, "")
	fillDay(e.rec)
	e.dns.txt["_smtp._tls.company-y.example"] = []string{"v=TLSRPTv1; rua=mailto:tls@company-y.example"}
	e.dns.txt["_smtp._tls.dane.example"] = []string{"v=TLSRPTv1; rua=" + e.ps.URL + "/dane"}
	// plain.example publishes nothing.
	want := e.rec.Reports(e.clk.Now(), testInfo)
	e.clk.Set("2016-04-03T00:20:00Z")
	if err := e.rp.SendPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := e.mb.sent(); len(m) != 1 {
		t.Fatalf("%d mails", len(m))
	} else {
		parseMail(t, m[0].msg, m[0].from, m[0].to, testInfo.Submitter, want[0])
	}
	if p := e.ps.received(); len(p) != 1 || !reflect.DeepEqual(p[0], want[1]) {
		t.Errorf("POSTs %+v", p)
	}
	if s := e.rec.Stats(); s.Days != 0 || s.Domains != 0 {
		t.Errorf("Stats %+v, want all cleared", s)
	}
}

func TestNewReporterValidates(t *testing.T) {
	rec := openRecorder(t, RecorderOptions{})
	for _, cfg := range []Config{
		{Info: testInfo},
		{Recorder: rec, Info: ReportInfo{ContactInfo: "x", Submitter: "a.example"}},
		{Recorder: rec, Info: ReportInfo{OrganizationName: "x", ContactInfo: "x", Submitter: "not a domain"}},
	} {
		if _, err := NewReporter(cfg); err == nil {
			t.Errorf("NewReporter(%+v) accepted", cfg)
		}
	}
}

// TestRun: started with a finished day pending (as after a restart), Run
// sends it after SendDelay and flushes when stopped.
func TestRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	e := newEnv(t, path)
	e.dns.txt["_smtp._tls.company-y.example"] = []string{"v=TLSRPTv1; rua=" + e.ps.URL + "/r"}
	e.rec.Success(stsPolicy)
	e.clk.Set("2016-04-02T08:00:00Z")
	e.rec.Success(noPolicy) // today's, must stay
	e.rp.cfg.SendDelay = 10 * time.Millisecond
	e.rp.cfg.FlushInterval = 5 * time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.rp.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	// Wait for the recorder to clear the sent day, not for the POST to
	// arrive: the server records it before the client has its answer,
	// and a cancel in between is (rightly) a failed send, kept to retry.
	for len(e.ps.received()) == 0 || e.rec.Stats().Days != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("report not sent: %d POSTs, %+v", len(e.ps.received()), e.rec.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	rec2 := openRecorder(t, RecorderOptions{Path: path, Now: e.clk.Now})
	if s := rec2.Stats(); s.Days != 1 || s.Domains != 1 {
		t.Errorf("saved state %+v, want only today's domain", s)
	}
	if got := rec2.Reports(e.clk.Now(), testInfo); len(got) != 1 || got[0].PolicyDomain() != "plain.example" {
		t.Errorf("today's counts lost: %+v", got)
	}
}

func TestNextSlot(t *testing.T) {
	e := newEnv(t, "")
	e.clk.Set("2016-04-01T22:00:00Z")
	e.rp.cfg.SendJitter = 0
	if d := e.rp.nextSlot(); d != 2*time.Hour+15*time.Minute {
		t.Errorf("nextSlot = %v, want 2h15m", d)
	}
	e.rp.cfg.SendJitter = time.Minute
	for range 20 {
		if d := e.rp.nextSlot(); d < 2*time.Hour+15*time.Minute || d >= 2*time.Hour+16*time.Minute {
			t.Errorf("nextSlot with jitter = %v", d)
		}
	}
}
