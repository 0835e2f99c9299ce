package main

import (
	"context"
	"crypto/tls"
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

	"mailfwd/config"
	"mailfwd/queue"
	"mailfwd/queue/nexthop/tlsrpt"
	"mailfwd/relay"
	"mailfwd/routing/directory"
)

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

func (rr *replicaRunner) start(r *directory.Replica) {
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
	sched, err := newScheduler(c, spool, router, log)
	if err != nil {
		return err
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
