package tlsrpt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailfwd/internal/golden"
)

func TestReportGolden(t *testing.T) {
	clk := newClock("2016-04-01T10:00:00Z")
	r := openRecorder(t, RecorderOptions{Now: clk.Now})
	fillDay(r)

	reps := r.Reports(time.Date(2016, 4, 1, 23, 0, 0, 0, time.UTC), testInfo)
	tests := []struct{ domain, golden string }{
		{"company-y.example", "report.json"},
		{"dane.example", "report-tlsa.json"},
		{"plain.example", "report-no-policy.json"},
	}
	if len(reps) != len(tests) {
		t.Fatalf("%d reports, want %d", len(reps), len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			rep := reps[i]
			if rep.PolicyDomain() != tt.domain {
				t.Fatalf("report %d is for %q, want %q", i, rep.PolicyDomain(), tt.domain)
			}
			got, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tt.golden)
			golden.Check(t, path, got)
			if p := checkReport(got); len(p) > 0 {
				t.Errorf("golden report fails the schema check:\n%s", strings.Join(p, "\n"))
			}
		})
	}

	if got := r.Reports(clk.Now().AddDate(0, 0, 1), testInfo); len(got) != 0 {
		t.Errorf("next day has %d reports, want none", len(got))
	}
}

func TestDefaultReportID(t *testing.T) {
	clk := newClock("2016-04-01T10:00:00Z")
	r := openRecorder(t, RecorderOptions{Now: clk.Now})
	r.Success(noPolicy)
	info := testInfo
	info.ReportID = nil
	reps := r.Reports(clk.Now(), info)
	if len(reps) != 1 {
		t.Fatalf("%d reports", len(reps))
	}
	const want = "2016-04-01_plain.example@mail.company-x.example"
	if reps[0].ReportID != want {
		t.Errorf("report-id = %q, want %q", reps[0].ReportID, want)
	}
	if f := Filename(info.Submitter, reps[0]); f != "mail.company-x.example!plain.example!1459468800!1459555199!2016-04-01_plain.example_mail.company-x.example.json.gz" {
		t.Errorf("Filename = %q", f)
	}
}

// TestReportSchema runs the RFC 8460 structure check over generated
// reports, and over broken variants of one to show the check bites.
func TestReportSchema(t *testing.T) {
	clk := newClock("2016-04-01T10:00:00Z")
	r := openRecorder(t, RecorderOptions{Now: clk.Now})
	fillDay(r)
	// Every result type and optional field, so the check sees them all.
	for _, rt := range ResultTypes {
		r.Failure(tlsaPolicy, FailureDetail{ResultType: rt, SendingMTAIP: "192.0.2.1", ReceivingMXHelo: "helo", FailureReasonCode: "x"})
	}
	var valid []byte
	for _, rep := range r.Reports(clk.Now(), testInfo) {
		raw, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		if p := checkReport(raw); len(p) > 0 {
			t.Errorf("%s:\n%s", rep.PolicyDomain(), strings.Join(p, "\n"))
		}
		if rep.PolicyDomain() == "company-y.example" {
			valid = raw
		}
	}

	policy0 := func(m map[string]any) map[string]any {
		return m["policies"].([]any)[0].(map[string]any)
	}
	detail0 := func(m map[string]any) map[string]any {
		return policy0(m)["failure-details"].([]any)[0].(map[string]any)
	}
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		want   string // in one of the problems
	}{
		{"no report-id", func(m map[string]any) { delete(m, "report-id") }, "report-id: missing"},
		{"numeric org", func(m map[string]any) { m["organization-name"] = 3 }, "organization-name: not a string"},
		{"unknown field", func(m map[string]any) { m["report_id"] = "x" }, "unknown field"},
		{"two days", func(m map[string]any) {
			m["date-range"].(map[string]any)["end-datetime"] = "2016-04-02T23:59:59Z"
		}, "not one UTC day"},
		{"not midnight", func(m map[string]any) {
			m["date-range"].(map[string]any)["start-datetime"] = "2016-04-01T01:00:00Z"
		}, "not 00:00:00 UTC"},
		{"not UTC", func(m map[string]any) {
			m["date-range"].(map[string]any)["start-datetime"] = "2016-04-01T00:00:00+02:00"
		}, "not 00:00:00 UTC"},
		{"bad datetime", func(m map[string]any) {
			m["date-range"].(map[string]any)["end-datetime"] = "April 1st"
		}, "not RFC 3339"},
		{"no policies", func(m map[string]any) { m["policies"] = []any{} }, "policies: empty"},
		{"bad policy-type", func(m map[string]any) {
			policy0(m)["policy"].(map[string]any)["policy-type"] = "dmarc"
		}, "policy-type"},
		{"policy-string not array", func(m map[string]any) {
			policy0(m)["policy"].(map[string]any)["policy-string"] = "version: STSv1"
		}, "policy-string: not an array"},
		{"negative count", func(m map[string]any) {
			policy0(m)["summary"].(map[string]any)["total-successful-session-count"] = -1
		}, "negative"},
		{"fractional count", func(m map[string]any) {
			policy0(m)["summary"].(map[string]any)["total-failure-session-count"] = 1.5
		}, "not an integer"},
		{"no summary", func(m map[string]any) { delete(policy0(m), "summary") }, "summary: missing"},
		{"unregistered result-type", func(m map[string]any) { detail0(m)["result-type"] = "certificate-revoked" }, "not in the registry"},
		{"bad ip", func(m map[string]any) { detail0(m)["receiving-ip"] = "mx1" }, "not an IP address"},
		{"details exceed total", func(m map[string]any) { detail0(m)["failed-session-count"] = 1e6 }, "exceed"},
		{"mixed domains", func(m map[string]any) {
			m["policies"].([]any)[1].(map[string]any)["policy"].(map[string]any)["policy-domain"] = "other.example"
		}, "policy-domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(valid, &m); err != nil {
				t.Fatal(err)
			}
			tt.mutate(m)
			raw, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			problems := checkReport(raw)
			if !strings.Contains(strings.Join(problems, "\n"), tt.want) {
				t.Errorf("problems %q do not mention %q", problems, tt.want)
			}
		})
	}
}

