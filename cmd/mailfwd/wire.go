package main

// The wiring: every object the relay is made of is built here from the
// config, and only here (outbound.go adds the outbound TLS policy). The
// config package is data; the packages below have no defaults of their
// own for what the config sets, so this file hands each of them every
// value.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"

	"mailfwd/auth"
	"mailfwd/config"
	"mailfwd/deploy"
	"mailfwd/queue"
	"mailfwd/queue/nexthop"
	"mailfwd/queue/nexthop/resolve"
	"mailfwd/relay"
	"mailfwd/routing"
	"mailfwd/routing/directory"
	"mailfwd/routing/srs"
	"mailfwd/routing/srsstore"
)

// checkNames validates what the config holds as plain strings and other
// packages define: domain names (routing.NormalizeDomain) and transports
// (nexthop.ParseTransport). check-config and serve run it before building
// anything, so each error names its key.
func checkNames(c *config.Config) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	domains := func(key string, ds []string) {
		for _, d := range ds {
			if _, err := routing.NormalizeDomain(d); err != nil {
				bad("%s: %v", key, err)
			}
		}
	}
	domains("relay_domains", c.RelayDomains)
	domains("local_domains", c.LocalDomains)
	for from, to := range c.Routing.DomainRewrites {
		domains("routing.domain_rewrites", []string{from, to})
	}
	if s := c.SRS; s != nil {
		if d, err := routing.NormalizeDomain(s.Domain); err != nil {
			bad("srs.domain: %v", err)
		} else {
			for _, r := range c.RelayDomains {
				if n, _ := routing.NormalizeDomain(r); n == d {
					bad("srs.domain %s is also a relay domain; use a dedicated SRS domain (e.g. srs.%s)", d, d)
				}
			}
		}
	}
	for k, v := range c.Delivery.Transports {
		if _, err := nexthop.ParseTransport(v); err != nil {
			bad("delivery.transports[%s]: %v", k, err)
		}
	}
	return errors.Join(errs...)
}

func newSource(c *config.Config, log *slog.Logger) (routing.Source, error) {
	switch {
	case c.Directory.PostfixMap != "":
		return postfixMapSource(c.Path(c.Directory.PostfixMap), log)
	case c.Directory.LDAP != nil:
		lc, err := ldapConfig(c)
		if err != nil {
			return nil, err
		}
		return directory.NewLDAPSource(lc, log)
	case c.Directory.LDIF.File == "":
		return directory.NewLDIFBytes(deploy.SeedLDIF, ldifSchema(c.Directory.LDIF.Schema))
	default:
		return directory.NewLDIFFile(c.Path(c.Directory.LDIF.File), ldifSchema(c.Directory.LDIF.Schema), log)
	}
}

func ldifSchema(s config.Schema) directory.Schema {
	return directory.Schema{QueryAttributes: s.QueryAttributes, ResultAttributes: s.ResultAttributes, FallbackAttribute: s.FallbackAttribute}
}

