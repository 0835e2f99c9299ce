package admin

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are mailfwd's collectors, in a registry of their own. The
// methods are the hooks the relay, routing and queue call; all are safe for
// concurrent use and do not block.
type Metrics struct {
	// Connections: {result="accepted"|"rejected"}.
	Connections     *prometheus.CounterVec
	ConnectionsOpen prometheus.Gauge
	// RcptReplies: {code="250"|"550"|"554"|"451"|...}.
	RcptReplies *prometheus.CounterVec
	// Messages: {result="queued"|"rejected"}, one per DATA.
	Messages          *prometheus.CounterVec
	LDAPLookupSeconds prometheus.Histogram
	LDAPErrors        prometheus.Counter
	CacheHits         prometheus.CounterFunc
	CacheMisses       prometheus.CounterFunc
	// SRS: {op="forward"|"reverse", result=srs.Result}.
	SRS *prometheus.CounterVec
	// Forwarding: {outcome=auth.Forward*}, one per message forwarded outside.
	Forwarding         *prometheus.CounterVec
	QueueMessages      prometheus.GaugeFunc
	QueueOldestSeconds prometheus.GaugeFunc
	// Deliveries: {result="sent"|"deferred"|"bounced"|"expired"}, per
	// recipient and attempt.
	Deliveries *prometheus.CounterVec
	// DSNs: {kind="failure"|"delay"}.
	DSNs *prometheus.CounterVec
	// OutboundTLS: {policy="dane"|"mta-sts"|"mta-sts-testing", result=
	// "verified"|"failed"}, per TLS session a policy applied to.
	OutboundTLS *prometheus.CounterVec

	reg *prometheus.Registry
	now func() time.Time

	mu sync.Mutex
	// cache is the directory cache in use; the counts of the caches it
	// replaced (reloads) are kept in cacheBase.
	cache                     CacheStats
	replica                   func() ReplicaState
	cacheBaseH, cacheBaseMiss uint64
	queue                     func() (int, time.Time)
}

// CacheStats is a directory cache (directory.Cache).
type CacheStats interface {
	Stats() (hits, misses uint64)
}

