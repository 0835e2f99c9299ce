package admin

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ReplicaState is what the directory replica reports (cmd/mailfwd adapts
// directory.Replica's Stats to it).
type ReplicaState struct {
	State   string // "synced", "refreshing", "down: …", "unsupported: …", "starting"
	Server  string
	Entries int
	Lag     time.Duration // since the stream was last confirmed current
	// Answers by origin: the replica in sync, live queries (the replica
	// down or resyncing), the replica during a directory outage.
	Local, Live, Stale         uint64
	Refreshes, Resyncs, Errors uint64
}

// SetReplica makes f the replica whose state is exported; nil: none.
func (m *Metrics) SetReplica(f func() ReplicaState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.replica = f
}

// replicaCollector exports the replica's state at each scrape.
type replicaCollector struct{ m *Metrics }

var (
	replicaStateDesc = prometheus.NewDesc("mailfwd_directory_replica_state",
		"1 for the replica's current state: synced (RCPT lookups answered from memory), refreshing, down or unsupported (live queries and the cache), starting.",
		[]string{"state", "server"}, nil)
	replicaEntriesDesc = prometheus.NewDesc("mailfwd_directory_replica_entries",
		"Directory entries held by the replica.", nil, nil)
	replicaLagDesc = prometheus.NewDesc("mailfwd_directory_replica_lag_seconds",
		"Time since the sync stream was last confirmed current (a change, or an answered probe every 10s).", nil, nil)
	replicaAnswersDesc = prometheus.NewDesc("mailfwd_directory_answers_total",
		"Directory lookups by origin: replica (in sync, no LDAP round trip), live (LDAP query behind the cache: the replica is down, resyncing or unsupported), replica_stale (the directory unreachable: a known address answered from the replica).",
		[]string{"origin"}, nil)
	replicaEventsDesc = prometheus.NewDesc("mailfwd_directory_replica_events_total",
		"Sync sessions: refresh (a sync search begun), resync (the server asked for a full reload), error (a session ended).",
		[]string{"event"}, nil)
)

func (c replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{replicaStateDesc, replicaEntriesDesc, replicaLagDesc, replicaAnswersDesc, replicaEventsDesc} {
		ch <- d
	}
}

func (c replicaCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	f := c.m.replica
	c.m.mu.Unlock()
	if f == nil {
		return
	}
	st := f()
	class, _, _ := strings.Cut(st.State, ":")
	ch <- prometheus.MustNewConstMetric(replicaStateDesc, prometheus.GaugeValue, 1, class, st.Server)
	ch <- prometheus.MustNewConstMetric(replicaEntriesDesc, prometheus.GaugeValue, float64(st.Entries))
	ch <- prometheus.MustNewConstMetric(replicaLagDesc, prometheus.GaugeValue, st.Lag.Seconds())
	for _, a := range []struct {
		origin string
		n      uint64
	}{{"replica", st.Local}, {"live", st.Live}, {"replica_stale", st.Stale}} {
		ch <- prometheus.MustNewConstMetric(replicaAnswersDesc, prometheus.CounterValue, float64(a.n), a.origin)
	}
	for _, e := range []struct {
		event string
		n     uint64
	}{{"refresh", st.Refreshes}, {"resync", st.Resyncs}, {"error", st.Errors}} {
		ch <- prometheus.MustNewConstMetric(replicaEventsDesc, prometheus.CounterValue, float64(e.n), e.event)
	}
}

// healthDetail is /healthz's line on the replica: in sync, or why not
// (RCPT lookups are then live queries; not a failure).
func (m *Metrics) healthDetail() string {
	if m == nil {
		return ""
	}
	m.mu.Lock()
	f := m.replica
	m.mu.Unlock()
	if f == nil {
		return ""
	}
	st := f()
	if st.State == "synced" {
		return fmt.Sprintf("directory replica: synced with %s (%d entries, confirmed %v ago)", st.Server, st.Entries, st.Lag.Round(time.Second))
	}
	return fmt.Sprintf("directory replica: %s (RCPT lookups are live LDAP queries)", st.State)
}