// ldapConfig is the LDAP source of a config, with its bind password read
// from its file or environment variable (returned, never logged).
func ldapConfig(c *config.Config) (directory.LDAPConfig, error) {
	l := c.Directory.LDAP
	pw := ""
	switch {
	case l.BindPasswordFile != "":
		b, err := os.ReadFile(c.Path(l.BindPasswordFile))
		if err != nil {
			return directory.LDAPConfig{}, fmt.Errorf("directory.ldap.bind_password_file: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	case l.BindPasswordEnv != "":
		v, ok := os.LookupEnv(l.BindPasswordEnv)
		if !ok {
			return directory.LDAPConfig{}, fmt.Errorf("directory.ldap.bind_password_env: $%s is not set", l.BindPasswordEnv)
		}
		pw = v
	}
	ldif := config.Defaults().Directory.LDIF.Schema // an LDAP entry is found by its filter; the schema's query attributes are the LDIF's
	return directory.LDAPConfig{
		URLs: l.Servers, StartTLS: l.StartTLS, CAFile: c.Path(l.CAFile), RequireCert: l.TLSRequireCert,
		BindDN: l.BindDN, BindPassword: pw, Base: l.SearchBase, Filter: l.QueryFilter,
		Schema:  directory.Schema{QueryAttributes: ldif.QueryAttributes, ResultAttributes: l.ResultAttributes, FallbackAttribute: l.FallbackAttr},
		Timeout: l.Timeout, PoolSize: l.PoolSize, SizeLimit: l.SizeLimit,
	}, nil
}

// newExpander is the routing of a config: its directory behind a cache,
// and for LDAP (ldap or postfix_map) a live replica in front of both (nil when off or when the
// filter cannot be answered locally: then the cache alone, as before),
// then the static domain rewrites, expanded with the configured rules.
// Serve and lookup share it, so `mailfwd lookup` answers what the relay
// does. The caller runs the replica (Replica.Run).
func newExpander(c *config.Config, log *slog.Logger) (*routing.Expander, *directory.Replica, error) {
	src, err := newSource(c, log)
	if err != nil {
		return nil, nil, err
	}
	ldapSrc, _ := src.(*directory.LDAPSource)
	src = observeDirectory(c, src)
	ca := c.Directory.Cache
	cache := directory.NewCache(src, ca.PositiveTTL, ca.NegativeTTL, ca.Size)
	observeCache(cache)
	var front routing.Source = cache
	var replica *directory.Replica
	if rc := c.Directory.Replica; ldapSrc != nil && rc.Enabled {
		replica, err = directory.NewLDAPReplica(ldapSrc, cache, directory.ReplicaConfig{MaxStale: rc.MaxStale})
		if err != nil {
			log.Warn("directory replica off: lookups are live queries behind the cache", "err", err)
			replica = nil
		} else {
			replica.OnDown(cache.Flush)
			observeReplica(replica)
			front = replica
		}
	}
	// A Postfix map is expanded exactly as Postfix would: catch-all lookups
	// are part of virtual_alias_maps.
	r := c.Routing
	catchAll := r.CatchAll || c.Directory.PostfixMap != ""
	rewrites := routing.DomainRewrites{}
	for from, to := range r.DomainRewrites {
		f, _ := routing.NormalizeDomain(from) // checkNames refused what does not normalize
		t, _ := routing.NormalizeDomain(to)
		rewrites[f] = t
	}
	return &routing.Expander{
		Source: front, Delimiter: r.Delimiter(), CatchAll: catchAll, KeepExtension: r.PropagateUnmatchedExtensions, Rewrites: rewrites,
		Limits: routing.Limits{Recursion: r.RecursionLimit, Expansion: r.ExpansionLimit, AddressLength: r.AddressLengthLimit},
	}, replica, nil
}

// newRouter builds delivery routing from the config: one pooled SMTP hop
// per server, shared by every route to it.
func newRouter(c *config.Config, dns *resolve.Resolver, log *slog.Logger) (*nexthop.TransportRouter, func(), error) {
	d := c.Delivery
	roots, err := deliveryRoots(c)
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	hops := map[string]*nexthop.SMTPHop{}
	factory := func(addr string, lmtp bool, dest string, passClient bool, sec *nexthop.HostTLS) nexthop.Hop {
		policy := tlsPolicy[d.TLSPolicy]
		if p, ok := d.TLSPolicies[strings.ToLower(dest)]; ok {
			policy = tlsPolicy[p]
		}
		key := fmt.Sprintf("%s|%s|%v", addr, policy, passClient)
		if sec != nil {
			key = fmt.Sprintf("%s|%s|%v", addr, sec.Key, passClient)
		}
		mu.Lock()
		defer mu.Unlock()
		if h, ok := hops[key]; ok {
			return h
		}
		h := &nexthop.SMTPHop{Addr: addr, LocalName: c.Hostname, Timeout: d.ConnectTimeout, LMTP: lmtp, TLSPolicy: policy}
		if !passClient {
			h.LineLimit = 998 // the Internet's MXes; our next hop takes any line, as we do
		}
		switch {
		case sec != nil:
			h.TLSPolicy, h.TLSConfig = sec.Policy, sec.Config
		case policy == nexthop.TLSRequire:
			h.TLSConfig = &tls.Config{RootCAs: roots, ServerName: dest, MinVersion: tls.VersionTLS12}
		}
		if passClient {
			h.XClient, h.XForward = d.XClient, d.XForward
		}
		hops[key] = h
		return h
	}
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, h := range hops {
			h.Close()
		}
	}
	local, err := hostPortTransport(d.NextHop)
	if err != nil {
		return nil, nil, fmt.Errorf("delivery.next_hop: %w", err)
	}
	local.PassClient = true
	sec, err := newSecurity(c, roots, dns, log, true)
	if err != nil {
		return nil, nil, err
	}
	tr := &nexthop.TransportRouter{Local: local, Hops: factory, MXPort: d.MXPort, Transports: map[string]nexthop.Transport{},
		DNS: deliveryDNS(c, dns), Security: sec, Roots: roots}
	if d.ExternalNextHop != "" {
		sh, err := hostPortTransport(d.ExternalNextHop)
		if err != nil {
			return nil, nil, fmt.Errorf("delivery.external_next_hop: %w", err)
		}
		tr.Smarthost = &sh
	}
	for k, v := range d.Transports {
		t, err := nexthop.ParseTransport(v)
		if err != nil {
			return nil, nil, err
		}
		tr.Transports[strings.ToLower(k)] = t
	}
	return tr, closeAll, nil
}

// tlsPolicy maps the config's TLS policies to the SMTP client's.
var tlsPolicy = map[config.TLSPolicy]string{
	config.TLSNone: nexthop.TLSNone, config.TLSOpportunistic: nexthop.TLSOpportunistic, config.TLSRequire: nexthop.TLSRequire,
}

// deliveryRoots is delivery.tls_ca_file's pool (nil: the system's roots).
func deliveryRoots(c *config.Config) (*x509.CertPool, error) {
	d := c.Delivery
	if d.TLSCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.Path(d.TLSCAFile))
	if err != nil {
		return nil, fmt.Errorf("delivery.tls_ca_file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("delivery.tls_ca_file %s holds no PEM certificate", d.TLSCAFile)
	}
	return roots, nil
}

// hostPortTransport is the transport of a "host:port" setting: that host,
// no MX lookup.
func hostPortTransport(hp string) (nexthop.Transport, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return nexthop.Transport{}, err
	}
	return nexthop.ParseTransport("smtp:[" + h + "]:" + p)
}

