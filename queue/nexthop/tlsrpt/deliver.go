package tlsrpt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MediaType is the content type of a gzip-compressed report (§6.4).
const MediaType = "application/tlsrpt+gzip"

// Filename is the §5.3 attachment name of r:
// submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz,
// timestamps in Unix seconds. unique-id allows only [A-Za-z0-9+=._-], so
// other report-id characters become '_'.
func Filename(submitter string, r *Report) string {
	uid := []byte(r.ReportID)
	for i, c := range uid {
		if !isAlnum(c) && !strings.ContainsRune("+-=._", rune(c)) {
			uid[i] = '_'
		}
	}
	name := submitter + "!" + r.PolicyDomain() + "!" +
		strconv.FormatInt(r.DateRange.Start.Unix(), 10) + "!" +
		strconv.FormatInt(r.DateRange.End.Unix(), 10)
	if len(uid) > 0 {
		name += "!" + string(uid)
	}
	return name + ".json.gz"
}

// MailMessage builds the §5.3 mail carrying r to the mailbox to: a
// multipart/report; report-type="tlsrpt" message with a short text part
// and the gzipped report as an application/tlsrpt+gzip attachment.
// from is the From: mailbox, submitter our domain, date the Date:.
// Lines end in CRLF. The relay should DKIM-sign it, covering the
// TLS-Report-* fields (§5.3 says they SHOULD be signed).
func MailMessage(r *Report, from, to, submitter string, date time.Time) ([]byte, error) {
	domain := r.PolicyDomain()
	if _, ok := normDomain(domain); !ok {
		return nil, fmt.Errorf("tlsrpt: bad policy domain %q", domain)
	}
	if _, ok := normDomain(submitter); !ok {
		return nil, fmt.Errorf("tlsrpt: bad submitter %q", submitter)
	}
	// Every value below lands in a header: refuse anything that could
	// break out of it.
	for _, a := range []string{from, to} {
		if p, err := mail.ParseAddress(a); err != nil || p.Address != a {
			return nil, fmt.Errorf("tlsrpt: bad address %q", a)
		}
	}
	if r.ReportID == "" || !headerSafe(r.ReportID) {
		return nil, fmt.Errorf("tlsrpt: report-id %q unusable in a header", r.ReportID)
	}
	gz, err := gzipJSON(r)
	if err != nil {
		return nil, err
	}

	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("From", (&mail.Address{Address: from}).String())
	hdr("To", (&mail.Address{Address: to}).String())
	hdr("Date", date.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+randomToken()+"@"+submitter+">")
	// The §5.3 Subject ABNF, folded at its FWS to stay under 78 columns.
	b.WriteString("Subject: Report Domain: " + domain +
		"\r\n Submitter: " + submitter +
		"\r\n Report-ID: <" + strings.Trim(r.ReportID, "<>") + ">\r\n")
	hdr("TLS-Report-Domain", domain)
	hdr("TLS-Report-Submitter", submitter)
	hdr("Auto-Submitted", "auto-generated") // RFC 3834: no auto-replies, please
	hdr("MIME-Version", "1.0")
	// Written out rather than by mime.FormatMediaType to keep the quoted
	// report-type="tlsrpt" of the RFC's example, which simple receivers
	// match literally.
	hdr("Content-Type", "multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\""+mw.Boundary()+"\"")
	b.WriteString("\r\nThis is a multipart message in MIME format.\r\n\r\n")

	w, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":              {"text/plain; charset=us-ascii"},
		"Content-Transfer-Encoding": {"7bit"},
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "This is an aggregate TLS report (RFC 8460)\r\nfrom %s\r\nfor %s,\r\n"+
		"covering %s to %s.\r\nReport-ID: %s\r\n",
		submitter, domain,
		r.DateRange.Start.Format(time.RFC3339), r.DateRange.End.Format(time.RFC3339),
		r.ReportID)

	w, err = mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":              {MediaType},
		"Content-Transfer-Encoding": {"base64"},
		// The file name is longer than 78 columns but may not be folded
		// (that would change it); the hard limit is 998.
		"Content-Disposition": {mime.FormatMediaType("attachment",
			map[string]string{"filename": Filename(submitter, r)})},
	})
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		io.WriteString(w, enc[:76]+"\r\n")
		enc = enc[76:]
	}
	io.WriteString(w, enc+"\r\n")
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// headerSafe: printable ASCII only.
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func randomToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// HTTPError is a non-2xx answer to a report POST.
type HTTPError struct {
	URL        string
	StatusCode int
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("tlsrpt: POST %s: HTTP status %d", e.URL, e.StatusCode)
}

// Post delivers r to an https: rua (§5.3): the gzipped JSON as the body
// of a POST with Content-Type application/tlsrpt+gzip. Any 2xx answer
// is success. Timeouts are the client's; so are redirects, except that
// a 301/302/303 (which would turn the POST into a bodiless GET) is not
// followed and so fails.
func Post(ctx context.Context, c *http.Client, rawURL string, r *Report) error {
	if u, err := url.Parse(rawURL); err != nil || u.Scheme != "https" {
		return fmt.Errorf("tlsrpt: %q is not an https URL", rawURL)
	}
	if c == nil {
		return errors.New("tlsrpt: no HTTP client")
	}
	gz, err := gzipJSON(r)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", MediaType)
	resp, err := noMethodChange(c).Do(req)
	if err != nil {
		return fmt.Errorf("tlsrpt: POST %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode/100 != 2 {
		return &HTTPError{URL: rawURL, StatusCode: resp.StatusCode}
	}
	return nil
}

// noMethodChange returns a copy of c that refuses redirects losing the
// POST body: otherwise a 302 to a page answering GET with 200 would
// count as a delivered report.
func noMethodChange(c *http.Client) *http.Client {
	cc := *c
	next := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.Method != http.MethodPost {
			return http.ErrUseLastResponse
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cc
}
