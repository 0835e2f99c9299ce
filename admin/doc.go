// Package admin is the admin HTTP listener: Prometheus metrics on
// /metrics and a health check on /healthz, on an address of their own
// (admin_listen), never on the SMTP listeners.
//
// Metrics collects through small hooks the other packages define where
// things happen (relay.Observer, routing.Observed, srs.Rewriter.Observe,
// queue.Scheduler.Observe and Stats), so none of them imports Prometheus.
package admin