// relayConfig is the front end's policy from a config: what SIGHUP
// re-reads.
func relayConfig(c *config.Config, certs *certStore, srsRT *srsRuntime) (relay.Config, error) {
	rc := relay.Config{
		Hostname: c.Hostname, RelayDomains: c.RelayDomains, LookupTimeout: c.LookupTimeout,
		MaxRecipients: c.MaxRecipients, MaxSize: c.MaxMessageSize, FirstRetry: c.Delivery.RetryMin,
		LocalDomains: c.LocalDomains, PassUnknown: c.Routing.UnknownRecipients == "pass", DryRun: c.Routing.DryRun,
		Postmaster: c.Routing.Postmaster,
		MaxErrors:  c.Limits.MaxErrors, MaxCommands: c.Limits.MaxCommands, MaxJunkCommands: c.Limits.MaxJunkCommands,
		IPv6Prefix:     c.Limits.IPv6PrefixLength,
		CommandTimeout: c.Limits.CommandTimeout, DataTimeout: c.Limits.DataTimeout, MaxReceived: c.Limits.MaxReceived,
		MemoryBudget: c.Limits.MemoryBudget,
	}
	if c.SRS != nil {
		rw, err := newSRS(c, srsRT)
		if err != nil {
			return rc, err
		}
		observeSRS(rw)
		rc.SRS, rc.SRSFailureLimit, rc.SRSFailureWindow, rc.SRSFailureBudget = rw, c.SRS.FailureLimit, c.SRS.FailureWindow, c.SRS.FailureBudget
		r := c.SRS.Reverse
		rc.SRSReverse = relay.SRSReversePolicy{AnySender: r.AnySender, MaxRecipients: r.MaxRecipients, Rate: r.Rate, Window: r.Window}
	}
	if c.Auth != nil {
		a, err := newAuthenticator(c)
		if err != nil {
			return rc, err
		}
		rc.Auth = a
		for _, k := range c.Auth.DMARCForwarding.OffFor {
			if rc.FromRewriteOff == nil {
				rc.FromRewriteOff = map[string]bool{}
			}
			rc.FromRewriteOff[strings.ToLower(k)] = true
		}
		if metrics != nil {
			rc.ObserveForwarding = metrics.ObserveForwarding
		}
	}
	if c.TLS != nil {
		if err := certs.load(c.Path(c.TLS.CertFile), c.Path(c.TLS.KeyFile)); err != nil {
			return rc, err
		}
		rc.TLS = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
	}
	return rc, nil
}

