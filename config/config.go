// Package config reads mailfwd's one YAML file. Decoding is strict: an
// unknown or misspelt key is an error naming the key and its line, because
// a silently ignored setting in a mail relay means mail going where the
// admin did not intend.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"
	"gopkg.in/yaml.v3"

	"mailfwd/queue/nexthop"
	"mailfwd/routing"
)

// Config is the whole file.
type Config struct {
	// Hostname is our name in the banner, EHLO and Received headers.
	Hostname string `yaml:"hostname"`
	// Listen addresses for SMTP (host:port).
	Listen []string `yaml:"listen"`
	// AdminListen is the admin HTTP listener (host:port) for /metrics and
	// /healthz; empty: none.
	AdminListen string `yaml:"admin_listen"`
	// AdminPprof adds Go's /debug/pprof/ to the admin listener: profiles
	// of the live relay, for finding where its CPU or memory goes.
	AdminPprof bool `yaml:"admin_pprof"`
	// RelayDomains are the domains we accept mail for; anything else is
	// refused at RCPT with 554 5.7.1.
	RelayDomains []string `yaml:"relay_domains"`
	// LocalDomains are also ours (Postfix's own destinations) but not
	// accepted from clients: mail for them is not an external forward, so
	// its sender is not SRS-rewritten.
	LocalDomains []string `yaml:"local_domains"`
	// SpoolDir holds the queue. Relative paths are relative to the config
	// file's directory (or the working directory for the embedded default).
	SpoolDir string `yaml:"spool_dir"`
	Spool    Spool  `yaml:"spool"`
	// LookupTimeout bounds the directory work for one RCPT.
	LookupTimeout  time.Duration `yaml:"lookup_timeout"`
	MaxMessageSize int64         `yaml:"max_message_size"`
	MaxRecipients  int           `yaml:"max_recipients"`
	TLS            *TLS          `yaml:"tls"`
	Limits         Limits        `yaml:"limits"`
	// ProxyProtocolFrom lists the load balancers (CIDRs) allowed to send a
	// PROXY protocol v1/v2 header; empty: PROXY protocol off.
	ProxyProtocolFrom []string  `yaml:"proxy_protocol_from"`
	Routing           Routing   `yaml:"routing"`
	SRS               *SRS      `yaml:"srs"`
	Auth              *Auth     `yaml:"auth"`
	Directory         Directory `yaml:"directory"`
	Delivery          Delivery  `yaml:"delivery"`
	Log               Log       `yaml:"log"`
	DNS               DNS       `yaml:"dns"`

	// dir is the directory relative paths are resolved against.
	dir string
}

// DNS is where mailfwd asks: the system's resolvers (/etc/resolv.conf) by
// default, or Servers.
type DNS struct {
	// Servers: resolvers (host:port) tried in order instead of
	// /etc/resolv.conf's.
	Servers []string `yaml:"servers"`
	// DNSSEC: believe the AD bit of their answers, as Postfix's
	// smtp_dns_support_level = dnssec does: they must be validating
	// resolvers on a path you trust (127.0.0.1, say). DANE needs it.
	DNSSEC *bool `yaml:"dnssec"` // default true
}

// Routing is how addresses are expanded (Postfix's virtual alias rules).
type Routing struct {
	// RecipientDelimiter: characters that start an address extension
	// (user+ext@domain). Default "+"; "none" turns extensions off.
	RecipientDelimiter string `yaml:"recipient_delimiter"`
	// CatchAll enables "@domain" directory lookups. Off by default: a
	// catch-all makes every address of the domain valid.
	CatchAll *bool `yaml:"catch_all"`
	// PropagateUnmatchedExtensions appends an extension that was removed
	// to find a match to the results (Postfix's default: yes).
	PropagateUnmatchedExtensions *bool `yaml:"propagate_unmatched_extensions"`
	// DomainRewrites maps a whole domain to another without directory
	// entries (old.example: new.example), consulted after the directory.
	DomainRewrites map[string]string `yaml:"domain_rewrites"`
	// UnknownRecipients: "reject" (550 5.1.1, default) or "pass" (deliver
	// unchanged to the next hop: the migration shim in front of an MTA that
	// knows the rest of the domain).
	// Postmaster: where postmaster@ a relay domain or the SRS domain goes
	// when the directory has no entry for it (RFC 5321 4.5.1); "" (the
	// default): unchanged to delivery.next_hop, whose Postfix has one.
	Postmaster        string `yaml:"postmaster"`
	UnknownRecipients string `yaml:"unknown_recipients"`
	// DryRun records each routing decision in the log but delivers every
	// recipient unchanged.
	DryRun             bool `yaml:"dry_run"`
	RecursionLimit     int  `yaml:"recursion_limit"`
	ExpansionLimit     int  `yaml:"expansion_limit"`
	AddressLengthLimit int  `yaml:"address_length_limit"`
}

