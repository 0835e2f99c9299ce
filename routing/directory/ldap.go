package directory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
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
	Timeout time.Duration // per connect and per search; required
	// PoolSize bounds the connections for searches: at most this many run
	// at once, the others wait for one to come back; required.
	PoolSize  int
	SizeLimit int

	// Scope is "sub" (the default when empty), "one" or "base".
	Scope string
	// Deref is when to dereference aliases, as RFC 4511 numbers it
	// (ldap.NeverDerefAliases … ldap.DerefAlways); 0, never, by default.
	Deref int
	// CADir is a directory of PEM CA certificates (every readable file in
	// it is loaded), in addition to CAFile.
	CADir string
	// CertFile and KeyFile are a client certificate for TLS.
	CertFile, KeyFile string

	// Table, when set, gives the source Postfix ldap_table(5) semantics
	// (see LDAPTable): Base and Filter are then Postfix templates and
	// Schema is not used.
	Table *LDAPTable
}

// LDAPSource looks addresses up in an LDAP directory such as 389-DS.
type LDAPSource struct {
	cfg  LDAPConfig
	tls  *tls.Config
	log  *slog.Logger
	idle chan *ldapConn
	// slots bounds the searches (and so the connections) at once to
	// PoolSize: a search beyond waits for a connection to come back
	// instead of dialling (and binding) one it would close after.
	slots chan struct{}
	dials atomic.Uint64 // connections made (each with a bind)
	scope int
	table *compiledTable // nil unless cfg.Table is set
}