// newScheduler is the queue manager of a config.
func newScheduler(c *config.Config, spool *queue.Spool, router queue.Router, log *slog.Logger) (*queue.Scheduler, error) {
	d := c.Delivery
	sched := &queue.Scheduler{
		Spool: spool, Router: router, Workers: d.Workers, ExternalWorkers: d.ExternalWorkers, Log: log, Hostname: c.Hostname,
		Retry:         queue.Retry{Min: d.RetryMin, Max: d.RetryMax},
		ExternalRetry: queue.Retry{Min: d.ExternalRetryMin, Max: d.ExternalRetryMax},
		Lifetime:      d.Lifetime, DelayWarning: d.DelayWarning, DestinationConcurrency: d.DestinationConcurrency,
		InitialConcurrency: d.InitialConcurrency, RecipientLimit: d.RecipientLimit, ActiveLimit: d.ActiveLimit, DeadAfter: d.DeadAfter,
		Limits:     destinationLimits(d),
		ForwardDSN: queue.ForwardDSN(d.ForwardDSN), RevealForward: d.DSNRevealForward,
	}
	if d.ForwardDSN == "authenticated" && c.Auth == nil {
		log.Warn("delivery.forward_dsn is authenticated but there is no auth section: no sender is authenticated, so no DSN goes out for failed forwards (set forward_dsn: always to send them anyway)")
	}
	if c.Auth != nil && c.Auth.DKIM != nil {
		// Our DSNs are signed with the forward-signing key: From is
		// MAILER-DAEMON@hostname, so sign with a key of that domain.
		key, err := auth.LoadKey(c.Auth.DKIM.Domain, c.Auth.DKIM.Selector, c.Path(c.Auth.DKIM.KeyFile))
		if err != nil {
			return nil, fmt.Errorf("auth.dkim: %w", err)
		}
		sched.SignDSN = func() queue.DSNSigner { return auth.NewSignStream(key) }
	}
	return sched, nil
}

// destinationLimits applies delivery.destination_rate_delay and the
// per-destination policies (matched by recipient domain for MX delivery,
// else by the next hop's host).
func destinationLimits(d config.Delivery) func(nexthop.Destination) queue.DestinationLimit {
	policies := map[string]config.DestinationPolicy{}
	for k, v := range d.Destinations {
		policies[strings.ToLower(strings.TrimSuffix(k, "."))] = v
	}
	return func(dest nexthop.Destination) queue.DestinationLimit {
		l := queue.DestinationLimit{RateDelay: d.DestinationRateDelay}
		if p, ok := policies[strings.ToLower(dest.Name)]; ok {
			l.Concurrency = p.Concurrency
			if p.RateDelay > 0 {
				l.RateDelay = p.RateDelay
			}
		}
		return l
	}
}

