//go:build e2e

package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// scrapeMetrics reads the relay's /metrics into "name{labels}" → value.
func scrapeMetrics(t *testing.T, p *mailfwdProc) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); i > 0 && err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

// waitHealthy waits for /healthz to answer 200 ok: the SMTP port takes
// connections a moment before the admin listener and the scheduler are up.
func waitHealthy(t *testing.T, p *mailfwdProc) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(p.admin + "/healthz")
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if first, _, _ := strings.Cut(string(body), "\n"); resp.StatusCode == 200 && first == "ok" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz never answered 200 ok: %v %q", err, body)
		}
	}
}

// The relay's admin listener answers /healthz, and /metrics counts what a
// session, the directory, SRS and delivery did.
func TestMetricsAndHealth(t *testing.T) {
	waitHealthy(t, suite.relay)
	before := scrapeMetrics(t, suite.relay)

	// One accepted internal and one external (SRS) recipient, one unknown,
	// one foreign: the refusals in a session of their own.
	tok := suite.token(t)
	sendSwaks(t, suite.relay.addr, tok, "sales@company.com", "internal.user@company.com")
	c, err := smtp.Dial(suite.relay.addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@example.org", nil); err != nil {
		t.Fatal(err)
	}
	c.Rcpt("nobody-"+strconv.Itoa(time.Now().Nanosecond())+"@company.com", nil) // not in the directory: the replica says so
	c.Rcpt("someone@example.org", nil)
	c.Quit()
	suite.arrived(t, tok, map[string]int{"central@company.com": 1, "external.user@gmail.com": 1}, 30*time.Second)

	var after map[string]float64
	want := map[string]float64{ // at least this much more than before
		`mailfwd_rcpt_replies_total{code="250"}`:       2,
		`mailfwd_rcpt_replies_total{code="550"}`:       1,
		`mailfwd_rcpt_replies_total{code="554"}`:       1,
		`mailfwd_connections_total{result="accepted"}`: 2,
		`mailfwd_messages_total{result="queued"}`:      1,
		`mailfwd_srs_total{op="forward",result="ok"}`:  1,
		`mailfwd_deliveries_total{result="sent"}`:      2,
		// The suite's 389-DS has the Content Synchronization plugin: RCPTs
		// are answered by the replica, no LDAP query, no cache.
		`mailfwd_directory_answers_total{origin="replica"}`: 3,
	}
	// Deliveries are counted right after the next hop's reply: wait a little.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		after = scrapeMetrics(t, suite.relay)
		short := ""
		for k, d := range want {
			if after[k]-before[k] < d {
				short += "\n  " + k + ": " + strconv.FormatFloat(before[k], 'f', -1, 64) + " → " + strconv.FormatFloat(after[k], 'f', -1, 64)
			}
		}
		if short == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics did not grow as expected:%s", short)
		}
	}
	if after[`mailfwd_rcpt_replies_total{code="250"}`] <= 0 {
		t.Fatal("no RCPT 250 counted")
	}
	if d := after["mailfwd_ldap_lookup_seconds_count"] - before["mailfwd_ldap_lookup_seconds_count"]; d != 0 {
		t.Errorf("%v LDAP queries for RCPTs the replica answers", d)
	}
	for _, k := range []string{"mailfwd_queue_messages", "mailfwd_queue_oldest_message_age_seconds", "mailfwd_connections_open",
		"mailfwd_ldap_errors_total", "mailfwd_directory_cache_hits_total", `mailfwd_dsns_total{kind="failure"}`,
		"mailfwd_directory_replica_entries", "mailfwd_directory_replica_lag_seconds"} {
		if _, ok := after[k]; !ok {
			t.Errorf("%s missing from /metrics", k)
		}
	}
}

// /healthz turns 503, with the reason, when the spool cannot take a write
// (full, then read-only), and back to 200 when it can.
func TestMetricsHealthzSpool(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "healthz")
	mnt, unmount := mountSpoolTmpfs(t, dir, "1m")
	defer unmount()
	p, err := suite.startMailfwdExtra(dir, unsafeSpool)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	healthz := func(wantCode int, want string) {
		t.Helper()
		resp, err := http.Get(p.admin + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantCode || !strings.Contains(string(b), want) {
			t.Fatalf("/healthz: %d %q, want %d %q", resp.StatusCode, b, wantCode, want)
		}
	}
	waitHealthy(t, p)
	filler := filepath.Join(mnt, "filler")
	os.WriteFile(filler, make([]byte, 2<<20), 0o600) // more than fits: the disk is full
	healthz(503, "no space left on device")
	os.Remove(filler)
	healthz(200, "ok")
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v\n%s", err, out)
	}
	healthz(503, "read-only file system")
	if out, err := exec.Command("mount", "-o", "remount,rw", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount rw: %v\n%s", err, out)
	}
	healthz(200, "ok")
}