// ldapConn is a connection and the server URL it goes to (for Match.Source).
type ldapConn struct {
	*ldap.Conn
	url string
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
	var table *compiledTable
	if cfg.Table != nil {
		// Postfix only warns about a filter without expansions (the
		// caller does too): a fixed filter is legal there.
		t, err := compileTable(cfg.Base, cfg.Filter, *cfg.Table)
		if err != nil {
			return nil, fmt.Errorf("ldap: %w", err)
		}
		table = t
	} else if cfg.Filter == "" || !strings.Contains(cfg.Filter, "%") {
		return nil, fmt.Errorf("ldap: query filter %q has no %%s, %%u or %%d", cfg.Filter)
	}
	scope := ldap.ScopeWholeSubtree
	switch cfg.Scope {
	case "", "sub":
	case "one":
		scope = ldap.ScopeSingleLevel
	case "base":
		scope = ldap.ScopeBaseObject
	default:
		return nil, fmt.Errorf("ldap: scope %q: want sub, one or base", cfg.Scope)
	}
	if cfg.Deref < ldap.NeverDerefAliases || cfg.Deref > ldap.DerefAlways {
		return nil, fmt.Errorf("ldap: dereference %d: want 0 to 3", cfg.Deref)
	}
	if cfg.Timeout <= 0 || cfg.PoolSize <= 0 {
		return nil, fmt.Errorf("ldap: timeout %v and pool size %d: both required", cfg.Timeout, cfg.PoolSize)
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
	if cfg.CADir != "" {
		if err := addCADir(tc, cfg.CADir); err != nil {
			return nil, fmt.Errorf("ldap: CA directory: %w", err)
		}
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		if cfg.CertFile == "" || cfg.KeyFile == "" {
			return nil, errors.New("ldap: a client certificate needs both a certificate and a key file")
		}
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("ldap: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return &LDAPSource{cfg: cfg, tls: tc, log: log, idle: make(chan *ldapConn, cfg.PoolSize),
		slots: make(chan struct{}, cfg.PoolSize), scope: scope, table: table}, nil
}

// addCADir adds every PEM file of dir to tc's roots, as OpenLDAP's
// TLS_CACERTDIR does with its hashed links (which are PEM files too).
func addCADir(tc *tls.Config, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	pool := tc.RootCAs
	if pool == nil {
		pool = x509.NewCertPool()
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && pool.AppendCertsFromPEM(b) {
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("%s holds no PEM certificate", dir)
	}
	tc.RootCAs = pool
	return nil
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

// Dials counts the connections made (and binds) since start.
func (s *LDAPSource) Dials() uint64 { return s.dials.Load() }

func (s *LDAPSource) dial(url string) (*ldapConn, error) {
	s.dials.Add(1)
	d := &net.Dialer{Timeout: s.cfg.Timeout}
	c, err := ldap.DialURL(url, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(s.tls))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(s.cfg.Timeout)
	if s.cfg.StartTLS && strings.HasPrefix(url, "ldap://") {
		// The certificate is checked against the host we dialled, as
		// DialURL does for ldaps://.
		tc := s.tls.Clone()
		if u, perr := neturl.Parse(url); perr == nil && tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		if err := c.StartTLS(tc); err != nil {
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
	return &ldapConn{Conn: c, url: url}, nil
}

// pooled returns an idle connection, or nil.
func (s *LDAPSource) pooled() *ldapConn {
	for {
		select {
		case c := <-s.idle:
			if !c.IsClosing() {
				return c
			}
			c.Close()
		default:
			return nil
		}
	}
}

func (s *LDAPSource) release(c *ldapConn) {
	select {
	case s.idle <- c:
	default:
		c.Close()
	}
}

// errFinal marks a search error that another connection or server would
// only repeat (a limit, a missing static base): run returns it at once.
type errFinal struct{ error }

func (e errFinal) Unwrap() error { return e.error }

// run calls search on a connection: a pooled one if there is one, else
// fresh connections to the servers in order. A failure on a pooled
// connection (which the server may have dropped) is followed by a fresh
// connection, starting again with the first server as Postfix's ldap table
// reconnects once; a failure on a fresh connection moves on to the next
// server, so a down first server costs at most one dial timeout.
func (s *LDAPSource) run(ctx context.Context, search func(*ldapConn) ([]routing.Match, error)) ([]routing.Match, error) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for a directory connection: %w", routing.ErrUnavailable, ctx.Err())
	}
	var errs []error
	try := func(c *ldapConn) ([]routing.Match, bool, error) {
		ms, err := search(c)
		if err == nil {
			s.release(c)
			return ms, true, nil
		}
		c.Close()
		var fe errFinal
		if errors.As(err, &fe) {
			return nil, true, fe.error
		}
		s.log.Warn("ldap search failed", "url", c.url, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", c.url, err))
		return nil, false, nil
	}
	if c := s.pooled(); c != nil {
		if ms, done, err := try(c); done {
			return ms, err
		}
	}
	for _, u := range s.cfg.URLs {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		c, err := s.dial(u)
		if err != nil {
			s.log.Warn("ldap server unusable", "url", u, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		if ms, done, err := try(c); done {
			return ms, err
		}
	}
	return nil, fmt.Errorf("%w: %w", routing.ErrUnavailable, errors.Join(errs...))
}

// searchTimeout is the configured timeout, shortened to ctx's deadline.
func (s *LDAPSource) searchTimeout(ctx context.Context) (time.Duration, int) {
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
	return timeout, secs
}

// Lookup searches for addr.
func (s *LDAPSource) Lookup(ctx context.Context, addr string) ([]routing.Match, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", routing.ErrUnavailable, err)
	}
	if s.table != nil {
		return s.tableLookup(ctx, addr)
	}
	filter := BuildFilter(s.cfg.Filter, addr)
	attrs := append([]string{}, s.cfg.Schema.ResultAttributes...)
	if s.cfg.Schema.FallbackAttribute != "" {
		attrs = append(attrs, s.cfg.Schema.FallbackAttribute)
	}
	timeout, secs := s.searchTimeout(ctx)
	req := ldap.NewSearchRequest(s.cfg.Base, s.scope, s.cfg.Deref,
		s.cfg.SizeLimit, secs, false, filter, attrs, nil)
	return s.run(ctx, func(c *ldapConn) ([]routing.Match, error) {
		c.SetTimeout(timeout)
		res, err := c.Search(req)
		if err != nil {
			return nil, s.searchError(err, addr, s.cfg.Base, false)
		}
		var out []routing.Match
		for _, e := range res.Entries {
			out = append(out, s.cfg.Schema.results("ldap "+c.url, e.DN, e.GetEqualFoldAttributeValues)...)
		}
		return out, nil
	})
}

// searchError classifies a failed search: the errors no other server
// would answer differently are final.
func (s *LDAPSource) searchError(err error, addr, base string, nested bool) error {
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) && !nested:
		// A missing search base is a configuration error; answering
		// "unknown user" for it would bounce every message.
		return errFinal{fmt.Errorf("%w: search base %q: %w", routing.ErrUnavailable, base, err)}
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		return errFinal{fmt.Errorf("%w: %s matches more than %d entries", routing.ErrExpansionLimit, addr, s.cfg.SizeLimit)}
	case ldap.IsErrorWithCode(err, ldap.ErrorFilterCompile), ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax):
		return errFinal{fmt.Errorf("%w: %w", routing.ErrUnavailable, err)}
	}
	return err
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
