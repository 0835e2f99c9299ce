package config

import "time"

// Action is what auth.spf_fail and auth.dmarc_reject do with a failure.
type Action string

const (
	Accept Action = "accept" // deliver, with the result in Authentication-Results
	Tag    Action = "tag"    // deliver with a header naming the failure
	Reject Action = "reject" // refuse after DATA (5xx)
)

// TLSPolicy is how a connection to a next hop uses STARTTLS.
type TLSPolicy string

const (
	TLSNone          TLSPolicy = "none"          // plaintext
	TLSOpportunistic TLSPolicy = "opportunistic" // STARTTLS when offered, certificate not verified
	TLSRequire       TLSPolicy = "require"       // verified TLS, else the mail waits
)

func (p TLSPolicy) valid() bool { return p == TLSNone || p == TLSOpportunistic || p == TLSRequire }

// setting is a key and its value, for checks that apply to many keys.
type setting struct {
	key string
	v   int64
}

// positive lists the settings that only make sense above zero: counts,
// sizes and timeouts that the relay divides by, waits for or sizes by.
func (c *Config) positive() []setting {
	d := func(key string, v time.Duration) setting { return setting{key, int64(v)} }
	i := func(key string, v int) setting { return setting{key, int64(v)} }
	out := []setting{
		d("lookup_timeout", c.LookupTimeout),
		{"max_message_size", c.MaxMessageSize},
		i("max_recipients", c.MaxRecipients),
		i("limits.max_connections_per_ip", c.Limits.MaxConnectionsPerIP),
		i("limits.connection_rate_per_ip", c.Limits.ConnectionRatePerIP),
		i("limits.max_errors", c.Limits.MaxErrors),
		i("limits.max_commands", c.Limits.MaxCommands),
		i("limits.max_junk_commands", c.Limits.MaxJunkCommands),
		d("limits.command_timeout", c.Limits.CommandTimeout),
		d("limits.data_timeout", c.Limits.DataTimeout),
		i("limits.max_received_headers", c.Limits.MaxReceived),
		{"limits.memory_budget", c.Limits.MemoryBudget},
		i("routing.recursion_limit", c.Routing.RecursionLimit),
		i("routing.expansion_limit", c.Routing.ExpansionLimit),
		i("routing.address_length_limit", c.Routing.AddressLengthLimit),
		i("directory.cache.size", c.Directory.Cache.Size),
		d("directory.replica.max_stale", c.Directory.Replica.MaxStale),
		i("delivery.mx_port", c.Delivery.MXPort),
		i("delivery.workers", c.Delivery.Workers),
		i("delivery.external_workers", c.Delivery.ExternalWorkers),
		i("delivery.active_limit", c.Delivery.ActiveLimit),
		i("delivery.initial_concurrency", c.Delivery.InitialConcurrency),
		i("delivery.recipient_limit", c.Delivery.RecipientLimit),
		i("delivery.dead_after", c.Delivery.DeadAfter),
		i("delivery.destination_concurrency", c.Delivery.DestinationConcurrency),
		d("delivery.retry_min", c.Delivery.RetryMin),
		d("delivery.external_retry_min", c.Delivery.ExternalRetryMin),
		d("delivery.lifetime", c.Delivery.Lifetime),
		d("delivery.connect_timeout", c.Delivery.ConnectTimeout),
	}
	if l := c.Directory.LDAP; l != nil {
		out = append(out, d("directory.ldap.timeout", l.Timeout), i("directory.ldap.pool_size", l.PoolSize))
	}
	if s := c.SRS; s != nil {
		out = append(out, i("srs.hash_length", s.HashLength), i("srs.hash_min", s.HashMin),
			i("srs.max_age_days", s.MaxAgeDays), i("srs.failure_limit", s.FailureLimit),
			d("srs.failure_window", s.FailureWindow), i("srs.failure_budget", s.FailureBudget),
			i("srs.reverse.max_recipients", s.Reverse.MaxRecipients), i("srs.reverse.rate", s.Reverse.Rate),
			d("srs.reverse.window", s.Reverse.Window))
		if r := s.Store.Redis; r != nil {
			out = append(out, d("srs.store.redis.timeout", r.Timeout))
		}
	}
	if a := c.Auth; a != nil {
		out = append(out, d("auth.lookup_timeout", a.LookupTimeout), d("auth.timeout", a.Timeout))
	}
	return out
}
