package routing

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAPConfig is what an LDAP source needs. The bind password is passed in
// already read (from a file or the environment): it is never logged.
type LDAPConfig struct {
	URLs         []string // tried in order; ldap://, ldaps://
	StartTLS     bool
	CAFile       string
	RequireCert  bool // verify the server certificate (default in config: true)
	BindDN       string
	BindPassword string
	Base         string
	// Filter is a template: %s is the whole address, %u the local part,
	// %d the domain, each RFC 4515-escaped.
	Filter  string
	Schema  Schema
	Timeout time.Duration // per connect and per search
	// PoolSize bounds the idle connections kept; searches beyond it dial.
	PoolSize  int
	SizeLimit int
}

// LDAPSource looks addresses up in an LDAP directory such as 389-DS.
type LDAPSource struct {
	cfg  LDAPConfig
	tls  *tls.Config
	log  *slog.Logger
	idle chan *ldap.Conn
}

// NewLDAPSource checks cfg; it does not connect, so a directory that is
// down at start does not stop the relay (RCPTs get 451 until it is back).
func NewLDAPSource(cfg LDAPConfig, log *slog.Logger) (*LDAPSource, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("ldap: no server URL")
	}
	for _, u := range cfg.URLs {
		if !strings.HasPrefix(u, "ldap://") && !strings.HasPrefix(u, "ldaps://") {
			return nil, fmt.Errorf("ldap: URL %q: want ldap:// or ldaps://", u)
		}
	}
	if cfg.Filter == "" || !strings.Contains(cfg.Filter, "%") {
		return nil, fmt.Errorf("ldap: query filter %q has no %%s, %%u or %%d", cfg.Filter)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 8
	}
	if log == nil {
		log = slog.Default()
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: !cfg.RequireCert}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ldap: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ldap: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return &LDAPSource{cfg: cfg, tls: tc, log: log, idle: make(chan *ldap.Conn, cfg.PoolSize)}, nil
}

// BuildFilter expands a filter template for addr, escaping every value so
// that no address can change the filter's structure.
func BuildFilter(template, addr string) string {
	local, domain := addr, ""
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], addr[i+1:]
	}
	var b strings.Builder
	for i := 0; i < len(template); i++ {
		c := template[i]
		if c != '%' || i+1 == len(template) {
			b.WriteByte(c)
			continue
		}
		i++
		switch template[i] {
		case 's':
			b.WriteString(ldap.EscapeFilter(addr))
		case 'u':
			b.WriteString(ldap.EscapeFilter(local))
		case 'd':
			b.WriteString(ldap.EscapeFilter(domain))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(template[i])
		}
	}
	return b.String()
}

func (s *LDAPSource) dial(url string) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: s.cfg.Timeout}
	c, err := ldap.DialURL(url, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(s.tls))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(s.cfg.Timeout)
	if s.cfg.StartTLS && strings.HasPrefix(url, "ldap://") {
		if err := c.StartTLS(s.tls); err != nil {
			c.Close()
			return nil, fmt.Errorf("starttls: %w", err)
		}
	}
	if s.cfg.BindDN != "" {
		if err := c.Bind(s.cfg.BindDN, s.cfg.BindPassword); err != nil {
			c.Close()
			return nil, fmt.Errorf("bind as %s: %w", s.cfg.BindDN, err)
		}
	}
	return c, nil
}

// conn returns an idle connection or dials the servers in order.
func (s *LDAPSource) conn() (*ldap.Conn, error) {
	for {
		select {
		case c := <-s.idle:
			if !c.IsClosing() {
				return c, nil
			}
			c.Close()
			continue
		default:
		}
		break
	}
	var errs []error
	for _, u := range s.cfg.URLs {
		c, err := s.dial(u)
		if err == nil {
			return c, nil
		}
		s.log.Warn("ldap server unusable", "url", u, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return nil, errors.Join(errs...)
}

func (s *LDAPSource) release(c *ldap.Conn) {
	select {
	case s.idle <- c:
	default:
		c.Close()
	}
}

// Lookup searches for addr. A failed search is retried once on a fresh
// connection (the pooled one may have been dropped by the server), as
// Postfix's ldap table reconnects once after a failure.
func (s *LDAPSource) Lookup(ctx context.Context, addr string) ([]Match, error) {
	filter := BuildFilter(s.cfg.Filter, addr)
	attrs := append([]string{}, s.cfg.Schema.ResultAttributes...)
	if s.cfg.Schema.FallbackAttribute != "" {
		attrs = append(attrs, s.cfg.Schema.FallbackAttribute)
	}
	timeout := s.cfg.Timeout
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < timeout {
			timeout = d
		}
	}
	secs := int(timeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	req := ldap.NewSearchRequest(s.cfg.Base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		s.cfg.SizeLimit, secs, false, filter, attrs, nil)
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		c, err := s.conn()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		c.SetTimeout(timeout)
		res, err := c.Search(req)
		if err == nil {
			s.release(c)
			return s.results(res), nil
		}
		c.Close()
		lastErr = err
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			// A missing search base is a configuration error; answering
			// "unknown user" for it would bounce every message.
			return nil, fmt.Errorf("%w: search base %q: %v", ErrUnavailable, s.cfg.Base, err)
		}
		if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			return nil, fmt.Errorf("%w: %s matches more than %d entries", ErrExpansionLimit, addr, s.cfg.SizeLimit)
		}
	}
	return nil, fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
}

func (s *LDAPSource) results(res *ldap.SearchResult) []Match {
	var out []Match
	for _, e := range res.Entries {
		out = append(out, s.cfg.Schema.results("ldap", e.DN, e.GetEqualFoldAttributeValues)...)
	}
	return out
}

// Close drops the idle connections.
func (s *LDAPSource) Close() {
	for {
		select {
		case c := <-s.idle:
			c.Close()
		default:
			return
		}
	}
}
