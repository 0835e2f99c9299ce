package config

import "time"

// Defaults is every default of the file, in one place: Parse decodes the
// admin's file over a copy of it, so a key left out keeps the value here
// and a key written keeps what was written (0 and false included).
// Sections that are off unless present (srs, auth, directory.ldap, ...) are
// filled in only when the file has them. Values that depend on other keys
// (hostname, spool.min_free, limits.max_commands, srs.store.path, the
// auth.dmarc_forwarding and delivery.tls_rpt names) are derived after
// decoding, in derive. docs/configuration.md's default column is checked
// against this function (docs_test.go), and the packages that use these
// settings have no defaults of their own: cmd/mailfwd/wire.go hands them
// every value.
//
// The returned Config has every optional section set, each to its
// defaults.
func Defaults() *Config {
	return &Config{
		Listen:         []string{"127.0.0.1:2525"},
		SpoolDir:       "/var/spool/mailfwd",
		LookupTimeout:  10 * time.Second,
		MaxMessageSize: 50 << 20,
		MaxRecipients:  1000,
		TLS:            &TLS{},
		Limits: Limits{
			MaxConnections:      1000,
			MaxConnectionsPerIP: 20,
			ConnectionRatePerIP: 120,
			MaxErrors:           20,
			MaxCommands:         10000, // and at least 2 × max_recipients + 10 (derive)
			MaxJunkCommands:     100,
			IPv6PrefixLength:    84,
			CommandTimeout:      5 * time.Minute,
			DataTimeout:         10 * time.Minute,
			MaxReceived:         50,
			MemoryBudget:        512 << 20,
		},
		Routing: Routing{
			RecipientDelimiter:           "+",
			PropagateUnmatchedExtensions: true,
			UnknownRecipients:            "reject",
			RecursionLimit:               1000,
			ExpansionLimit:               1000,
			AddressLengthLimit:           1000,
		},
		SRS: &SRS{
			Separator:     "=",
			HashLength:    4,
			HashMin:       4,
			MaxAgeDays:    21,
			FailureLimit:  10,
			FailureWindow: 10 * time.Minute,
			FailureBudget: 1000,
			Database:      "auto",
			Store: SRSStore{Redis: &SRSRedis{
				KeyPrefix: "PostSRSd/", // postsrsd 2.x's
				Timeout:   2 * time.Second,
			}},
			Reverse: SRSReverse{MaxRecipients: 1, Rate: 20, Window: time.Hour},
		},
		Auth: &Auth{
			LookupTimeout:   5 * time.Second,
			Timeout:         15 * time.Second,
			SPFFail:         Accept,
			DMARCReject:     Accept,
			DKIM:            &AuthKey{},
			ARC:             &AuthKey{},
			DMARCForwarding: DMARCForwarding{Mode: "rewrite"},
		},
		Directory: Directory{
			// The 389-DS mailRecipient schema: an entry is found by its mail
			// or mailAlternateAddress and rewrites to its
			// mailForwardingAddress values, else to its mail.
			LDIF: &LDIF{Schema: Schema{
				QueryAttributes:   []string{"mail", "mailAlternateAddress"},
				ResultAttributes:  []string{"mailForwardingAddress"},
				FallbackAttribute: "mail",
			}},
			LDAP: &LDAP{
				TLSRequireCert:   true,
				QueryFilter:      "(|(mail=%s)(mailAlternateAddress=%s))",
				ResultAttributes: []string{"mailForwardingAddress"},
				FallbackAttr:     "mail",
				Timeout:          5 * time.Second,
				PoolSize:         8,
			},
			Cache:   Cache{PositiveTTL: 60 * time.Second, NegativeTTL: 10 * time.Second, Size: 10000},
			Replica: Replica{Enabled: true, MaxStale: 4 * time.Hour},
		},
		Delivery: Delivery{
			MXPort:                 25,
			Workers:                16,
			ExternalWorkers:        100,
			ActiveLimit:            5000,
			InitialConcurrency:     5,
			RecipientLimit:         100,
			DeadAfter:              3,
			DestinationConcurrency: 20,
			RetryMin:               10 * time.Second,
			RetryMax:               5 * time.Minute,
			ExternalRetryMin:       5 * time.Minute,
			ExternalRetryMax:       4 * time.Hour,
			Lifetime:               5 * 24 * time.Hour,
			DelayWarning:           4 * time.Hour,
			ConnectTimeout:         30 * time.Second,
			TLSPolicy:              TLSOpportunistic,
			DANE:                   true,
			MTASTS:                 true,
			ForwardDSN:             "authenticated",
		},
		Log: Log{Level: "info", Format: "text"},
		DNS: DNS{DNSSEC: true},
	}
}