// TLS offers STARTTLS with this certificate (reloaded on SIGHUP).
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Limits protect the front end from floods and slow or broken clients.
type Limits struct {
	MaxConnections      int           `yaml:"max_connections"`        // in total (default 1000)
	MaxConnectionsPerIP int           `yaml:"max_connections_per_ip"` // default 20
	ConnectionRatePerIP int           `yaml:"connection_rate_per_ip"` // new connections per minute (default 120)
	MaxErrors           int           `yaml:"max_errors"`             // refused commands per session (default 20)
	MaxCommands         int           `yaml:"max_commands"`           // MAIL/RCPT/DATA/BDAT per session (default 10000)
	MaxJunkCommands     int           `yaml:"max_junk_commands"`      // NOOP/RSET/VRFY/HELP per session (default 100)
	IPv6PrefixLength    int           `yaml:"ipv6_prefix_length"`     // bits naming one IPv6 client (default 84)
	CommandTimeout      time.Duration `yaml:"command_timeout"`        // default 5m
	DataTimeout         time.Duration `yaml:"data_timeout"`           // whole message, default 10m
	MaxReceived         int           `yaml:"max_received_headers"`   // loop guard, default 50
	MemoryBudget        int64         `yaml:"memory_budget"`          // bytes messages in transfer may hold together (default 512 MiB)
}

// Auth checks SPF/DKIM/DMARC at the edge and signs/seals forwards (off
// when absent).
type Auth struct {
	// AuthservID names us in Authentication-Results (default: hostname).
	AuthservID    string        `yaml:"authserv_id"`
	LookupTimeout time.Duration `yaml:"lookup_timeout"` // each DNS lookup, default 5s
	Timeout       time.Duration `yaml:"timeout"`        // wait after the message, default 15s
	// SPFFail and DMARCReject: accept (default), tag or reject. A
	// forwarder should not refuse what the final mailbox would accept.
	SPFFail     string   `yaml:"spf_fail"`
	DMARCReject string   `yaml:"dmarc_reject"`
	DKIM        *AuthKey `yaml:"dkim"` // signs external forwards
	ARC         *AuthKey `yaml:"arc"`  // seals external forwards (RSA)
	// DMARCForwarding rewrites the From of forwards that would fail DMARC
	// at the receiver (auth/forward.go).
	DMARCForwarding DMARCForwarding `yaml:"dmarc_forwarding"`
}

// DMARCForwarding: a forward of mail from a p=reject/quarantine domain
// that passed DMARC here through SPF alone leaves with our From.
type DMARCForwarding struct {
	Mode string `yaml:"mode"` // rewrite (default) or off
	// From is the address rewritten mail carries (default: forwarded@ the
	// auth.dkim domain, else @ the organizational domain of srs.domain).
	From string `yaml:"from"`
	// Via names us in the display name (default: From's domain).
	Via string `yaml:"via"`
	// OffFor: relay domains or addresses (as the sender wrote them) whose
	// forwards keep their From whatever happens.
	OffFor []string `yaml:"off_for"`
}

// AuthKey is a signing key and where its public half is published.
type AuthKey struct {
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	KeyFile  string `yaml:"key_file"`
}

// SRS rewrites the sender of external forwards (off when absent).
type SRS struct {
	// Domain is the SRS domain: rewritten senders are in it, bounces to it
	// are decoded. Its MX must point at mailfwd; it must not be a relay domain.
	Domain string `yaml:"domain"`
	// SecretsFile holds one secret per line: the first signs, all verify.
	SecretsFile   string        `yaml:"secrets_file"`
	Separator     string        `yaml:"separator"` // "=", "+" or "-"
	HashLength    int           `yaml:"hash_length"`
	HashMin       int           `yaml:"hash_min"`
	MaxAgeDays    int           `yaml:"max_age_days"`
	FailureLimit  int           `yaml:"failure_limit"`  // invalid SRS RCPTs per client per window
	FailureWindow time.Duration `yaml:"failure_window"` // default 10m
	FailureBudget int           `yaml:"failure_budget"` // invalid SRS RCPTs of all clients per window (default 1000)
	// Store keeps the senders behind database-form addresses (senders too
	// long to embed): a file in spool_dir by default, or a shared Redis.
	Store SRSStore `yaml:"store"`
	// Database is "auto" (the database form only for senders that do not
	// fit; the default) or "always" (every ordinary sender, as postsrsd's
	// original-envelope = database).
	Database string `yaml:"database"`
	// LegacyUntil is the cut-over day (YYYY-MM-DD): legacy (postsrsd-
	// compatible, re-splittable) hashes verify only for stamps minted on or
	// before it. Default: the day recorded in spool_dir/srs-cutover at the
	// first start (written then).
	LegacyUntil string `yaml:"legacy_until"`
	// Reverse bounds what a valid SRS address may be used for.
	Reverse SRSReverse `yaml:"reverse"`
	// PostsrsdConfig is a postsrsd 2.x postsrsd.conf: its srs-domain,
	// secrets-file, separator, hash-length, hash-minimum, original-envelope
	// and a redis envelope-database fill what this section leaves unset.
	PostsrsdConfig string `yaml:"postsrsd_config"`
}

// SRSStore is where database-form senders are kept: one of Path and Redis.
type SRSStore struct {
	Path  string    `yaml:"path"` // default <spool_dir>/srs.db
	Redis *SRSRedis `yaml:"redis"`
}

// SRSRedis is a Redis server shared by several instances (and by postsrsd
// 2.x: the same key layout).
type SRSRedis struct {
	Address      string        `yaml:"address"` // host:port
	PasswordFile string        `yaml:"password_file"`
	DB           int           `yaml:"db"`
	KeyPrefix    string        `yaml:"key_prefix"` // default "PostSRSd/"
	Timeout      time.Duration `yaml:"timeout"`    // default 2s
}

