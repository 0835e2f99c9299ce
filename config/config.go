// Package config reads mailfwd's one YAML file. Decoding is strict: an
// unknown or misspelt key is an error naming the key and its line, because
// a silently ignored setting in a mail relay means mail going where the
// admin did not intend.
//
// It is data only: types, decoding, validation. Every default is in
// Defaults (defaults.go), and docs/configuration.md is checked against it;
// what the settings build (routing, queue, relay objects) is built by
// cmd/mailfwd/wire.go, the one package that imports this one
// (leaf_test.go).
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
	DNSSEC bool `yaml:"dnssec"`
}

// Routing is how addresses are expanded (Postfix's virtual alias rules).
type Routing struct {
	// RecipientDelimiter: characters that start an address extension
	// (user+ext@domain). Default "+"; "none" turns extensions off.
	RecipientDelimiter string `yaml:"recipient_delimiter"`
	// CatchAll enables "@domain" directory lookups. Off by default: a
	// catch-all makes every address of the domain valid.
	CatchAll bool `yaml:"catch_all"`
	// PropagateUnmatchedExtensions appends an extension that was removed
	// to find a match to the results (as Postfix does).
	PropagateUnmatchedExtensions bool `yaml:"propagate_unmatched_extensions"`
	// DomainRewrites maps a whole domain to another without directory
	// entries (old.example: new.example), consulted after the directory.
	DomainRewrites map[string]string `yaml:"domain_rewrites"`
	// UnknownRecipients: "reject" (550 5.1.1) or "pass" (deliver
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
	MaxConnections      int           `yaml:"max_connections"` // in total
	MaxConnectionsPerIP int           `yaml:"max_connections_per_ip"`
	ConnectionRatePerIP int           `yaml:"connection_rate_per_ip"` // new connections per minute
	MaxErrors           int           `yaml:"max_errors"`             // refused commands per session
	MaxCommands         int           `yaml:"max_commands"`           // MAIL/RCPT/DATA/BDAT per session
	MaxJunkCommands     int           `yaml:"max_junk_commands"`      // NOOP/RSET/VRFY/HELP per session
	IPv6PrefixLength    int           `yaml:"ipv6_prefix_length"`     // bits naming one IPv6 client
	CommandTimeout      time.Duration `yaml:"command_timeout"`
	DataTimeout         time.Duration `yaml:"data_timeout"`         // whole message
	MaxReceived         int           `yaml:"max_received_headers"` // loop guard
	MemoryBudget        int64         `yaml:"memory_budget"`        // bytes messages in transfer may hold together
}

// Auth checks SPF/DKIM/DMARC at the edge and signs/seals forwards (off
// when absent).
type Auth struct {
	// AuthservID names us in Authentication-Results (default: hostname).
	AuthservID    string        `yaml:"authserv_id"`
	LookupTimeout time.Duration `yaml:"lookup_timeout"` // each DNS lookup
	Timeout       time.Duration `yaml:"timeout"`        // wait after the message
	// SPFFail and DMARCReject: accept, tag or reject. A forwarder should
	// not refuse what the final mailbox would accept.
	SPFFail     Action   `yaml:"spf_fail"`
	DMARCReject Action   `yaml:"dmarc_reject"`
	DKIM        *AuthKey `yaml:"dkim"` // signs external forwards
	ARC         *AuthKey `yaml:"arc"`  // seals external forwards (RSA)
	// DMARCForwarding rewrites the From of forwards that would fail DMARC
	// at the receiver (auth/forward.go).
	DMARCForwarding DMARCForwarding `yaml:"dmarc_forwarding"`
}