// NewMetrics registers every collector (and the Go runtime and process
// collectors) in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), now: time.Now}
	m.Connections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailfwd_connections_total",
		Help: "SMTP connections: accepted (greeted with 220) or rejected (421 from the connection limits, or closed before the greeting).",
	}, []string{"result"})
	m.ConnectionsOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mailfwd_connections_open",
		Help: "Accepted SMTP connections currently open.",
	})
	m.RcptReplies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailfwd_rcpt_replies_total",
		Help: "Replies to RCPT TO by SMTP reply code (250 accepted, 550 unknown user, 554 relay denied, 451 directory trouble, ...).",
	}, []string{"code"})
	m.Messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailfwd_messages_total",
		Help: "Messages at the end of DATA: queued (250 after the spool commit) or rejected.",
	}, []string{"result"})
	m.LDAPLookupSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mailfwd_ldap_lookup_seconds",
		Help:    "Time of directory (LDAP) queries, one per key not answered by the cache.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.LDAPErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mailfwd_ldap_errors_total",
		Help: "Directory (LDAP) queries that failed (server down, timeout, refused); RCPTs get 451 for them.",
	})
	m.CacheHits = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "mailfwd_directory_cache_hits_total",
		Help: "Directory lookups answered by the cache.",
	}, func() float64 { h, _ := m.cacheStats(); return float64(h) })
	m.CacheMisses = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "mailfwd_directory_cache_misses_total",
		Help: "Directory lookups the cache passed to the directory.",
	}, func() float64 { _, mi := m.cacheStats(); return float64(mi) })
	m.OutboundTLS = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailfwd_outbound_tls_total",
		Help: "TLS sessions to MX hosts under a published policy (policy=dane, mta-sts, mta-sts-testing) by result (verified, failed).",
	}, []string{"policy", "result"})
	m.SRS = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailfwd_srs_total",
		Help: "SRS rewrites (op=forward) and bounce address decodings (op=reverse) by result (ok, database, legacy, unchanged, not_srs, bad_hash, expired, malformed, too_long, unknown_key, store_error, error).",
	}, []string{"op", "result"})
	m.Forwarding = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailfwd_dmarc_forwarding_total",
		Help: "Messages forwarded outside, by DMARC-aware forwarding outcome (rewritten, kept_dkim, kept_no_policy, kept_failed, kept_temperror, kept_off).",
	}, []string{"outcome"})
	m.QueueMessages = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mailfwd_queue_messages",
		Help: "Messages in the queue (waiting for an attempt or being delivered; held messages not counted).",
	}, func() float64 { n, _ := m.queueStats(); return float64(n) })
	m.QueueOldestSeconds = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mailfwd_queue_oldest_message_age_seconds",
		Help: "Age of the oldest message in the queue (0 when it is empty).",
	}, func() float64 {
		_, oldest := m.queueStats()
		if oldest.IsZero() {
			return 0
		}
		return max(0, m.now().Sub(oldest).Seconds())
	})
	m.Deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailfwd_deliveries_total",
		Help: "Delivery outcomes per recipient and attempt: sent, deferred (will retry), bounced (permanent failure) or expired (lifetime over).",
	}, []string{"result"})
	m.DSNs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailfwd_dsns_total",
		Help: "Delivery status notifications queued to senders: failure (bounce) or delay.",
	}, []string{"kind"})
	m.reg.MustRegister(m.Connections, m.ConnectionsOpen, m.RcptReplies, m.Messages, m.LDAPLookupSeconds, m.LDAPErrors,
		m.CacheHits, m.CacheMisses, m.SRS, m.OutboundTLS, m.Forwarding, m.QueueMessages, m.QueueOldestSeconds, m.Deliveries, m.DSNs,
		replicaCollector{m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Known label values start at 0, so rates and alerts see them before
	// the first event.
	for _, r := range []string{"accepted", "rejected"} {
		m.Connections.WithLabelValues(r)
	}
	for _, r := range []string{"queued", "rejected"} {
		m.Messages.WithLabelValues(r)
	}
	for _, r := range []string{"sent", "deferred", "bounced", "expired"} {
		m.Deliveries.WithLabelValues(r)
	}
	for _, k := range []string{"failure", "delay"} {
		m.DSNs.WithLabelValues(k)
	}
	return m
}

// Registry is where the collectors are registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Connection implements relay.Observer.
func (m *Metrics) Connection(accepted bool) {
	if accepted {
		m.Connections.WithLabelValues("accepted").Inc()
		m.ConnectionsOpen.Inc()
		return
	}
	m.Connections.WithLabelValues("rejected").Inc()
}

// Disconnect implements relay.Observer.
func (m *Metrics) Disconnect() { m.ConnectionsOpen.Dec() }

// Rcpt implements relay.Observer.
func (m *Metrics) Rcpt(code int) { m.RcptReplies.WithLabelValues(strconv.Itoa(code)).Inc() }

// Message implements relay.Observer.
func (m *Metrics) Message(queued bool) {
	if queued {
		m.Messages.WithLabelValues("queued").Inc()
	} else {
		m.Messages.WithLabelValues("rejected").Inc()
	}
}

// ObserveLDAP is the routing.Observed hook of the directory.
func (m *Metrics) ObserveLDAP(d time.Duration, err error) {
	m.LDAPLookupSeconds.Observe(d.Seconds())
	if err != nil {
		m.LDAPErrors.Inc()
	}
}

// ObserveSRS is the srs.Rewriter.Observe hook.
func (m *Metrics) ObserveSRS(op, result string) { m.SRS.WithLabelValues(op, result).Inc() }

// ObserveOutboundTLS is the nexthop.Security.Observe hook.
func (m *Metrics) ObserveOutboundTLS(policy, result string) {
	m.OutboundTLS.WithLabelValues(policy, result).Inc()
}

// ObserveForwarding is the relay.Config.ObserveForwarding hook.
func (m *Metrics) ObserveForwarding(outcome string) { m.Forwarding.WithLabelValues(outcome).Inc() }

// ObserveQueue is the queue.Scheduler.Observe hook.
func (m *Metrics) ObserveQueue(event, result string) {
	switch event {
	case "delivery":
		m.Deliveries.WithLabelValues(result).Inc()
	case "dsn":
		m.DSNs.WithLabelValues(result).Inc()
	}
}

// SetCache makes c the directory cache counted. A cache replaced by a
// reload keeps its counts (the totals only grow).
func (m *Metrics) SetCache(c CacheStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cache != nil {
		h, mi := m.cache.Stats()
		m.cacheBaseH, m.cacheBaseMiss = m.cacheBaseH+h, m.cacheBaseMiss+mi
	}
	m.cache = c
}

func (m *Metrics) cacheStats() (hits, misses uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	hits, misses = m.cacheBaseH, m.cacheBaseMiss
	if m.cache != nil {
		h, mi := m.cache.Stats()
		hits, misses = hits+h, misses+mi
	}
	return hits, misses
}

// SetQueue sets where the queue gauges come from (queue.Scheduler.Stats):
// the number of messages and the arrival of the oldest.
func (m *Metrics) SetQueue(stats func() (messages int, oldest time.Time)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.queue = stats
}

func (m *Metrics) queueStats() (int, time.Time) {
	m.mu.Lock()
	f := m.queue
	m.mu.Unlock()
	if f == nil {
		return 0, time.Time{}
	}
	return f()
}
