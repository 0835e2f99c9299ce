package main

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
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/auth"
	"mailfwd/config"
	"mailfwd/deploy"
	"mailfwd/queue"
	"mailfwd/queue/nexthop"
	"mailfwd/queue/nexthop/resolve"
	"mailfwd/queue/nexthop/tlsrpt"
	"mailfwd/relay"
	"mailfwd/routing"
)

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
		if err != nil {
			return nil, "", fmt.Errorf("embedded default config: %w", err)
		}
		return c, "(embedded default)", nil
	}
	c, err := config.Load(*path)
	return c, *path, err
}

func checkConfig(args []string) error {
	c, name, err := loadConfig(flag.NewFlagSet("check-config", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	if _, err := newSource(c, slog.Default()); err != nil {
		return err
	}
	if c.SRS != nil {
		// the store is not opened: a running relay holds it
		if _, err := newSRS(c, nil); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := pingSRSStore(ctx, c); err != nil {
			return err
		}
	}
	fmt.Printf("%s: ok (%d relay domains, next hop %s)\n", name, len(c.RelayDomains), c.Delivery.NextHop)
	return nil
}

func newLogger(c *config.Config) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func newSource(c *config.Config, log *slog.Logger) (routing.Source, error) {
	switch {
	case c.Directory.PostfixMap != "":
		return postfixMapSource(c.Path(c.Directory.PostfixMap), log)
	case c.Directory.LDAP != nil:
		lc, err := c.Directory.LDAP.LDAPConfig(c)
		if err != nil {
			return nil, err
		}
		return routing.NewLDAPSource(lc, log)
	case c.Directory.LDIF.File == "":
		return routing.NewLDIFBytes(deploy.SeedLDIF, c.Directory.LDIF.RoutingSchema())
	default:
		return routing.NewLDIFFile(c.Path(c.Directory.LDIF.File), c.Directory.LDIF.RoutingSchema(), log)
	}
}

// newExpander is the routing of a config: its directory behind a cache,
// and for LDAP (ldap or postfix_map) a live replica in front of both (nil when off or when the
// filter cannot be answered locally: then the cache alone, as before),
// then the static domain rewrites, expanded with the configured rules.
// Serve and lookup share it, so `mailfwd lookup` answers what the relay
// does. The caller runs the replica (Replica.Run).
func newExpander(c *config.Config, log *slog.Logger) (*routing.Expander, *routing.Replica, error) {
	src, err := newSource(c, log)
	if err != nil {
		return nil, nil, err
	}
	ldapSrc, _ := src.(*routing.LDAPSource)
	src = observeDirectory(c, src)
	ca := c.Directory.Cache
	cache := routing.NewCache(src, *ca.PositiveTTL, *ca.NegativeTTL, ca.Size)
	observeCache(cache)
	var front routing.Source = cache
	var replica *routing.Replica
	if rc := c.Directory.Replica; ldapSrc != nil && *rc.Enabled {
		replica, err = routing.NewLDAPReplica(ldapSrc, cache, routing.ReplicaConfig{MaxStale: rc.MaxStale})
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
	catchAll := *c.Routing.CatchAll || c.Directory.PostfixMap != ""
	return &routing.Expander{
		Source: front, Limits: c.Routing.Limits(), Delimiter: c.Routing.Delimiter(),
		CatchAll: catchAll, KeepExtension: *c.Routing.PropagateUnmatchedExtensions, Rewrites: c.Routing.Rewrites(),
	}, replica, nil
}

// reload applies a changed config to a running relay. Settings that need a
// restart (listeners, spool, delivery) are reported, not applied.
func reload(path string, old *config.Config, be *relay.Backend, certs *certStore, srsRT *srsRuntime, replicas *replicaRunner, log *slog.Logger) error {
	var args []string
	if path != "" {
		args = []string{"-config", path}
	}
	c, _, err := loadConfig(flag.NewFlagSet("reload", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	exp, replica, err := newExpander(c, log)
	if err != nil {
		return err
	}
	rc, err := relayConfig(c, certs, srsRT)
	if err != nil {
		return err
	}
	if err := be.Reload(rc, exp); err != nil {
		return err
	}
	replicas.start(replica)
	if fmt.Sprint(c.Listen, c.SpoolDir, c.Delivery, c.Limits, c.ProxyProtocolFrom) !=
		fmt.Sprint(old.Listen, old.SpoolDir, old.Delivery, old.Limits, old.ProxyProtocolFrom) {
		log.Warn("reload: listen, spool_dir, delivery, limits and proxy_protocol_from changes take effect at the next restart")
	}
	if (c.SRS == nil) != (old.SRS == nil) || (c.SRS != nil && fmt.Sprint(c.SRS.Store, c.SRS.LegacyUntil) != fmt.Sprint(old.SRS.Store, old.SRS.LegacyUntil)) {
		log.Warn("reload: srs.store and srs.legacy_until changes (and turning SRS on or off) take effect at the next restart")
	}
	log.Info("reloaded", "relay_domains", len(c.RelayDomains))
	return nil
}

// replicaRunner runs the directory replica of the current config: a
// reload starts the new one and stops the old (whose expander the backend
// no longer uses).
type replicaRunner struct {
	mu     sync.Mutex
	cancel context.CancelFunc
}

func (rr *replicaRunner) start(r *routing.Replica) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.cancel != nil {
		rr.cancel()
		rr.cancel = nil
	}
	if r == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr.cancel = cancel
	go r.Run(ctx)
}

func (rr *replicaRunner) stop() { rr.start(nil) }

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
		policy := d.TLSPolicy
		if p, ok := d.TLSPolicies[strings.ToLower(dest)]; ok {
			policy = p
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
		case policy == "require":
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
		srs, err := newSRS(c, srsRT)
		if err != nil {
			return rc, err
		}
		observeSRS(srs)
		rc.SRS, rc.SRSFailureLimit, rc.SRSFailureWindow, rc.SRSFailureBudget = srs, c.SRS.FailureLimit, c.SRS.FailureWindow, c.SRS.FailureBudget
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

// fdReserve is what the relay keeps of its file descriptors for itself:
// spool files, directory and next-hop connections, listeners, logs.
const fdReserve = 100

// fdConnections is how many client connections the descriptor limit
// (RLIMIT_NOFILE, which Go raises to the hard limit at start) carries: two
// descriptors each (the connection, and its queue file during DATA), after
// the reserve. A flood past it meets the 421 of the connection limit, not
// EMFILE in the middle of honest clients' messages.
func fdConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 30
	}
	return max(int(rl.Cur)-fdReserve, 20) / 2
}

// certStore holds the current certificate, so that SIGHUP can replace it
// under running listeners.
type certStore struct {
	cert atomic.Pointer[tls.Certificate]
}

func (s *certStore) load(certFile, keyFile string) error {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	s.cert.Store(&c)
	return nil
}

func (s *certStore) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil }

func serve(args []string) error {
	path := ""
	for i, a := range args {
		if (a == "-config" || a == "--config") && i+1 < len(args) {
			path = args[i+1]
		} else if v, ok := strings.CutPrefix(a, "-config="); ok {
			path = v
		}
	}
	c, name, err := loadConfig(flag.NewFlagSet("serve", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	log := newLogger(c)
	slog.SetDefault(log)
	initMetrics(c)
	exp, replica, err := newExpander(c, log)
	if err != nil {
		return err
	}
	replicas := &replicaRunner{}
	replicas.start(replica)
	defer replicas.stop()
	spool, err := queue.OpenSpool(c.Path(c.SpoolDir), log)
	if err != nil {
		return err
	}
	defer spool.Close()
	if err := queue.CheckDurable(spool.Dir()); err != nil {
		if !c.Spool.UnsafeFilesystem {
			return fmt.Errorf("%w; refusing to accept mail there (move spool_dir, or set spool.unsafe_filesystem: true to accept losing it)", err)
		}
		log.Warn("spool on an unsafe filesystem (spool.unsafe_filesystem: true): accepted mail is lost with the power", "err", err)
	}
	if queue.SyncsDisabled {
		log.Error("built with -tags powercut_nosync: the spool never syncs, every 250 can be lost with the power (a test control, never for real mail)")
	}
	spool.MinFree = *c.Spool.MinFree
	srsRT, err := openSRS(c, time.Now())
	if err != nil {
		return err
	}
	if srsRT != nil {
		defer srsRT.close()
		log.Info("srs", "domain", c.SRS.Domain, "store", srsRT.what, "legacy_hashes_until", srsRT.cutover.Format("2006-01-02"))
	}
	certs := &certStore{}
	rc, err := relayConfig(c, certs, srsRT)
	if err != nil {
		return err
	}
	dns := newDNS(c) // one resolver and cache for delivery, MTA-STS and TLS reports
	router, closeHops, err := newRouter(c, dns, log)
	if err != nil {
		return err
	}
	defer closeHops()
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
			return err
		}
		sched.SignDSN = func() queue.DSNSigner { return auth.NewSignStream(key) }
	}
	be, err := relay.NewBackend(rc, exp, spool, sched.Submit, log)
	if err != nil {
		return err
	}
	sched.Local = be.Local
	limits := relay.ListenLimits{
		MaxConns: c.Limits.MaxConnections, MaxConnsPerIP: c.Limits.MaxConnectionsPerIP,
		RatePerIP: c.Limits.ConnectionRatePerIP, ProxyFrom: c.ProxyPrefixes(), Hostname: c.Hostname,
		IPv6Prefix: c.Limits.IPv6PrefixLength,
		OnAcceptError: func(err error, retry time.Duration) {
			log.Error("accept failed; retrying", "err", err, "retry_in", retry)
		},
	}

	if max := fdConnections(); limits.MaxConns == 0 {
		limits.MaxConns = max
	} else if limits.MaxConns > max {
		log.Warn("limits.max_connections is more than the file descriptor limit allows; lowered",
			"max_connections", limits.MaxConns, "now", max, "hint", "raise LimitNOFILE (ulimit -n)")
		limits.MaxConns = max
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var listeners []net.Listener
	for _, addr := range c.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return err
		}
		l = observeListener(l)
		listeners = append(listeners, relay.Listen(l, limits))
	}
	// SIGHUP: re-read the config, directory, SRS secrets and certificate;
	// sessions in progress finish under the old policy.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := reload(path, c, be, certs, srsRT, replicas, log); err != nil {
				log.Error("reload failed; keeping the running configuration", "err", err)
			}
		}
	}()
	var reporter *tlsrpt.Reporter
	if rec := router.Security.Report; rec != nil {
		reporter, err = newReporter(c, rec, dns, router.Roots, func(_ context.Context, from, to string, msg []byte) error {
			id, err := sched.Inject(from, to, msg)
			log.Info("tls-rpt: report queued", "queue_id", id, "to", to, "err", err)
			return err
		}, log)
		if err != nil {
			return fmt.Errorf("delivery.tls_rpt: %w", err)
		}
	}
	schedCtx, stopSched := context.WithCancel(context.Background())
	if err := serveControl(schedCtx, spool.ControlSocket(), sched, log); err != nil {
		stopSched()
		return err
	}
	if err := startAdmin(schedCtx, c, sched, spool, log); err != nil {
		stopSched()
		return err
	}
	schedDone := make(chan error, 1)
	go func() { schedDone <- sched.Run(schedCtx) }()
	reporterDone := make(chan struct{})
	if reporter != nil {
		go func() {
			defer close(reporterDone)
			if err := reporter.Run(schedCtx); err != nil {
				log.Error("tls-rpt: saving the day's counts", "err", err)
			}
		}()
	} else {
		close(reporterDone)
	}

	var servers []*smtp.Server
	var wg sync.WaitGroup
	var listenerFailed atomic.Value // error: a listener stopped without being asked
	for _, l := range listeners {
		srv := be.NewServer()
		observeServer(srv)
		servers = append(servers, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
				log.Error("smtp server stopped", "listen", l.Addr().String(), "err", err)
				listenerFailed.Store(fmt.Errorf("listener %s stopped: %w", l.Addr(), err))
				stop()
			}
		}()
		log.Info("listening", "addr", l.Addr().String())
	}
	log.Info("mailfwd started", "config", name, "spool", c.Path(c.SpoolDir), "next_hop", c.Delivery.NextHop)

	select {
	case <-ctx.Done():
	case err := <-schedDone:
		stopSched()
		return err
	}
	log.Info("stopping: no new connections; open sessions get 30s to finish")
	shut, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(shut)
	}
	wg.Wait()
	stopSched()
	<-schedDone
	<-reporterDone // its last flush: the day's TLS-RPT counts survive the restart
	if err, _ := listenerFailed.Load().(error); err != nil {
		// a failure exit, so that systemd (Restart=on-failure) restarts us
		log.Error("stopped after a listener failure", "err", err)
		return err
	}
	log.Info("stopped")
	return nil
}