// DMARCForwarding: a forward of mail from a p=reject/quarantine domain
// that passed DMARC here through SPF alone leaves with our From.
type DMARCForwarding struct {
	Mode string `yaml:"mode"` // rewrite or off
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
	FailureLimit  int           `yaml:"failure_limit"` // invalid SRS RCPTs per client per window
	FailureWindow time.Duration `yaml:"failure_window"`
	FailureBudget int           `yaml:"failure_budget"` // invalid SRS RCPTs of all clients per window
	// Store keeps the senders behind database-form addresses (senders too
	// long to embed): a file in spool_dir by default, or a shared Redis.
	Store SRSStore `yaml:"store"`
	// Database is "auto" (the database form only for senders that do not
	// fit) or "always" (every ordinary sender, as postsrsd's
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
	KeyPrefix    string        `yaml:"key_prefix"`
	Timeout      time.Duration `yaml:"timeout"`
}

// SRSReverse bounds bounces to SRS addresses (relay.SRSReversePolicy).
type SRSReverse struct {
	AnySender     bool          `yaml:"any_sender"`     // also non-null senders
	MaxRecipients int           `yaml:"max_recipients"` // per transaction
	Rate          int           `yaml:"rate"`           // per decoded address and window
	Window        time.Duration `yaml:"window"`
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
	PositiveTTL time.Duration `yaml:"positive_ttl"` // 0 disables the cache
	NegativeTTL time.Duration `yaml:"negative_ttl"`
	Size        int           `yaml:"size"` // keys kept
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
	FallbackAttribute string   `yaml:"fallback_attribute"` // "": none
}

// LDAP is an LDAP directory (389-DS, OpenLDAP).
type LDAP struct {
	Servers          []string      `yaml:"servers"`
	StartTLS         bool          `yaml:"start_tls"`
	CAFile           string        `yaml:"ca_file"`
	TLSRequireCert   bool          `yaml:"tls_require_cert"`
	BindDN           string        `yaml:"bind_dn"`
	BindPasswordFile string        `yaml:"bind_password_file"`
	BindPasswordEnv  string        `yaml:"bind_password_env"`
	SearchBase       string        `yaml:"search_base"`
	QueryFilter      string        `yaml:"query_filter"`
	ResultAttributes []string      `yaml:"result_attributes"`
	FallbackAttr     string        `yaml:"fallback_attribute"` // "": none
	Timeout          time.Duration `yaml:"timeout"`
	PoolSize         int           `yaml:"pool_size"`
	SizeLimit        int           `yaml:"size_limit"`
}