// newAuthenticator builds the edge checks and forward signing of a config.
func newAuthenticator(c *config.Config) (*auth.Authenticator, error) {
	a := c.Auth
	ac := auth.Config{AuthServID: a.AuthservID, LookupTimeout: a.LookupTimeout, Timeout: a.Timeout,
		SPFFail: authAction[a.SPFFail], DMARCReject: authAction[a.DMARCReject]}
	if r := newResolver(c); r != nil {
		ac.Resolver = r
	}
	var err error
	if k := a.DKIM; k != nil {
		if ac.DKIMKey, err = auth.LoadKey(k.Domain, k.Selector, c.Path(k.KeyFile)); err != nil {
			return nil, fmt.Errorf("auth.dkim: %w", err)
		}
	}
	if k := a.ARC; k != nil {
		if ac.ARCKey, err = auth.LoadKey(k.Domain, k.Selector, c.Path(k.KeyFile)); err != nil {
			return nil, fmt.Errorf("auth.arc: %w", err)
		}
	}
	if f := a.DMARCForwarding; f.Mode == "rewrite" {
		ac.FromRewrite = &auth.FromRewriting{Address: f.From, Via: f.Via}
	}
	return auth.New(ac)
}

// authAction maps the config's actions to the checks'.
var authAction = map[config.Action]auth.Action{config.Accept: auth.Accept, config.Tag: auth.Tag, config.Reject: auth.Reject}

// newResolver is the DNS of a config: dns.servers in order, else the
// system's (nil).
func newResolver(c *config.Config) *net.Resolver {
	servers := c.DNS.Servers
	if len(servers) == 0 {
		return nil
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		var err error
		for _, s := range servers {
			var conn net.Conn
			if conn, err = d.DialContext(ctx, network, s); err == nil {
				return conn, nil
			}
		}
		return nil, err
	}}
}

// newSRS builds the codec of a config (reads the secrets file) around the
// long-lived runtime.
func newSRS(c *config.Config, rt *srsRuntime) (*srs.Rewriter, error) {
	s := c.SRS
	secrets, err := srs.LoadSecrets(c.Path(s.SecretsFile))
	if err != nil {
		return nil, fmt.Errorf("srs.secrets_file: %w", err)
	}
	r := &srs.Rewriter{Secrets: secrets, Domain: s.Domain, HashLength: s.HashLength, HashMin: s.HashMin,
		MaxAgeDays: s.MaxAgeDays, DatabaseAlways: s.Database == "always", Separator: s.Separator[0]}
	if rt != nil {
		r.Store, r.LegacyUntil = rt.store, rt.cutover
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("srs: %w", err)
	}
	return r, nil
}

// redisStore is the srs.store.redis client of a config.
func redisStore(c *config.Config, maxAge int) (*srsstore.Redis, error) {
	r := c.SRS.Store.Redis
	pw := ""
	if r.PasswordFile != "" {
		b, err := os.ReadFile(c.Path(r.PasswordFile))
		if err != nil {
			return nil, fmt.Errorf("srs.store.redis.password_file: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	return srsstore.NewRedis(srsstore.RedisOptions{Addr: r.Address, Password: pw, DB: r.DB,
		Prefix: r.KeyPrefix, Timeout: r.Timeout, MaxAgeDays: maxAge})
}

// loadConfig reads -config (else the embedded default) and checks its
// names (checkNames).
func loadConfig(fs *flag.FlagSet, args []string) (*config.Config, string, error) {
	path := fs.String("config", "", "config file (default: the embedded default)")
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	if *path == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, "", err
		}
		c, err := config.Parse(deploy.DefaultConfig, wd)
		if err == nil {
			err = checkNames(c)
		}
		if err != nil {
			return nil, "", fmt.Errorf("embedded default config: %w", err)
		}
		return c, "(embedded default)", nil
	}
	c, err := config.Load(*path)
	if err == nil {
		err = checkNames(c)
		if err != nil {
			err = fmt.Errorf("%s: %w", *path, err)
		}
	}
	return c, *path, err
}
