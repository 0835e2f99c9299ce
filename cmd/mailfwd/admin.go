package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/emersion/go-smtp"

	"mailfwd/admin"
	"mailfwd/config"
	"mailfwd/queue"
	"mailfwd/relay"
	"mailfwd/routing"
	"mailfwd/routing/directory"
	"mailfwd/routing/srs"
)

// metrics are the running relay's (nil when admin_listen is empty, and in
// every command but serve). What builds directories, caches and SRS codecs
// (newExpander, relayConfig) attaches them here, so that the ones a SIGHUP
// reload builds are counted too.
var metrics *admin.Metrics

var _ relay.Observer = (*admin.Metrics)(nil)

// initMetrics creates the metrics when the config has an admin listener.
func initMetrics(c *config.Config) {
	if c.AdminListen != "" {
		metrics = admin.NewMetrics()
	}
}

// observeDirectory times the queries of an LDAP directory (ldap or a
// Postfix LDAP map); it goes under the cache, so only real queries count.
func observeDirectory(c *config.Config, src routing.Source) routing.Source {
	if metrics == nil || (c.Directory.LDAP == nil && c.Directory.PostfixMap == "") {
		return src
	}
	return routing.Observed(src, metrics.ObserveLDAP)
}

// observeCache makes cache the one whose hits and misses are exported.
func observeCache(cache *directory.Cache) {
	if metrics != nil {
		metrics.SetCache(cache)
	}
}

// observeReplica exports the directory replica's state (the newest, after
// a reload) and puts it in /healthz's detail.
func observeReplica(r *directory.Replica) {
	if metrics == nil {
		return
	}
	metrics.SetReplica(func() admin.ReplicaState {
		st := r.Stats()
		return admin.ReplicaState{State: st.State, Server: st.Server, Entries: st.Entries, Lag: st.Lag,
			Local: st.Local, Live: st.Live, Stale: st.Stale, Refreshes: st.Refreshes, Resyncs: st.Resyncs, Errors: st.Errors}
	})
}

// observeSRS counts the SRS codec's rewrites and decodings.
func observeSRS(rw *srs.Rewriter) {
	if metrics != nil {
		rw.Observe = metrics.ObserveSRS
	}
}

// observeListener counts the connections of a raw SMTP listener (wrap it
// before relay.Listen, so that connections the limits refuse count).
func observeListener(l net.Listener) net.Listener {
	if metrics == nil {
		return l
	}
	return relay.ObserveListener(l, metrics)
}

// observeServer counts RCPT replies and messages of an SMTP server.
func observeServer(srv *smtp.Server) {
	if metrics != nil {
		relay.ObserveServer(srv, metrics)
	}
}

// startAdmin opens admin_listen (an address in use is an error at once)
// and serves /metrics and /healthz until ctx ends. /healthz is 200 while
// the spool takes a write and fsync and the scheduler runs, else 503 with
// the reason.
func startAdmin(ctx context.Context, c *config.Config, sched *queue.Scheduler, spool *queue.Spool, log *slog.Logger) error {
	if metrics == nil {
		return nil
	}
	sched.Observe = metrics.ObserveQueue
	metrics.SetQueue(sched.Stats)
	l, err := net.Listen("tcp", c.AdminListen)
	if err != nil {
		return fmt.Errorf("admin_listen: %w", err)
	}
	health := func() error { return errors.Join(spool.CheckWritable(), sched.Health()) }
	go func() {
		if err := admin.ServeListener(ctx, l, metrics, health, c.AdminPprof, log); err != nil {
			log.Error("admin listener stopped", "addr", c.AdminListen, "err", err)
		}
	}()
	return nil
}