// Replica is the live copy of the directory that answers RCPT lookups
// (RFC 4533 content synchronisation; docs/directory.md).
type Replica struct {
	Enabled bool `yaml:"enabled"`
	// MaxStale: how old the last confirmed sync may be for known addresses
	// to be answered from the replica while the directory is down.
	MaxStale time.Duration `yaml:"max_stale"`
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
	// TLSPolicy for outgoing connections: opportunistic (STARTTLS when
	// offered, certificate not verified), require (verified, else the mail
	// waits) or none. TLSPolicies overrides it per destination (a
	// recipient domain for MX delivery, else the next hop's host).
	TLSPolicy   TLSPolicy            `yaml:"tls_policy"`
	TLSPolicies map[string]TLSPolicy `yaml:"tls_policies"`
	// TLSCAFile verifies next hops under the require policy and MTA-STS
	// hosts and policy servers (default: the system's roots).
	TLSCAFile string `yaml:"tls_ca_file"`
	// DANE (RFC 7672) and MTA-STS (RFC 8461) for MX delivery: where a
	// domain publishes either, TLS is required and verified as it says
	// (DANE wins); elsewhere tls_policy applies. A tls_policies entry for
	// the domain overrides both.
	DANE   bool   `yaml:"dane"` // needs dns.dnssec
	MTASTS bool   `yaml:"mta_sts"`
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
	c, err := prefilled(b, dir)
	if err != nil {
		return nil, err
	}
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
	c.derive(present(b))
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// sections is what a first, lenient pass over the file finds: which of
// the sections that are off unless written are there (only those keep
// their defaults), and the few keys whose defaults depend on others.
type sections struct {
	TLS *struct{} `yaml:"tls"`
	SRS *struct {
		PostsrsdConfig string `yaml:"postsrsd_config"`
		Store          struct {
			Path  string    `yaml:"path"`
			Redis *struct{} `yaml:"redis"`
		} `yaml:"store"`
	} `yaml:"srs"`
	Auth *struct {
		DKIM *struct{} `yaml:"dkim"`
		ARC  *struct{} `yaml:"arc"`
	} `yaml:"auth"`
	Directory struct {
		LDIF *struct{} `yaml:"ldif"`
		LDAP *struct{} `yaml:"ldap"`
	} `yaml:"directory"`
	Limits struct {
		MaxCommands *int `yaml:"max_commands"`
	} `yaml:"limits"`
}

// present is the lenient pass; a file it cannot read gets its error from
// the strict one.
func present(b []byte) sections {
	var s sections
	yaml.Unmarshal(b, &s)
	return s
}

// prefilled is what the file is decoded over: Defaults, without the
// sections the file does not have, and with srs.postsrsd_config's values
// over the srs defaults (the file's own srs keys are decoded over those).
func prefilled(b []byte, dir string) (*Config, error) {
	p := present(b)
	c := Defaults()
	c.dir = dir
	if p.TLS == nil {
		c.TLS = nil
	}
	if p.Directory.LDIF == nil {
		c.Directory.LDIF = nil
	}
	if p.Directory.LDAP == nil {
		c.Directory.LDAP = nil
	}
	if p.Auth == nil {
		c.Auth = nil
	} else {
		if p.Auth.DKIM == nil {
			c.Auth.DKIM = nil
		}
		if p.Auth.ARC == nil {
			c.Auth.ARC = nil
		}
	}
	if p.SRS == nil {
		c.SRS = nil
		return c, nil
	}
	// the file's own store wins over postsrsd's envelope-database
	fileStore := p.SRS.Store.Path != "" || p.SRS.Store.Redis != nil
	redis := p.SRS.Store.Redis != nil
	if f := p.SRS.PostsrsdConfig; f != "" {
		r, err := importPostsrsd(c.SRS, c.Path(f), !fileStore)
		if err != nil {
			return nil, err
		}
		redis = redis || r
	}
	if !redis {
		c.SRS.Store.Redis = nil
	}
	return c, nil
}

// importPostsrsd sets s from the postsrsd.conf at path and, with store,
// from its envelope-database: it reports whether that is a Redis (whose
// address it sets).
func importPostsrsd(s *SRS, path string, store bool) (redis bool, err error) {
	p, err := LoadPostsrsd(path)
	if err != nil {
		return false, fmt.Errorf("srs.postsrsd_config: %w", err)
	}
	rel := func(f string) string { // postsrsd.conf paths are relative to it
		if f == "" || filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(filepath.Dir(path), f)
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&s.Domain, p.SRSDomain)
	set(&s.SecretsFile, rel(p.SecretsFile))
	set(&s.Separator, p.Separator)
	if p.HashLength != 0 {
		s.HashLength = p.HashLength
	}
	if p.HashMinimum != 0 {
		s.HashMin = p.HashMinimum
	}
	if p.OriginalEnvelope == "database" {
		s.Database = "always"
	}
	if !store || p.EnvelopeDatabase == "" {
		return false, nil
	}
	switch kind, where, _ := strings.Cut(p.EnvelopeDatabase, ":"); kind {
	case "redis":
		s.Store.Redis.Address = where
		return true, nil
	case "sqlite":
		return false, fmt.Errorf("srs.postsrsd_config: %s keeps its senders in sqlite:%s, which mailfwd cannot share: "+
			"import them (mailfwd srs import-postsrsd) and set srs.store", path, where)
	default:
		return false, fmt.Errorf("srs.postsrsd_config: envelope-database %q: want sqlite:PATH or redis:HOST:PORT", p.EnvelopeDatabase)
	}
}

// derive sets the defaults that depend on other keys (Defaults names
// them).
func (c *Config) derive(p sections) {
	if c.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			c.Hostname = h
		} else {
			c.Hostname = "localhost"
		}
	}
	if c.Spool.MinFree == nil {
		mf := c.MaxMessageSize * 3 / 2
		c.Spool.MinFree = &mf
	}
	if p.Limits.MaxCommands == nil {
		// a transaction of max_recipients RCPTs must fit, several times over
		c.Limits.MaxCommands = max(c.Limits.MaxCommands, 2*c.MaxRecipients+10)
	}
	if s := c.SRS; s != nil && s.Store.Path == "" && s.Store.Redis == nil {
		s.Store.Path = filepath.Join(c.SpoolDir, "srs.db")
	}
	if a := c.Auth; a != nil {
		if a.AuthservID == "" {
			a.AuthservID = c.Hostname
		}
		f := &a.DMARCForwarding
		if f.From == "" {
			switch {
			case a.DKIM != nil:
				f.From = "forwarded@" + a.DKIM.Domain
			case c.SRS != nil:
				f.From = "forwarded@" + organizational(c.SRS.Domain)
			default:
				f.Mode = "off" // nothing of ours would pass DMARC at the receiver
			}
		}
		if f.Via == "" && f.From != "" {
			f.Via = f.From[strings.LastIndexByte(f.From, '@')+1:]
		}
	}
	if r := &c.Delivery.TLSRPT; r.Organization == "" {
		r.Organization = c.Hostname
	}
	if r := &c.Delivery.TLSRPT; r.Contact == "" {
		r.Contact = "postmaster@" + c.Hostname
	}
}