// checkReport validates raw against the structure of RFC 8460 §4.4 and
// returns what is wrong. It is stricter than the RFC where our own
// output should be: unknown fields are errors, all policies share one
// policy-domain, and the date range is exactly one UTC day.
func checkReport(raw []byte) []string {
	var c checker
	var doc any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return []string{"not JSON: " + err.Error()}
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return []string{"not a JSON object"}
	}
	c.only(top, "", "organization-name", "date-range", "contact-info", "report-id", "policies")
	c.str(top, "", "organization-name", true)
	c.str(top, "", "contact-info", true)
	c.str(top, "", "report-id", true)

	if dr := c.obj(top, "", "date-range"); dr != nil {
		c.only(dr, "date-range", "start-datetime", "end-datetime")
		start, okS := c.datetime(dr, "date-range", "start-datetime")
		end, okE := c.datetime(dr, "date-range", "end-datetime")
		if okS {
			_, off := start.Zone()
			if off != 0 || !start.Equal(start.Truncate(24*time.Hour)) {
				c.bad("date-range.start-datetime: %s is not 00:00:00 UTC", start.Format(time.RFC3339))
			}
		}
		if okS && okE {
			// The RFC's example ends at 23:59:59; an exclusive 24:00 end
			// is one day too.
			if d := end.Sub(start); d != 24*time.Hour-time.Second && d != 24*time.Hour {
				c.bad("date-range: %s to %s is not one UTC day", start.Format(time.RFC3339), end.Format(time.RFC3339))
			}
		}
	}

	policies := c.arr(top, "", "policies", true)
	if policies != nil && len(policies) == 0 {
		c.bad("policies: empty")
	}
	domain := ""
	for i, pv := range policies {
		path := fmt.Sprintf("policies[%d]", i)
		p, ok := pv.(map[string]any)
		if !ok {
			c.bad("%s: not an object", path)
			continue
		}
		c.only(p, path, "policy", "summary", "failure-details")
		if pol := c.obj(p, path, "policy"); pol != nil {
			pp := path + ".policy"
			c.only(pol, pp, "policy-type", "policy-string", "policy-domain", "mx-host")
			typ, _ := c.str(pol, pp, "policy-type", true)
			switch typ {
			case "sts", "tlsa":
				c.strs(pol, pp, "policy-string", true)
			case "no-policy-found":
				c.strs(pol, pp, "policy-string", false)
			default:
				c.bad("%s.policy-type: %q is not sts, tlsa or no-policy-found", pp, typ)
			}
			c.strs(pol, pp, "mx-host", false)
			if d, ok := c.str(pol, pp, "policy-domain", true); ok {
				if _, valid := normDomain(d); !valid {
					c.bad("%s.policy-domain: %q is not a domain", pp, d)
				}
				if domain == "" {
					domain = d
				} else if d != domain {
					c.bad("%s.policy-domain: %q in a report for %q", pp, d, domain)
				}
			}
		}
		var failures int64 = -1
		if s := c.obj(p, path, "summary"); s != nil {
			sp := path + ".summary"
			c.only(s, sp, "total-successful-session-count", "total-failure-session-count")
			c.count(s, sp, "total-successful-session-count", true)
			failures, _ = c.count(s, sp, "total-failure-session-count", true)
		}
		var sum int64
		for j, dv := range c.arr(p, path, "failure-details", false) {
			dp := fmt.Sprintf("%s.failure-details[%d]", path, j)
			d, ok := dv.(map[string]any)
			if !ok {
				c.bad("%s: not an object", dp)
				continue
			}
			c.only(d, dp, "result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
				"receiving-ip", "failed-session-count", "additional-information", "failure-reason-code")
			if rt, ok := c.str(d, dp, "result-type", true); ok && !ResultType(rt).Valid() {
				c.bad("%s.result-type: %q is not in the registry", dp, rt)
			}
			n, _ := c.count(d, dp, "failed-session-count", true)
			sum += n
			for _, k := range []string{"sending-mta-ip", "receiving-ip"} {
				if s, ok := c.str(d, dp, k, false); ok {
					if _, err := netip.ParseAddr(s); err != nil {
						c.bad("%s.%s: %q is not an IP address", dp, k, s)
					}
				}
			}
			c.str(d, dp, "receiving-mx-hostname", false)
			c.str(d, dp, "receiving-mx-helo", false)
			c.str(d, dp, "failure-reason-code", false)
			if s, ok := c.str(d, dp, "additional-information", false); ok {
				if u, err := url.Parse(s); err != nil || u.Scheme == "" {
					c.bad("%s.additional-information: %q is not a URI", dp, s)
				}
			}
		}
		if failures >= 0 && sum > failures {
			c.bad("%s: failure-details counts (%d) exceed total-failure-session-count (%d)", path, sum, failures)
		}
	}
	return c.problems
}

