package tlsrpt

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlsrpt.json")
	clk := newClock("2016-04-01T10:00:00Z")
	r1 := openRecorder(t, RecorderOptions{Path: path, Now: clk.Now})
	if err := r1.Flush(); err != nil { // nothing recorded: no file
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("file written with nothing to save: %v", err)
	}
	fillDay(r1)
	r1.markSent(clk.Now(), "company-y.example", "mailto:a@company-y.example")
	if err := r1.Flush(); err != nil {
		t.Fatal(err)
	}
	want := r1.Reports(clk.Now(), testInfo)

	// A restart: a new Recorder from the same file sees the same day.
	r2 := openRecorder(t, RecorderOptions{Path: path, Now: clk.Now})
	if got := r2.Reports(clk.Now(), testInfo); !reflect.DeepEqual(got, want) {
		t.Errorf("reports after reload differ:\n got %+v\nwant %+v", got, want)
	}
	if s1, s2 := r1.Stats(), r2.Stats(); s1.Domains != s2.Domains || s1.FailureDetails != s2.FailureDetails {
		t.Errorf("sizes after reload %+v, before %+v", s2, s1)
	}
	p := r2.pending(clk.Now(), testInfo)
	if len(p) != 3 || !p[0].sent["mailto:a@company-y.example"] {
		t.Errorf("delivered-to state lost: %+v", p)
	}

	// Counting continues on top of the loaded counts.
	r2.Success(noPolicy)
	if err := r2.Flush(); err != nil {
		t.Fatal(err)
	}
	r3 := openRecorder(t, RecorderOptions{Path: path, Now: clk.Now})
	for _, rep := range r3.Reports(clk.Now(), testInfo) {
		if rep.PolicyDomain() == "plain.example" {
			if n := rep.Policies[0].Summary.TotalSuccessfulSessionCount; n != 2 {
				t.Errorf("plain.example successes = %d, want 2", n)
			}
		}
	}

	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only the state file", names)
	}
}

func TestOpenRecorderBadFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, content string }{
		{"not JSON", "{"},
		{"wrong version", `{"version":99,"days":[]}`},
		{"bad day", `{"version":1,"days":[{"day":"yesterday","domains":[]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenRecorder(RecorderOptions{Path: path}); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestBounds(t *testing.T) {
	policy := func(domain string) PolicyKey {
		return PolicyKey{Type: PolicySTS, Domain: domain, String: []string{"version: STSv1"}}
	}
	fail := func(i int) FailureDetail {
		return FailureDetail{ResultType: ResultCertificateExpired, ReceivingMXHostname: fmt.Sprintf("mx%d.example", i)}
	}
	tests := []struct {
		name    string
		opts    RecorderOptions
		record  func(r *Recorder)
		want    Stats
		reports int
	}{
		{"domains", RecorderOptions{MaxDomains: 3}, func(r *Recorder) {
			for i := range 5 {
				r.Success(policy(fmt.Sprintf("d%d.example", i)))
				r.Success(policy(fmt.Sprintf("d%d.example", i)))
			}
		}, Stats{Days: 1, Domains: 3, DroppedDomainSessions: 4}, 3},
		{"policies per domain", RecorderOptions{MaxPoliciesPerDomain: 2}, func(r *Recorder) {
			for i := range 4 {
				p := policy("d.example")
				p.String = []string{fmt.Sprint("max_age: ", i)}
				r.Success(p)
			}
		}, Stats{Days: 1, Domains: 1, DroppedPolicySessions: 2}, 1},
		{"details per policy", RecorderOptions{MaxFailureDetailsPerPolicy: 2}, func(r *Recorder) {
			for i := range 4 {
				r.Failure(policy("d.example"), fail(i))
			}
			r.Failure(policy("d.example"), fail(0)) // a known detail still counts
		}, Stats{Days: 1, Domains: 1, FailureDetails: 2, DroppedFailureDetails: 2}, 1},
		{"details overall", RecorderOptions{MaxFailureDetails: 3}, func(r *Recorder) {
			for i := range 4 {
				r.Failure(policy("a.example"), fail(i))
				r.Failure(policy("b.example"), fail(i))
			}
		}, Stats{Days: 1, Domains: 2, FailureDetails: 3, DroppedFailureDetails: 5}, 2},
		{"rejected", RecorderOptions{}, func(r *Recorder) {
			r.Success(PolicyKey{Type: "dmarc", Domain: "d.example"})
			r.Success(PolicyKey{Type: PolicySTS, Domain: "bad domain\r\n.example"})
			r.Success(PolicyKey{Type: PolicySTS, Domain: ""})
			r.Failure(policy("d.example"), FailureDetail{ResultType: "certificate-revoked"})
		}, Stats{Days: 1, Domains: 1, RejectedSessions: 3, InvalidFailureDetails: 1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock("2016-04-01T10:00:00Z")
			tt.opts.Now = clk.Now
			r := openRecorder(t, tt.opts)
			tt.record(r)
			if got := r.Stats(); got != tt.want {
				t.Errorf("Stats = %+v\n   want %+v", got, tt.want)
			}
			reps := r.Reports(clk.Now(), testInfo)
			if len(reps) != tt.reports {
				t.Errorf("%d reports, want %d", len(reps), tt.reports)
			}
			for _, rep := range reps {
				if p := checkReport(mustJSON(t, rep)); len(p) > 0 {
					t.Errorf("%v", p)
				}
			}
		})
	}
}

// TestFailureTotalsSurviveCaps: a failure whose detail is dropped still
// counts in the summary.
func TestFailureTotalsSurviveCaps(t *testing.T) {
	clk := newClock("2016-04-01T10:00:00Z")
	r := openRecorder(t, RecorderOptions{Now: clk.Now, MaxFailureDetailsPerPolicy: 1})
	for i := range 3 {
		r.Failure(noPolicy, FailureDetail{ResultType: ResultSTARTTLSNotSupported, ReceivingIP: fmt.Sprintf("192.0.2.%d", i)})
	}
	pol := r.Reports(clk.Now(), testInfo)[0].Policies[0]
	if pol.Summary.TotalFailureSessionCount != 3 || len(pol.FailureDetails) != 1 {
		t.Errorf("summary %+v with %d details, want 3 failures and 1 detail", pol.Summary, len(pol.FailureDetails))
	}
}

func TestNormalisation(t *testing.T) {
	clk := newClock("2016-04-01T10:00:00Z")
	r := openRecorder(t, RecorderOptions{Now: clk.Now})
	mx := []string{"MX.Example."}
	p := PolicyKey{Type: PolicySTS, Domain: "Example.COM.", MXHost: mx, String: []string{"version: STSv1"}}
	r.Failure(p, FailureDetail{ResultType: ResultCertificateExpired, ReceivingIP: "2001:DB8:0::1", ReceivingMXHostname: "MX1.Example.COM."})
	mx[0] = "changed.example" // the recorder must have copied the slice
	p.Domain, p.MXHost = "example.com", []string{"mx.example"}
	r.Failure(p, FailureDetail{ResultType: ResultCertificateExpired, ReceivingIP: "2001:db8::1", ReceivingMXHostname: "mx1.example.com"})
	r.Failure(p, FailureDetail{ResultType: ResultCertificateExpired, ReceivingIP: "2001:db8::1", ReceivingMXHostname: "mx1.example.com",
		ReceivingMXHelo: strings.Repeat("h", 10000) + "\xff"})

	reps := r.Reports(clk.Now(), testInfo)
	if len(reps) != 1 || len(reps[0].Policies) != 1 {
		t.Fatalf("want one report with one policy, got %+v", reps)
	}
	pol := reps[0].Policies[0]
	if pol.Policy.Domain != "example.com" || !reflect.DeepEqual(pol.Policy.MXHost, []string{"mx.example"}) {
		t.Errorf("policy %+v", pol.Policy)
	}
	if len(pol.FailureDetails) != 2 || pol.FailureDetails[0].FailedSessionCount != 2 {
		t.Errorf("details %+v, want equal details merged", pol.FailureDetails)
	}
	if h := pol.FailureDetails[1].ReceivingMXHelo; len(h) > 255 {
		t.Errorf("HELO of %d bytes kept", len(h))
	}
}

func TestExpiry(t *testing.T) {
	clk := newClock("2016-04-01T10:00:00Z")
	r := openRecorder(t, RecorderOptions{Now: clk.Now, KeepDays: 2})
	r.Success(noPolicy)
	clk.Set("2016-04-02T10:00:00Z")
	r.Success(noPolicy)
	if s := r.Stats(); s.Days != 2 || s.ExpiredDays != 0 {
		t.Fatalf("Stats %+v, want 2 days held", s)
	}
	clk.Set("2016-04-03T00:00:01Z")
	r.Success(noPolicy)
	if s := r.Stats(); s.Days != 2 || s.ExpiredDays != 1 || s.Domains != 2 {
		t.Errorf("Stats %+v, want April 1st expired", s)
	}
	if got := r.Reports(newClock("2016-04-01T00:00:00Z").Now(), testInfo); len(got) != 0 {
		t.Errorf("expired day still reported")
	}
}

func TestConcurrentRecording(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	clk := newClock("2016-04-01T10:00:00Z")
	r := openRecorder(t, RecorderOptions{Path: path, Now: clk.Now})
	var wg sync.WaitGroup
	const workers, each = 8, 500
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if i%2 == 0 {
					r.Success(stsPolicy)
				} else {
					r.Failure(stsPolicy, FailureDetail{ResultType: ResultValidationFailure, ReceivingIP: fmt.Sprintf("192.0.2.%d", w)})
				}
				if i%100 == 0 {
					if err := r.Flush(); err != nil {
						t.Error(err)
					}
					r.Reports(clk.Now(), testInfo)
				}
			}
		})
	}
	wg.Wait()
	s := r.Reports(clk.Now(), testInfo)[0].Policies[0].Summary
	if s.TotalSuccessfulSessionCount+s.TotalFailureSessionCount != workers*each {
		t.Errorf("summary %+v, want %d sessions", s, workers*each)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