// organizational is a domain's organizational domain (the public suffix
// list's registrable domain), lower-case; the domain itself when the list
// has none.
func organizational(d string) string {
	o, err := publicsuffix.EffectiveTLDPlusOne(strings.ToLower(d))
	if err != nil {
		return strings.ToLower(d)
	}
	return o
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
	if u := c.Routing.UnknownRecipients; u != "reject" && u != "pass" {
		bad("routing.unknown_recipients: %q: want reject or pass", u)
	}
	if c.Directory.Cache.PositiveTTL < 0 || c.Directory.Cache.NegativeTTL < 0 {
		bad("directory.cache: TTLs must not be negative")
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
	if a := c.Auth; a != nil {
		for name, v := range map[string]Action{"spf_fail": a.SPFFail, "dmarc_reject": a.DMARCReject} {
			if v != Accept && v != Tag && v != Reject {
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
			dom := organizational(f.From[at+1:])
			aligned := (a.DKIM != nil && organizational(a.DKIM.Domain) == dom) || (c.SRS != nil && organizational(c.SRS.Domain) == dom)
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
	if c.Limits.MaxConnections < 0 {
		bad("limits.max_connections must not be negative (0: what the file descriptor limit carries)")
	}
	if s := c.SRS; s != nil {
		if s.Domain == "" {
			bad("srs.domain is required")
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
		if s.HashMin > s.HashLength {
			bad("srs.hash_min (%d) is above hash_length (%d)", s.HashMin, s.HashLength)
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
		if !p.valid() {
			bad("delivery.tls_policies[%s]: %q: want none, opportunistic or require", dest, p)
		}
	}
	if p := c.Delivery.TLSPolicy; !p.valid() {
		bad("delivery.tls_policy: %q: want none, opportunistic or require", p)
	}
	if c.Delivery.XClient && c.Delivery.XForward {
		bad("delivery: set xclient or xforward, not both")
	}
	if c.Delivery.ExternalRetryMax < c.Delivery.ExternalRetryMin {
		bad("delivery.external_retry_max (%s) is below external_retry_min (%s)", c.Delivery.ExternalRetryMax, c.Delivery.ExternalRetryMin)
	}

	if c.Delivery.RetryMax < c.Delivery.RetryMin {
		bad("delivery.retry_max (%s) is below retry_min (%s)", c.Delivery.RetryMax, c.Delivery.RetryMin)
	}
	for _, k := range c.positive() {
		if k.v <= 0 {
			bad("%s must be positive", k.key)
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

// Path resolves a path from the config against the config's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}