type checker struct{ problems []string }

func (c *checker) bad(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *checker) only(m map[string]any, path string, keys ...string) {
	for k := range m {
		known := false
		for _, want := range keys {
			known = known || k == want
		}
		if !known {
			c.bad("%s: unknown field", join(path, k))
		}
	}
}

func (c *checker) get(m map[string]any, path, key string, required bool) (any, bool) {
	v, ok := m[key]
	if !ok && required {
		c.bad("%s: missing", join(path, key))
	}
	return v, ok
}

func (c *checker) str(m map[string]any, path, key string, required bool) (string, bool) {
	v, ok := c.get(m, path, key, required)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		c.bad("%s: not a string", join(path, key))
		return "", false
	}
	if s == "" && required {
		c.bad("%s: empty", join(path, key))
	}
	return s, true
}

func (c *checker) strs(m map[string]any, path, key string, required bool) {
	for i, v := range c.arr(m, path, key, required) {
		if _, ok := v.(string); !ok {
			c.bad("%s[%d]: not a string", join(path, key), i)
		}
	}
}

func (c *checker) obj(m map[string]any, path, key string) map[string]any {
	v, ok := c.get(m, path, key, true)
	if !ok {
		return nil
	}
	o, ok := v.(map[string]any)
	if !ok {
		c.bad("%s: not an object", join(path, key))
	}
	return o
}

func (c *checker) arr(m map[string]any, path, key string, required bool) []any {
	v, ok := c.get(m, path, key, required)
	if !ok {
		return nil
	}
	a, ok := v.([]any)
	if !ok {
		c.bad("%s: not an array", join(path, key))
	}
	return a
}

func (c *checker) count(m map[string]any, path, key string, required bool) (int64, bool) {
	v, ok := c.get(m, path, key, required)
	if !ok {
		return 0, false
	}
	num, ok := v.(json.Number)
	if !ok {
		c.bad("%s: not a number", join(path, key))
		return 0, false
	}
	n, err := num.Int64()
	if err != nil {
		c.bad("%s: %s is not an integer", join(path, key), num)
		return 0, false
	}
	if n < 0 {
		c.bad("%s: %d is negative", join(path, key), n)
		return 0, false
	}
	return n, true
}

func (c *checker) datetime(m map[string]any, path, key string) (time.Time, bool) {
	s, ok := c.str(m, path, key, true)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		c.bad("%s: %q is not RFC 3339", join(path, key), s)
		return time.Time{}, false
	}
	return t, true
}