// SRSReverse bounds bounces to SRS addresses (relay.SRSReversePolicy).
type SRSReverse struct {
	AnySender     bool          `yaml:"any_sender"`     // default: only MAIL FROM:<>
	MaxRecipients int           `yaml:"max_recipients"` // per transaction, default 1
	Rate          int           `yaml:"rate"`           // per decoded address and window, default 20
	Window        time.Duration `yaml:"window"`         // default 1h
}

// Directory selects exactly one source, and its cache.
type Directory struct {
	LDIF *LDIF `yaml:"ldif"`
	LDAP *LDAP `yaml:"ldap"`
	// PostfixMap is an existing Postfix ldap_table(5) file, read unchanged.
	PostfixMap string `yaml:"postfix_map"`
	Cache      Cache  `yaml:"cache"`
	// Replica applies to the LDAP sources: ldap and postfix_map.
	Replica Replica `yaml:"replica"`
}

// Cache bounds how long directory answers are reused.
type Cache struct {
	PositiveTTL *time.Duration `yaml:"positive_ttl"` // default 60s; 0 disables
	NegativeTTL *time.Duration `yaml:"negative_ttl"` // default 10s
	Size        int            `yaml:"size"`         // keys kept, default 10000
}

// LDIF is a directory held in an LDIF file.
type LDIF struct {
	// File is the LDIF file, re-read when it changes. Empty: the seed
	// directory built into the binary.
	File   string `yaml:"file"`
	Schema Schema `yaml:",inline"`
}

// Schema names the attributes: mailRecipient by default.
type Schema struct {
	QueryAttributes   []string `yaml:"query_attributes"`
	ResultAttributes  []string `yaml:"result_attributes"`
	FallbackAttribute *string  `yaml:"fallback_attribute"`
}

// LDAP is an LDAP directory (389-DS, OpenLDAP).
type LDAP struct {
	Servers          []string      `yaml:"servers"`
	StartTLS         bool          `yaml:"start_tls"`
	CAFile           string        `yaml:"ca_file"`
	TLSRequireCert   *bool         `yaml:"tls_require_cert"`
	BindDN           string        `yaml:"bind_dn"`
	BindPasswordFile string        `yaml:"bind_password_file"`
	BindPasswordEnv  string        `yaml:"bind_password_env"`
	SearchBase       string        `yaml:"search_base"`
	QueryFilter      string        `yaml:"query_filter"`
	ResultAttributes []string      `yaml:"result_attributes"`
	FallbackAttr     *string       `yaml:"fallback_attribute"`
	Timeout          time.Duration `yaml:"timeout"`
	PoolSize         int           `yaml:"pool_size"`
	SizeLimit        int           `yaml:"size_limit"`
}

// Replica is the live copy of the directory that answers RCPT lookups
// (RFC 4533 content synchronisation; docs/directory.md).
type Replica struct {
	Enabled *bool `yaml:"enabled"` // default true
	// MaxStale: how old the last confirmed sync may be for known addresses
	// to be answered from the replica while the directory is down.
	MaxStale time.Duration `yaml:"max_stale"` // default 4h
}

// DestinationPolicy tunes delivery to one destination.
type DestinationPolicy struct {
	Concurrency int           `yaml:"concurrency"`
	RateDelay   time.Duration `yaml:"rate_delay"`
}

