package relay

import (
	"strings"
	"testing"
	"time"

	"mailfwd/queue"
)

// limited is cfg with each limit it leaves unset given a test value: the
// relay has no defaults of its own (Config.check), and most tests are
// about something else. The values are the shipped defaults' order of
// magnitude, so that no test trips a limit it does not set.
func limited(cfg Config) Config {
	set := func(v *int, n int) {
		if *v == 0 {
			*v = n
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	dur(&cfg.LookupTimeout, 10*time.Second)
	set(&cfg.MaxRecipients, 1000)
	dur(&cfg.FirstRetry, 10*time.Second)
	set(&cfg.MaxErrors, 20)
	set(&cfg.MaxCommands, 10000)
	set(&cfg.MaxJunkCommands, 100)
	dur(&cfg.CommandTimeout, 5*time.Minute)
	dur(&cfg.DataTimeout, 10*time.Minute)
	set(&cfg.MaxReceived, 50)
	if cfg.MemoryBudget == 0 {
		cfg.MemoryBudget = 512 << 20
	}
	set(&cfg.IPv6Prefix, 84)
	set(&cfg.SRSFailureLimit, 10)
	dur(&cfg.SRSFailureWindow, 10*time.Minute)
	set(&cfg.SRSFailureBudget, 1000)
	set(&cfg.SRSReverse.MaxRecipients, 1)
	set(&cfg.SRSReverse.Rate, 20)
	dur(&cfg.SRSReverse.Window, time.Hour)
	return cfg
}

// The relay refuses to run with a limit unset rather than inventing one.
func TestConfigCheckRefusesUnsetLimits(t *testing.T) {
	if _, err := NewBackend(Config{Hostname: "relay.test", RelayDomains: []string{"company.com"}}, nil, nil, nil, nil); err == nil ||
		!strings.Contains(err.Error(), "Config.MaxRecipients") || !strings.Contains(err.Error(), "Config.DataTimeout") {
		t.Errorf("NewBackend with no limits: %v", err)
	}
	c := limited(Config{Hostname: "relay.test", RelayDomains: []string{"company.com"}})
	c.IPv6Prefix = 129
	if err := c.check(); err == nil {
		t.Error("IPv6Prefix 129 accepted")
	}
	if err := limited(c).check(); err == nil {
		t.Error("limited kept a bad IPv6Prefix and check accepted it")
	}
	c.IPv6Prefix = 84
	if err := c.check(); err != nil {
		t.Errorf("limited config: %v", err)
	}
}

// delivering is a scheduler for tests that deliver what the relay accepts
// (q sets the spool, hops, workers and retry): the rest of its limits,
// which these tests do not exercise.
func delivering(q *queue.Scheduler) *queue.Scheduler {
	q.ExternalWorkers = max(q.ExternalWorkers, q.Workers)
	if q.ExternalRetry.Min == 0 {
		q.ExternalRetry = q.Retry
	}
	q.Lifetime = 24 * time.Hour
	q.DestinationConcurrency, q.InitialConcurrency = 8, 8
	q.RecipientLimit, q.ActiveLimit, q.DeadAfter = 100, 1000, 3
	return q
}
