package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func dayReport(t *testing.T, domain string) *Report {
	t.Helper()
	clk := newClock("2016-04-01T10:00:00Z")
	r := openRecorder(t, RecorderOptions{Now: clk.Now})
	fillDay(r)
	for _, rep := range r.Reports(clk.Now(), testInfo) {
		if rep.PolicyDomain() == domain {
			return rep
		}
	}
	t.Fatalf("no report for %s", domain)
	return nil
}

func gunzipReport(t *testing.T, gz []byte) *Report {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	js, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if p := checkReport(js); len(p) > 0 {
		t.Errorf("delivered report fails the schema check: %v", p)
	}
	var rep Report
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	return &rep
}

// parseMail checks a report message the way a receiver would read it
// and returns the report in its attachment.
func parseMail(t *testing.T, msg []byte, from, to, submitter string, want *Report) {
	t.Helper()
	for _, line := range strings.SplitAfter(string(msg), "\n") {
		if !strings.HasSuffix(line, "\r\n") && line != "" {
			t.Fatalf("line without CRLF: %q", line)
		}
		if len(line) > 998+2 {
			t.Errorf("line longer than 998 characters: %q", line)
		}
		if len(line) > 78+2 && !strings.HasPrefix(line, "Content-Disposition:") {
			t.Errorf("line longer than 78 characters: %q", line)
		}
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	domain := want.PolicyDomain()
	headers := []struct{ name, want string }{
		{"From", "<" + from + ">"},
		{"To", "<" + to + ">"},
		{"Subject", "Report Domain: " + domain + " Submitter: " + submitter + " Report-ID: <" + want.ReportID + ">"},
		{"TLS-Report-Domain", domain},
		{"TLS-Report-Submitter", submitter},
		{"MIME-Version", "1.0"},
	}
	for _, h := range headers {
		if got := m.Header.Get(h.name); got != h.want {
			t.Errorf("%s: %q, want %q", h.name, got, h.want)
		}
	}
	if _, err := m.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if id := m.Header.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@"+submitter+">") {
		t.Errorf("Message-ID: %q", id)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	if mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("Content-Type: %s %v", mt, params)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	var got *Report
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		if ct != MediaType {
			continue
		}
		if cte := p.Header.Get("Content-Transfer-Encoding"); cte != "base64" {
			t.Errorf("attachment Content-Transfer-Encoding %q", cte)
		}
		disp, dp, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		if err != nil || disp != "attachment" {
			t.Errorf("Content-Disposition %q: %v", p.Header.Get("Content-Disposition"), err)
		}
		if fn := dp["filename"]; fn != Filename(submitter, want) {
			t.Errorf("filename %q, want %q", fn, Filename(submitter, want))
		}
		gz, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, p))
		if err != nil {
			t.Fatal(err)
		}
		got = gunzipReport(t, gz)
	}
	if !reflect.DeepEqual(types, []string{"text/plain", MediaType}) {
		t.Errorf("parts %v, want text/plain then %s", types, MediaType)
	}
	if got == nil {
		t.Fatal("no report attachment")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("attached report differs:\n got %+v\nwant %+v", got, want)
	}
}

func TestMailMessage(t *testing.T) {
	rep := dayReport(t, "company-y.example")
	const from, to, sub = "tlsrpt@mail.company-x.example", "sts-reports@company-y.example", "mail.company-x.example"
	msg, err := MailMessage(rep, from, to, sub, time.Date(2016, 4, 2, 0, 20, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	parseMail(t, msg, from, to, sub, rep)

	if f := Filename(sub, rep); f != "mail.company-x.example!company-y.example!1459468800!1459555199!5065427c-23d3-47ca-b6e0-946ea0e8c4be.company-y.example.json.gz" {
		t.Errorf("Filename = %q", f)
	}

	bad := []struct {
		name         string
		from, to, sb string
		id           string
	}{
		{"header injection in to", from, "a@b.example\r\nBcc: x@y.example", sub, rep.ReportID},
		{"display name in from", "Me <" + from + ">", to, sub, rep.ReportID},
		{"bad submitter", from, to, "mail company-x", rep.ReportID},
		{"newline in report-id", from, to, sub, "id\r\nX-Evil: 1"},
		{"empty report-id", from, to, sub, ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := *rep
			r.ReportID = tt.id
			if _, err := MailMessage(&r, tt.from, tt.to, tt.sb, time.Now()); err == nil {
				t.Error("no error")
			}
		})
	}
}

// postServer is an https rua endpoint recording what it receives.
type postServer struct {
	*httptest.Server
	mu      sync.Mutex
	status  int
	reports []*Report
}

func newPostServer(t *testing.T) *postServer {
	ps := &postServer{status: http.StatusOK}
	ps.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			t.Errorf("method %s", r.Method)
		}
		if ct := r.Header.Get("Content-Type"); ct != MediaType {
			t.Errorf("Content-Type %q, want %q", ct, MediaType)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		ps.mu.Lock()
		defer ps.mu.Unlock()
		if ps.status/100 == 2 {
			ps.reports = append(ps.reports, gunzipReport(t, body))
		}
		w.WriteHeader(ps.status)
	}))
	t.Cleanup(ps.Close)
	return ps
}

func (ps *postServer) setStatus(code int) {
	ps.mu.Lock()
	ps.status = code
	ps.mu.Unlock()
}

func (ps *postServer) received() []*Report {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]*Report(nil), ps.reports...)
}

func TestPost(t *testing.T) {
	rep := dayReport(t, "dane.example")
	ps := newPostServer(t)
	tests := []struct {
		name   string
		status int
		url    string
		ok     bool
	}{
		{"200", http.StatusOK, ps.URL + "/tlsrpt", true},
		{"202", http.StatusAccepted, ps.URL + "/tlsrpt", true},
		{"500", http.StatusInternalServerError, ps.URL + "/tlsrpt", false},
		{"404", http.StatusNotFound, ps.URL + "/tlsrpt", false},
		{"http refused", http.StatusOK, strings.Replace(ps.URL, "https:", "http:", 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps.setStatus(tt.status)
			before := len(ps.received())
			err := Post(context.Background(), ps.Client(), tt.url, rep)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			var he *HTTPError
			if tt.status/100 != 2 && !errors.As(err, &he) {
				t.Errorf("err %v is not an *HTTPError", err)
			}
			got := ps.received()
			if tt.ok {
				if len(got) != before+1 || !reflect.DeepEqual(got[len(got)-1], rep) {
					t.Errorf("server did not receive the report intact")
				}
			}
		})
	}
}

func TestPostRedirect(t *testing.T) {
	rep := dayReport(t, "dane.example")
	ps := newPostServer(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ps.URL+"/final", http.StatusFound)
	})
	mux.HandleFunc("/temporary", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ps.URL+"/final", http.StatusTemporaryRedirect)
	})
	rs := httptest.NewTLSServer(mux)
	defer rs.Close()
	// One client trusting both test servers' certificates.
	client := rs.Client()
	client.Transport.(*http.Transport).TLSClientConfig.RootCAs.AddCert(ps.Certificate())

	tests := []struct {
		path  string
		ok    bool
		posts int
	}{
		{"/moved", false, 0},    // 302 would become a GET: not followed
		{"/temporary", true, 1}, // 307 keeps the POST and its body
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			before := len(ps.received())
			err := Post(context.Background(), client, rs.URL+tt.path, rep)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if n := len(ps.received()) - before; n != tt.posts {
				t.Errorf("%d reports arrived, want %d", n, tt.posts)
			}
		})
	}
}