// Delivery is the queue manager and next hop.
type Delivery struct {
	// NextHop is the SMTP server (Postfix) that takes mail for our domains.
	NextHop string `yaml:"next_hop"`
	// ExternalNextHop is a smarthost for external forwards; empty: they go
	// to the MX hosts of their domain.
	ExternalNextHop string `yaml:"external_next_hop"`
	// Transports route a domain or address elsewhere ("smtp:[host]:port",
	// "smtp:host" for its MX hosts, "lmtp:[host]:port"), before all else.
	Transports map[string]string `yaml:"transports"`
	// MXPort is the port MX hosts are dialled on (25).
	MXPort int `yaml:"mx_port"`
	// Workers deliver to our own next hops, ExternalWorkers to the
	// Internet: separate, so slow outside MXes never delay local mail.
	Workers         int `yaml:"workers"`
	ExternalWorkers int `yaml:"external_workers"`
	// ActiveLimit: messages per class with their envelope in memory (the
	// rest of a backlog waits as small records: Postfix's
	// qmgr_message_active_limit).
	ActiveLimit int `yaml:"active_limit"`
	// InitialConcurrency: where a destination's concurrency window starts
	// (it grows to DestinationConcurrency with successes).
	InitialConcurrency int `yaml:"initial_concurrency"`
	// RecipientLimit: recipients per transaction.
	RecipientLimit int `yaml:"recipient_limit"`
	// DeadAfter: failed connections in a row that mark a destination dead.
	DeadAfter int `yaml:"dead_after"`
	// DestinationRateDelay: least time between two transactions to one
	// destination (0: none). Destinations overrides it and the
	// concurrency per destination: a recipient domain (MX delivery) or a
	// next hop's host.
	DestinationRateDelay time.Duration                `yaml:"destination_rate_delay"`
	Destinations         map[string]DestinationPolicy `yaml:"destinations"`
	// RetryMin/RetryMax: backoff towards our own next hops (seconds to
	// minutes); ExternalRetryMin/Max towards the Internet's MXes.
	RetryMin         time.Duration `yaml:"retry_min"`
	RetryMax         time.Duration `yaml:"retry_max"`
	ExternalRetryMin time.Duration `yaml:"external_retry_min"`
	ExternalRetryMax time.Duration `yaml:"external_retry_max"`
	// Lifetime: a message still undelivered after this long bounces.
	Lifetime time.Duration `yaml:"lifetime"`
	// DelayWarning: senders hear once that their message is delayed after
	// this long (negative: never).
	DelayWarning           time.Duration `yaml:"delay_warning"`
	DestinationConcurrency int           `yaml:"destination_concurrency"`
	ConnectTimeout         time.Duration `yaml:"connect_timeout"`
	// TLSPolicy for outgoing connections: opportunistic (default: STARTTLS
	// when offered, certificate not verified), require (verified, else the
	// mail waits) or none. TLSPolicies overrides it per destination (a
	// recipient domain for MX delivery, else the next hop's host).
	TLSPolicy   string            `yaml:"tls_policy"`
	TLSPolicies map[string]string `yaml:"tls_policies"`
	// TLSCAFile verifies next hops under the require policy and MTA-STS
	// hosts and policy servers (default: the system's roots).
	TLSCAFile string `yaml:"tls_ca_file"`
	// DANE (RFC 7672) and MTA-STS (RFC 8461) for MX delivery: where a
	// domain publishes either, TLS is required and verified as it says
	// (DANE wins); elsewhere tls_policy applies. A tls_policies entry for
	// the domain overrides both.
	DANE   *bool  `yaml:"dane"`    // default true (needs dns.dnssec)
	MTASTS *bool  `yaml:"mta_sts"` // default true
	TLSRPT TLSRPT `yaml:"tls_rpt"`
	// XClient / XForward pass the original client to next_hop (Postfix:
	// smtpd_authorized_xclient_hosts / smtpd_authorized_xforward_hosts).
	XClient  bool `yaml:"xclient"`
	XForward bool `yaml:"xforward"`
	// ForwardDSN: which senders hear that an external forward failed or is
	// delayed: authenticated (SPF pass or a DKIM signature of their domain
	// at our edge; needs the auth section), always, or never.
	ForwardDSN string `yaml:"forward_dsn"`
	// DSNRevealForward: such DSNs name the outside address and quote its
	// MX's reply, instead of the address the sender used and the codes.
	DSNRevealForward bool `yaml:"dsn_reveal_forward"`
}

// TLSRPT sends RFC 8460 reports: once a day, per domain that asks for
// them (_smtp._tls TXT), what our sessions to its MXes found.
type TLSRPT struct {
	Enabled      bool   `yaml:"enabled"`
	Organization string `yaml:"organization"` // default: hostname
	Contact      string `yaml:"contact"`      // default: postmaster@hostname
}

// Log is the logging setup.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Load reads and validates a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type`)

// Parse decodes and validates YAML; relative paths resolve against dir.
func Parse(b []byte, dir string) (*Config, error) {
	c := &Config{dir: dir}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty: at least relay_domains, directory and delivery.next_hop are needed")
		}
		msg := err.Error()
		if m := unknownField.FindAllStringSubmatch(msg, -1); m != nil {
			var parts []string
			for _, x := range m {
				parts = append(parts, fmt.Sprintf("line %s: unknown key %q", x[1], x[2]))
			}
			return nil, errors.New(strings.Join(parts, "; "))
		}
		return nil, errors.New(strings.TrimPrefix(msg, "yaml: "))
	}
	if err := c.importPostsrsd(); err != nil {
		return nil, err
	}
	c.setDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// importPostsrsd fills the srs section from srs.postsrsd_config, where
