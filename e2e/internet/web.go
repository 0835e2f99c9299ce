//go:build e2e

package internet

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// STSPolicy is an MTA-STS policy served by nginx at
// https://mta-sts.<domain>/.well-known/mta-sts.txt.
type STSPolicy struct {
	Mode   string   // "enforce", "testing" or "none"
	MX     []string // mx: patterns ("mx.example.test", "*.example.test")
	MaxAge int      // max_age; 0: 86400
	// ID is the id= of the _mta-sts TXT record; "": a fresh random one.
	ID string
	// Body, when set, is served instead of the policy built from the
	// fields above (e.g. a malformed one).
	Body string
	// Cert is the kind of the HTTPS certificate of mta-sts.<domain>
	// (default CertValid).
	Cert CertKind
	// NoTXT leaves out the _mta-sts TXT record.
	NoTXT bool
}

// Text is the policy file: CRLF-terminated "key: value" lines.
func (p STSPolicy) Text() string {
	if p.Body != "" {
		return p.Body
	}
	maxAge := p.MaxAge
	if maxAge == 0 {
		maxAge = 86400
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version: STSv1\r\nmode: %s\r\n", p.Mode)
	for _, mx := range p.MX {
		fmt.Fprintf(&b, "mx: %s\r\n", mx)
	}
	fmt.Fprintf(&b, "max_age: %d\r\n", maxAge)
	return b.String()
}

type stsPolicy struct {
	domain string // "sts-enforce.test"
	host   string // "mta-sts.sts-enforce.test"
	p      STSPolicy
	cert   *Cert
}

// AddMTASTS publishes an MTA-STS policy for domain: "mta-sts.<domain> A"
// (the web host), "_mta-sts.<domain> TXT v=STSv1; id=…;" and the policy
// on nginx. It returns the policy URL. Call it before Start.
func (n *Net) AddMTASTS(domain string, p STSPolicy) string {
	t := n.t
	t.Helper()
	domain = strings.TrimSuffix(fqdn(domain), ".")
	if p.ID == "" {
		p.ID = "mfwnet" + randHex(6)
	}
	sp := &stsPolicy{domain: domain, host: "mta-sts." + domain, p: p}
	sp.cert = n.ca.Issue(t, "web-"+sp.host, p.Cert, sp.host)
	n.AddA(sp.host, n.web.Addr)
	if !p.NoTXT {
		n.AddTXT("_mta-sts."+domain, "v=STSv1; id="+p.ID+";")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		t.Fatalf("internet: AddMTASTS(%s) after Start", domain)
	}
	n.policies = append(n.policies, sp)
	return "https://" + sp.host + "/.well-known/mta-sts.txt"
}

// startWeb starts nginx on the web host, port 443, one server per
// policy host (SNI) and a default server for any other name (a
// certificate for web.nic.test only).
func (n *Net) startWeb() {
	t := n.t
	t.Helper()
	wd := filepath.Join(n.dir, "nginx")
	for _, d := range []string{wd, wd + "/www", wd + "/tmp", wd + "/logs"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	def := n.ca.Issue(t, "web-default", CertValid, "web.nic.test")
	var b strings.Builder
	fmt.Fprintf(&b, `# nginx for the simulated Internet's MTA-STS hosts (mailfwd/e2e/internet)
# one process (no master/worker pair): it dies with the test (Pdeathsig)
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log info;
events { worker_connections 128; }
http {
    access_log %[1]s/logs/access.log;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    default_type application/octet-stream;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen %[2]s:443 ssl default_server;
        server_name web.nic.test;
        ssl_certificate %[3]s;
        ssl_certificate_key %[4]s;
        location / { return 404; }
    }
`, wd, n.web.Addr, def.CertFile, def.KeyFile)
	for _, sp := range n.policies {
		root := filepath.Join(wd, "www", sp.host)
		if err := os.MkdirAll(root+"/.well-known", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(root+"/.well-known/mta-sts.txt", []byte(sp.p.Text()), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, `    server {
        listen %[1]s:443 ssl;
        server_name %[2]s;
        ssl_certificate %[3]s;
        ssl_certificate_key %[4]s;
        root %[5]s;
        location = /.well-known/mta-sts.txt { types { } default_type text/plain; }
        location / { return 404; }
    }
`, n.web.Addr, sp.host, sp.cert.CertFile, sp.cert.KeyFile, root)
	}
	b.WriteString("}\n")
	conf := filepath.Join(wd, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	errLog := filepath.Join(wd, "logs", "error.log")
	args := []string{"-p", wd, "-c", conf, "-e", errLog}
	if out, err := n.web.Command("nginx", append(args, "-t", "-q")...).CombinedOutput(); err != nil {
		t.Fatalf("internet: nginx -t: %v\n%s", err, out)
	}
	p := n.startProc("nginx", n.web.Command("nginx", args...), filepath.Join(wd, "logs", "nginx.out"))
	n.mu.Lock()
	n.logs = append(n.logs, errLog)
	n.mu.Unlock()
	sni := "web.nic.test"
	if len(n.policies) > 0 {
		sni = n.policies[0].host
	}
	n.poll("nginx", 20*time.Second, p, errLog, func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", n.web.Addr+":443",
			&tls.Config{ServerName: sni, RootCAs: n.ca.Pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// PolicyClient is an HTTPS client that trusts only the suite CA and
// connects every name to the web host (no DNS): for checking policies.
func (n *Net) PolicyClient() *http.Client {
	web := n.web.Addr
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: n.ca.Pool, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			var d net.Dialer
			return d.DialContext(ctx, network, net.JoinHostPort(web, port))
		},
	}}
}

// Report is one TLS-RPT report POSTed to the report server.
type Report struct {
	Time            time.Time
	Path            string
	ContentType     string // application/tlsrpt+gzip or application/tlsrpt+json
	ContentEncoding string
	Body            []byte // as received
	// JSON is the report: Body gunzipped when its Content-Type is
	// application/tlsrpt+gzip or its Content-Encoding gzip (nil if that
	// failed), else Body.
	JSON []byte
}

// ReportServer is a TLS-RPT HTTPS endpoint (RFC 8460 §3): a Go
// net/http server listening inside the report host (Host.Listen), with a
// suite-CA certificate for tlsrpt.report.test. It answers 200 to POSTs
// (Status changes that) and 405 to anything else.
type ReportServer struct {
	Name string // "tlsrpt.report.test"
	URL  string // "https://tlsrpt.report.test/v1/tlsrpt" (any path is accepted)
	Addr string // host address (10.98.4.2:443)
	Cert *Cert

	mu      sync.Mutex
	status  int
	reports []Report
	srv     *http.Server
	done    chan struct{}
}

// TLSRPT returns the Internet's TLS-RPT HTTPS endpoint, adding (the first
// time, before Start) the unsigned zone report.test and
// "tlsrpt.report.test A" of the report host. Start starts it.
func (n *Net) TLSRPT() *ReportServer {
	n.t.Helper()
	n.mu.Lock()
	r := n.rpt
	n.mu.Unlock()
	if r != nil {
		return r
	}
	if n.Zone("report.test") == nil {
		n.AddZone("report.test", Unsigned)
	}
	name := "tlsrpt.report.test"
	n.AddA(name, n.report.Addr)
	r = &ReportServer{Name: name, URL: "https://" + name + "/v1/tlsrpt", Addr: n.report.Addr + ":443",
		Cert: n.ca.Issue(n.t, "tlsrpt", CertValid, name), status: http.StatusOK}
	n.mu.Lock()
	n.rpt = r
	n.mu.Unlock()
	return r
}

// SetStatus sets the HTTP status answered to POSTs (default 200).
func (r *ReportServer) SetStatus(code int) {
	r.mu.Lock()
	r.status = code
	r.mu.Unlock()
}

// Reports lists the reports received so far.
func (r *ReportServer) Reports() []Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Report(nil), r.reports...)
}

// WaitReports waits until at least count reports have arrived.
func (r *ReportServer) WaitReports(t testing.TB, count int, timeout time.Duration) []Report {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if rs := r.Reports(); len(rs) >= count {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("internet: %d of %d TLS reports after %v", len(r.Reports()), count, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *ReportServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rep := Report{Time: time.Now(), Path: req.URL.Path, ContentType: req.Header.Get("Content-Type"),
		ContentEncoding: req.Header.Get("Content-Encoding"), Body: body, JSON: body}
	if strings.HasPrefix(rep.ContentType, "application/tlsrpt+gzip") || strings.EqualFold(rep.ContentEncoding, "gzip") {
		rep.JSON = nil
		if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
			if j, err := io.ReadAll(zr); err == nil {
				rep.JSON = j
			}
		}
	}
	r.mu.Lock()
	r.reports = append(r.reports, rep)
	code := r.status
	r.mu.Unlock()
	w.WriteHeader(code)
}

func (n *Net) startReport(r *ReportServer) {
	t := n.t
	t.Helper()
	ln, err := n.report.Listen("tcp", r.Addr)
	if err != nil {
		t.Fatalf("internet: TLS-RPT listener: %v", err)
	}
	pair, err := tls.LoadX509KeyPair(r.Cert.CertFile, r.Cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		if err := r.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "internet: TLS-RPT server: %v\n", err)
		}
	}()
}

func (r *ReportServer) close() {
	if r.srv != nil {
		r.srv.Close()
		<-r.done
	}
}