// the section leaves a key unset.
func (c *Config) importPostsrsd() error {
	s := c.SRS
	if s == nil || s.PostsrsdConfig == "" {
		return nil
	}
	path := c.Path(s.PostsrsdConfig)
	p, err := LoadPostsrsd(path)
	if err != nil {
		return fmt.Errorf("srs.postsrsd_config: %w", err)
	}
	rel := func(f string) string { // postsrsd.conf paths are relative to it
		if f == "" || filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(filepath.Dir(path), f)
	}
	if s.Domain == "" {
		s.Domain = p.SRSDomain
	}
	if s.SecretsFile == "" {
		s.SecretsFile = rel(p.SecretsFile)
	}
	if s.Separator == "" {
		s.Separator = p.Separator
	}
	if s.HashLength == 0 {
		s.HashLength = p.HashLength
	}
	if s.HashMin == 0 {
		s.HashMin = p.HashMinimum
	}
	if s.Database == "" && p.OriginalEnvelope == "database" {
		s.Database = "always"
	}
	if s.Store.Path != "" || s.Store.Redis != nil || p.EnvelopeDatabase == "" {
		return nil
	}
	switch kind, where, _ := strings.Cut(p.EnvelopeDatabase, ":"); kind {
	case "redis":
		s.Store.Redis = &SRSRedis{Address: where}
	case "sqlite":
		return fmt.Errorf("srs.postsrsd_config: %s keeps its senders in sqlite:%s, which mailfwd cannot share: "+
			"import them (mailfwd srs import-postsrsd) and set srs.store", path, where)
	default:
		return fmt.Errorf("srs.postsrsd_config: envelope-database %q: want sqlite:PATH or redis:HOST:PORT", p.EnvelopeDatabase)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			c.Hostname = h
		} else {
			c.Hostname = "localhost"
		}
	}
	if len(c.Listen) == 0 {
		c.Listen = []string{"127.0.0.1:2525"}
	}
	if c.SpoolDir == "" {
		c.SpoolDir = "/var/spool/mailfwd"
	}
	if a := c.Auth; a != nil {
		f := &a.DMARCForwarding
		if f.Mode == "" {
			f.Mode = "rewrite"
		}
		if f.From == "" {
			switch {
			case a.DKIM != nil:
				f.From = "forwarded@" + a.DKIM.Domain
			case c.SRS != nil:
				org, err := publicsuffix.EffectiveTLDPlusOne(strings.ToLower(c.SRS.Domain))
				if err != nil {
					org = c.SRS.Domain
				}
				f.From = "forwarded@" + org
			default:
				f.Mode = "off" // nothing of ours would pass DMARC at the receiver
			}
		}
		if f.Via == "" && f.From != "" {
			f.Via = f.From[strings.LastIndexByte(f.From, '@')+1:]
		}
	}
	if s := c.SRS; s != nil {
		if s.Database == "" {
			s.Database = "auto"
		}
		if s.Store.Path == "" && s.Store.Redis == nil {
			s.Store.Path = filepath.Join(c.SpoolDir, "srs.db")
		}
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = 10 * time.Second
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 50 << 20
	}
	if c.Spool.MinFree == nil {
		mf := c.MaxMessageSize * 3 / 2
		c.Spool.MinFree = &mf
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = 1000
	}
	if l := c.Directory.LDAP; l != nil {
		if l.QueryFilter == "" {
			l.QueryFilter = "(|(mail=%s)(mailAlternateAddress=%s))"
		}
		if len(l.ResultAttributes) == 0 {
			l.ResultAttributes = []string{"mailForwardingAddress"}
		}
		if l.Timeout == 0 {
			l.Timeout = 5 * time.Second
		}
		if l.PoolSize == 0 {
			l.PoolSize = 8
		}
	}
	if r := &c.Directory.Replica; r.Enabled == nil {
		on := true
		r.Enabled = &on
	}
	if r := &c.Directory.Replica; r.MaxStale == 0 {
		r.MaxStale = 4 * time.Hour
	}
	l := &c.Limits
	if l.MaxConnections == 0 {
		l.MaxConnections = 1000
	}
	if l.MaxConnectionsPerIP == 0 {
		l.MaxConnectionsPerIP = 20
	}
	if l.ConnectionRatePerIP == 0 {
		l.ConnectionRatePerIP = 120
	}
	if l.MaxErrors == 0 {
		l.MaxErrors = 20
	}
	if l.MaxCommands == 0 {
		// a transaction of max_recipients RCPTs must fit, several times over
		l.MaxCommands = max(10000, 2*c.MaxRecipients+10)
	}
	if l.MaxJunkCommands == 0 {
		l.MaxJunkCommands = 100
	}
	if l.IPv6PrefixLength == 0 {
		l.IPv6PrefixLength = 84
	}
	if l.CommandTimeout == 0 {
		l.CommandTimeout = 5 * time.Minute
	}
	if l.DataTimeout == 0 {
		l.DataTimeout = 10 * time.Minute
	}
	if l.MaxReceived == 0 {
		l.MaxReceived = 50
	}
	if l.MemoryBudget == 0 {
		l.MemoryBudget = 512 << 20
	}
	r := &c.Routing
	if r.RecipientDelimiter == "" {
		r.RecipientDelimiter = "+"
	}
	if r.CatchAll == nil {
		r.CatchAll = new(bool)
	}
	if r.PropagateUnmatchedExtensions == nil {
		t := true
		r.PropagateUnmatchedExtensions = &t
	}
	if r.UnknownRecipients == "" {
		r.UnknownRecipients = "reject"
	}
	if r.RecursionLimit == 0 {
		r.RecursionLimit = 1000
	}
	if r.ExpansionLimit == 0 {
		r.ExpansionLimit = 1000
	}
	if r.AddressLengthLimit == 0 {
		r.AddressLengthLimit = 1000
	}
	ca := &c.Directory.Cache
	if ca.PositiveTTL == nil {
		d := 60 * time.Second
		ca.PositiveTTL = &d
	}
	if ca.NegativeTTL == nil {
		d := 10 * time.Second
		ca.NegativeTTL = &d
	}
	if ca.Size == 0 {
		ca.Size = 10000
	}
	d := &c.Delivery
	if d.Workers == 0 {
		d.Workers = 16
	}
	if d.RetryMin == 0 {
		d.RetryMin = 10 * time.Second
	}
	if d.RetryMax == 0 {
		d.RetryMax = 5 * time.Minute
	}
	if d.ExternalRetryMin == 0 {
		d.ExternalRetryMin = 5 * time.Minute
	}
	if d.ExternalRetryMax == 0 {
		d.ExternalRetryMax = 4 * time.Hour
	}
	if d.Lifetime == 0 {
		d.Lifetime = 5 * 24 * time.Hour
	}
	if d.DelayWarning == 0 {
		d.DelayWarning = 4 * time.Hour
	}
	if d.DestinationConcurrency == 0 {
		d.DestinationConcurrency = 20
	}
	if d.ExternalWorkers == 0 {
		d.ExternalWorkers = 100
	}
	if d.ActiveLimit == 0 {
		d.ActiveLimit = 5000
	}
	if d.InitialConcurrency == 0 {
		d.InitialConcurrency = 5
	}
	if d.RecipientLimit == 0 {
		d.RecipientLimit = 100
	}
	if d.DeadAfter == 0 {
		d.DeadAfter = 3
	}
	if d.ForwardDSN == "" {
		d.ForwardDSN = "authenticated"
	}
	if d.TLSPolicy == "" {
		d.TLSPolicy = "opportunistic"
	}
	on := func(b **bool) {
		if *b == nil {
			t := true
			*b = &t
		}
	}
	on(&d.DANE)
	on(&d.MTASTS)
	on(&c.DNS.DNSSEC)
	if d.TLSRPT.Organization == "" {
		d.TLSRPT.Organization = c.Hostname
	}
	if d.TLSRPT.Contact == "" {
		d.TLSRPT.Contact = "postmaster@" + c.Hostname
	}
	if d.MXPort == 0 {
		d.MXPort = 25
	}
	if d.ConnectTimeout == 0 {
		d.ConnectTimeout = 30 * time.Second
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

// Spool is how the queue directory is kept.
type Spool struct {
	// MinFree is the free space new mail may not take: below it MAIL gets
	// 452 4.3.1 while delivery goes on (Postfix's queue_minfree). Default
	// 1.5 x max_message_size; 0: no reserve.
	MinFree *int64 `yaml:"min_free"`
	// UnsafeFilesystem lets the spool live on a filesystem whose syncs do
	// not reach stable storage (tmpfs, a volatile overlay, FUSE): every
	// message there is lost with the power, or the machine.
	UnsafeFilesystem bool `yaml:"unsafe_filesystem"`
}

func (c *Config) validate() error {
	var errs []error
	if c.Spool.MinFree != nil && *c.Spool.MinFree < 0 {
		errs = append(errs, fmt.Errorf("spool.min_free: %d is negative", *c.Spool.MinFree))
	}
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, l := range c.Listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			bad("listen: %q is not host:port", l)
		}
	}
	if a := c.AdminListen; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("admin_listen: %q is not host:port", a)
		}
		for _, l := range c.Listen {
			if l == a {
				bad("admin_listen: %s is also an SMTP listener", a)
			}
		}
	}
	if t := c.TLS; t != nil && (t.CertFile == "" || t.KeyFile == "") {
		bad("tls: cert_file and key_file are both required")
	}
	for _, p := range c.ProxyProtocolFrom {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err2 := netip.ParseAddr(p); err2 != nil {
				bad("proxy_protocol_from: %q is not an address or CIDR", p)
			}
		}
	}
	if len(c.RelayDomains) == 0 {
		bad("relay_domains: at least one domain is needed (mailfwd refuses mail for any other domain)")
	}
	for _, d := range c.RelayDomains {
		if _, err := routing.NormalizeDomain(d); err != nil {
			bad("relay_domains: %v", err)
		}
	}
	sources := 0
	for _, set := range []bool{c.Directory.LDIF != nil, c.Directory.LDAP != nil, c.Directory.PostfixMap != ""} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		bad("directory: configure one source, ldif, ldap or postfix_map (an ldif source with no settings is written `ldif: {}`)")
	case sources > 1:
		bad("directory: configure one source, not several of ldif, ldap and postfix_map")
	}
	for from, to := range c.Routing.DomainRewrites {
		if _, err := routing.NormalizeDomain(from); err != nil {
			bad("routing.domain_rewrites: %v", err)
		}
		if _, err := routing.NormalizeDomain(to); err != nil {
			bad("routing.domain_rewrites: %v", err)
		}
	}
	if u := c.Routing.UnknownRecipients; u != "reject" && u != "pass" {
		bad("routing.unknown_recipients: %q: want reject or pass", u)
	}
	if c.Routing.RecursionLimit < 0 || c.Routing.ExpansionLimit < 0 || c.Routing.AddressLengthLimit < 0 {
		bad("routing: limits must be positive")
	}
	if *c.Directory.Cache.PositiveTTL < 0 || *c.Directory.Cache.NegativeTTL < 0 || c.Directory.Cache.Size < 0 {
		bad("directory.cache: TTLs and size must not be negative")
	}
	if l := c.Directory.LDAP; l != nil {
		if len(l.Servers) == 0 {
			bad("directory.ldap.servers: at least one ldap:// or ldaps:// URL is needed")
		}
		for _, s := range l.Servers {
			if !strings.HasPrefix(s, "ldap://") && !strings.HasPrefix(s, "ldaps://") {
				bad("directory.ldap.servers: %q: want ldap://host:port or ldaps://host:port", s)
			}
		}
		if l.SearchBase == "" {
			bad("directory.ldap.search_base is required")
		}
		if !strings.ContainsAny(l.QueryFilter, "%") {
			bad("directory.ldap.query_filter %q has no %%s, %%u or %%d", l.QueryFilter)
		}
		if l.BindDN != "" && l.BindPasswordFile == "" && l.BindPasswordEnv == "" {
			bad("directory.ldap: bind_dn needs bind_password_file or bind_password_env")
		}
		if l.BindPasswordFile != "" && l.BindPasswordEnv != "" {
			bad("directory.ldap: set bind_password_file or bind_password_env, not both")
		}
	}
	if c.Delivery.NextHop == "" {
		bad("delivery.next_hop is required (host:port of the Postfix that takes our mail)")
	} else if _, _, err := net.SplitHostPort(c.Delivery.NextHop); err != nil {
		bad("delivery.next_hop: %q is not host:port", c.Delivery.NextHop)
	}
	if h := c.Delivery.ExternalNextHop; h != "" {
		if _, _, err := net.SplitHostPort(h); err != nil {
			bad("delivery.external_next_hop: %q is not host:port", h)
		}
	}
	for _, d := range c.LocalDomains {
		if _, err := routing.NormalizeDomain(d); err != nil {
			bad("local_domains: %v", err)
		}
	}
	if a := c.Auth; a != nil {
		for name, v := range map[string]string{"spf_fail": a.SPFFail, "dmarc_reject": a.DMARCReject} {
			if v != "" && v != "accept" && v != "tag" && v != "reject" {
				bad("auth.%s: %q: want accept, tag or reject", name, v)
			}
		}
		for name, k := range map[string]*AuthKey{"dkim": a.DKIM, "arc": a.ARC} {
			if k != nil && (k.Domain == "" || k.Selector == "" || k.KeyFile == "") {
				bad("auth.%s: domain, selector and key_file are required", name)
			}
		}
		if f := a.DMARCForwarding; f.Mode != "rewrite" && f.Mode != "off" {
			bad("auth.dmarc_forwarding.mode: %q: want rewrite or off", f.Mode)
		} else if f.Mode == "rewrite" && f.From != "" {
			at := strings.LastIndexByte(f.From, '@')
			dom := strings.ToLower(f.From[at+1:])
			org := func(d string) string {
				o, err := publicsuffix.EffectiveTLDPlusOne(strings.ToLower(d))
				if err != nil {
					return strings.ToLower(d)
				}
				return o
			}
			aligned := (a.DKIM != nil && org(a.DKIM.Domain) == org(dom)) || (c.SRS != nil && org(c.SRS.Domain) == org(dom))
			switch {
			case at <= 0 || at == len(f.From)-1:
				bad("auth.dmarc_forwarding.from: %q is not an address", f.From)
			case !aligned:
				bad("auth.dmarc_forwarding.from: %s must be in the organizational domain of auth.dkim.domain or srs.domain, or the rewritten mail fails DMARC too", f.From)
			}
		}
	}
	if b := c.Limits.IPv6PrefixLength; b < 1 || b > 128 {
		bad("limits.ipv6_prefix_length: %d: want 1..128", b)
	}
	if s := c.SRS; s != nil {
		if s.Domain == "" {
			bad("srs.domain is required")
		} else if d, err := routing.NormalizeDomain(s.Domain); err != nil {
			bad("srs.domain: %v", err)
		} else {
			for _, r := range c.RelayDomains {
				if n, _ := routing.NormalizeDomain(r); n == d {
					bad("srs.domain %s is also a relay domain; use a dedicated SRS domain (e.g. srs.%s)", d, d)
				}
			}
		}
		if s.SecretsFile == "" {
			bad("srs.secrets_file is required")
		}
		if s.Separator != "" && s.Separator != "=" && s.Separator != "+" && s.Separator != "-" {
			bad("srs.separator: %q: want =, + or -", s.Separator)
		}
		if s.Database != "auto" && s.Database != "always" {
			bad("srs.database: %q: want auto or always", s.Database)
		}
		if s.LegacyUntil != "" {
			if _, err := time.Parse("2006-01-02", s.LegacyUntil); err != nil {
				bad("srs.legacy_until: %q: want YYYY-MM-DD", s.LegacyUntil)
			}
		}
		if s.Store.Path != "" && s.Store.Redis != nil {
			bad("srs.store: path and redis are exclusive")
		}
		if r := s.Store.Redis; r != nil && r.Address == "" {
			bad("srs.store.redis.address is required")
		}
		if s.Reverse.MaxRecipients < 0 || s.Reverse.Rate < 0 || s.Reverse.Window < 0 {
			bad("srs.reverse: max_recipients, rate and window must not be negative")
		}
	}
	for _, srv := range c.DNS.Servers {
		if _, _, err := net.SplitHostPort(srv); err != nil {
			bad("dns.servers: %q: want host:port", srv)
		}
	}
	switch c.Delivery.ForwardDSN {
	case "authenticated", "always", "never":
	default:
		bad("delivery.forward_dsn: %q: want authenticated, always or never", c.Delivery.ForwardDSN)
	}
	for dest, p := range c.Delivery.TLSPolicies {
		if p != "none" && p != "opportunistic" && p != "require" {
			bad("delivery.tls_policies[%s]: %q: want none, opportunistic or require", dest, p)
		}
	}
	if p := c.Delivery.TLSPolicy; p != "none" && p != "opportunistic" && p != "require" {
		bad("delivery.tls_policy: %q: want none, opportunistic or require", p)
	}
	if c.Delivery.XClient && c.Delivery.XForward {
		bad("delivery: set xclient or xforward, not both")
	}
	for k, v := range c.Delivery.Transports {
		if _, err := nexthop.ParseTransport(v); err != nil {
			bad("delivery.transports[%s]: %v", k, err)
		}
	}
	if c.Delivery.ExternalRetryMax < c.Delivery.ExternalRetryMin {
		bad("delivery.external_retry_max (%s) is below external_retry_min (%s)", c.Delivery.ExternalRetryMax, c.Delivery.ExternalRetryMin)
	}
	if c.Delivery.Lifetime < 0 {
		bad("delivery.lifetime must be positive")
	}
	if c.Delivery.RetryMax < c.Delivery.RetryMin {
		bad("delivery.retry_max (%s) is below retry_min (%s)", c.Delivery.RetryMax, c.Delivery.RetryMin)
	}
	for name, v := range map[string]int{"workers": c.Delivery.Workers, "external_workers": c.Delivery.ExternalWorkers,
		"active_limit": c.Delivery.ActiveLimit, "initial_concurrency": c.Delivery.InitialConcurrency,
		"recipient_limit": c.Delivery.RecipientLimit, "dead_after": c.Delivery.DeadAfter,
		"destination_concurrency": c.Delivery.DestinationConcurrency} {
		if v < 0 {
			bad("delivery.%s must be positive", name)
		}
	}
	if c.Delivery.DestinationRateDelay < 0 {
		bad("delivery.destination_rate_delay must not be negative")
	}
	for dest, p := range c.Delivery.Destinations {
		if p.Concurrency < 0 || p.RateDelay < 0 {
			bad("delivery.destinations[%s]: concurrency and rate_delay must not be negative", dest)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level: %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format: %q: want text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// ProxyPrefixes returns proxy_protocol_from as prefixes (validated).
func (c *Config) ProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range c.ProxyProtocolFrom {
		if pr, err := netip.ParsePrefix(p); err == nil {
			out = append(out, pr)
		} else if a, err := netip.ParseAddr(p); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

// Delimiter is the recipient delimiter in effect ("" for none).
func (r *Routing) Delimiter() string {
	if r.RecipientDelimiter == "none" {
		return ""
	}
	return r.RecipientDelimiter
}

// Limits are the expansion limits.
func (r *Routing) Limits() routing.Limits {
	return routing.Limits{Recursion: r.RecursionLimit, Expansion: r.ExpansionLimit, AddressLength: r.AddressLengthLimit}
}

// Rewrites returns the domain rewrites in A-label form (validated).
func (r *Routing) Rewrites() routing.DomainRewrites {
	out := routing.DomainRewrites{}
	for from, to := range r.DomainRewrites {
		f, _ := routing.NormalizeDomain(from)
		t, _ := routing.NormalizeDomain(to)
		out[f] = t
	}
	return out
}

// Path resolves a path from the config against the config's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// BindPassword reads the LDAP bind password from its file or environment
// variable. It is returned, never logged.
func (l *LDAP) BindPassword(c *Config) (string, error) {
	switch {
	case l.BindPasswordFile != "":
		b, err := os.ReadFile(c.Path(l.BindPasswordFile))
		if err != nil {
			return "", fmt.Errorf("directory.ldap.bind_password_file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case l.BindPasswordEnv != "":
		v, ok := os.LookupEnv(l.BindPasswordEnv)
		if !ok {
			return "", fmt.Errorf("directory.ldap.bind_password_env: $%s is not set", l.BindPasswordEnv)
		}
		return v, nil
	}
	return "", nil
}

// routingSchema is the mailRecipient schema with the configured overrides.
func routingSchema(query, result []string, fallback *string) routing.Schema {
	s := routing.MailRecipientSchema
	if len(query) > 0 {
		s.QueryAttributes = query
	}
	if len(result) > 0 {
		s.ResultAttributes = result
	}
	if fallback != nil {
		s.FallbackAttribute = *fallback
	}
	return s
}

// Schema is the LDIF source's attribute schema.
func (l *LDIF) RoutingSchema() routing.Schema {
	return routingSchema(l.Schema.QueryAttributes, l.Schema.ResultAttributes, l.Schema.FallbackAttribute)
}

// LDAPConfig builds the routing LDAP configuration (reads the password).
func (l *LDAP) LDAPConfig(c *Config) (routing.LDAPConfig, error) {
	pw, err := l.BindPassword(c)
	if err != nil {
		return routing.LDAPConfig{}, err
	}
	require := true
	if l.TLSRequireCert != nil {
		require = *l.TLSRequireCert
	}
	return routing.LDAPConfig{
		URLs: l.Servers, StartTLS: l.StartTLS, CAFile: c.Path(l.CAFile), RequireCert: require,
		BindDN: l.BindDN, BindPassword: pw, Base: l.SearchBase, Filter: l.QueryFilter,
		Schema:  routingSchema(nil, l.ResultAttributes, l.FallbackAttr),
		Timeout: l.Timeout, PoolSize: l.PoolSize, SizeLimit: l.SizeLimit,
	}, nil
}
