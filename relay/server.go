package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/auth"
	"mailfwd/queue"
	"mailfwd/queue/envelope"
	"mailfwd/routing"
	"mailfwd/routing/srs"
)

// Expander resolves one RCPT address to its final recipients.
type Expander interface {
	Expand(ctx context.Context, addr string) ([]string, error)
}

// Committer is where accepted messages go: the spool, then the scheduler.
type Committer interface {
	Create() (*queue.Writer, error)
}

// roomChecker is a Committer that keeps a free-space reserve: below it
// MAIL gets 452 4.3.1, so the space left goes to delivery (envelope
// updates, bounces) and the queue can drain.
type roomChecker interface {
	Room(size int64) error
}

// Config is the front end's policy.
type Config struct {
	Hostname      string
	RelayDomains  []string // A-label, lower case
	LookupTimeout time.Duration
	MaxRecipients int
	MaxSize       int64
	// LocalDomains are ours besides the relay domains (Postfix's own
	// destinations): mail for them is not an external forward.
	LocalDomains []string
	// SRS, if set, rewrites the sender of external forwards and decodes
	// bounces to its domain (srs.go).
	SRS *srs.Rewriter
	// SRSFailureLimit is how many invalid SRS addresses a client (one
	// address, or an IPv6 prefix) may send in SRSFailureWindow, and
	// SRSFailureBudget how many all clients together may: past either, an
	// invalid address gets 450 and the connection is closed, so guessing
	// costs a connection per guess. An address that verifies is never
	// refused for them.
	SRSFailureLimit  int
	SRSFailureWindow time.Duration
	SRSFailureBudget int
	// IPv6Prefix: the bits of an IPv6 address that name one client for the
	// per-client limits.
	IPv6Prefix int
	// SRSReverse bounds what a valid SRS address may be used for.
	SRSReverse SRSReversePolicy
	// MaxErrors refused commands, or MaxCommands transaction commands, end
	// a session with 421 (a client probing addresses or looping), and so do
	// MaxJunkCommands NOOP/RSET/VRFY/HELP (a client idling on them).
	MaxErrors       int
	MaxCommands     int
	MaxJunkCommands int
	// CommandTimeout bounds the wait for each command line, DataTimeout the
	// whole message (a client trickling bytes cannot hold a session open).
	CommandTimeout time.Duration
	DataTimeout    time.Duration
	// MaxReceived: a message with more Received headers is refused as a
	// mail loop (554 5.4.6), as Postfix's hopcount_limit does.
	MaxReceived int
	// Postmaster is where postmaster@ a relay domain or the SRS domain
	// goes when the directory has no entry for it ("": unchanged to the
	// next hop, which has its own postmaster).
	Postmaster string
	// PassUnknown delivers recipients the directory does not know, in relay
	// domains, unchanged to the next hop (the migration shim in front of
	// the old MTA, which knows them) instead of refusing them.
	PassUnknown bool
	// DryRun resolves every recipient and logs what routing would do, but
	// queues the recipient unchanged: try the directory on live traffic
	// without changing where mail goes.
	DryRun bool
	// Auth, if set, checks SPF/DKIM/DMARC on every message (adding
	// Authentication-Results), may refuse by policy, and signs/seals
	// external forwards.
	Auth *auth.Authenticator
	// FromRewriteOff: relay domains and addresses (lower case, as the
	// client wrote them at RCPT) whose forwards never get a rewritten From
	// (DMARC-aware forwarding is Auth's decision otherwise).
	FromRewriteOff map[string]bool
	// ObserveForwarding, if set, hears each message's DMARC-aware
	// forwarding outcome (auth.Forward*).
	ObserveForwarding func(outcome string)
	// TLS, if set, offers STARTTLS (certificates may change under it).
	TLS *tls.Config
	// MemoryBudget bounds the memory messages in transfer may hold
	// together (bytes): each DATA reserves its worst case
	// (header copies for the checks, the DKIM pipe, buffers) before it
	// reads, and past the budget gets 451 4.3.2 instead of growing the heap
	// until the kernel kills us.
	MemoryBudget int64
	// FirstRetry is stored as the next attempt time of a new message: the
	// first attempt starts at once, and if the relay dies during it, the
	// restarted relay tries again after this long (not in a hot loop).
	FirstRetry time.Duration
}

// Backend builds the go-smtp server around routing and the spool. Its
// policy (domains, routing, SRS, limits) can be replaced while it runs
// (Reload); each session keeps the policy it started with.
type Backend struct {
	pol      atomic.Pointer[policy]
	mem      atomic.Int64   // bytes reserved by messages in transfer
	srsFails *windowCounter // invalid SRS addresses per client key, and "" for all
	srsRate  *windowCounter // bounces per decoded address
	spool    Committer
	submit   func(*envelope.Envelope)
	log      *slog.Logger
}

// policy is one generation of the configuration.
type policy struct {
	cfg      Config
	domains  map[string]bool // relay domains: we accept mail for them
	local    map[string]bool // relay and local domains: not external
	srsDom   string
	expander Expander
}

// check refuses a Config with a limit unset: the relay has no defaults of
// its own (the config package has them, cmd/mailfwd/wire.go passes them),
// and a zero limit would refuse every client or none.
func (c Config) check() error {
	var unset []string
	for name, v := range map[string]int64{
		"LookupTimeout": int64(c.LookupTimeout), "MaxRecipients": int64(c.MaxRecipients), "FirstRetry": int64(c.FirstRetry),
		"MaxErrors": int64(c.MaxErrors), "MaxCommands": int64(c.MaxCommands), "MaxJunkCommands": int64(c.MaxJunkCommands),
		"CommandTimeout": int64(c.CommandTimeout), "DataTimeout": int64(c.DataTimeout), "MaxReceived": int64(c.MaxReceived),
		"MemoryBudget": c.MemoryBudget, "IPv6Prefix": int64(c.IPv6Prefix),
	} {
		if v <= 0 {
			unset = append(unset, name)
		}
	}
	if c.SRS != nil {
		for name, v := range map[string]int64{
			"SRSFailureLimit": int64(c.SRSFailureLimit), "SRSFailureWindow": int64(c.SRSFailureWindow),
			"SRSFailureBudget": int64(c.SRSFailureBudget), "SRSReverse.MaxRecipients": int64(c.SRSReverse.MaxRecipients),
			"SRSReverse.Rate": int64(c.SRSReverse.Rate), "SRSReverse.Window": int64(c.SRSReverse.Window),
		} {
			if v <= 0 {
				unset = append(unset, name)
			}
		}
	}
	if len(unset) > 0 {
		slices.Sort(unset)
		return fmt.Errorf("relay: Config.%s must be positive", strings.Join(unset, ", Config."))
	}
	if c.IPv6Prefix > 128 {
		return fmt.Errorf("relay: Config.IPv6Prefix %d is over 128", c.IPv6Prefix)
	}
	return nil
}

// NewBackend returns a backend; submit is called with each committed
// message (to schedule its delivery).
func NewBackend(cfg Config, exp Expander, spool Committer, submit func(*envelope.Envelope), log *slog.Logger) (*Backend, error) {
	if log == nil {
		log = slog.Default()
	}
	p, err := newPolicy(cfg, exp)
	if err != nil {
		return nil, err
	}
	b := &Backend{spool: spool, submit: submit, log: log,
		srsFails: newWindowCounter(p.cfg.SRSFailureWindow, maxClients),
		srsRate:  newWindowCounter(p.cfg.SRSReverse.Window, maxClients)}
	b.pol.Store(p)
	return b, nil
}

// Reload replaces the policy for new sessions (SIGHUP). Listener settings
// (addresses, size and recipient limits, timeouts) need a restart.
func (b *Backend) Reload(cfg Config, exp Expander) error {
	p, err := newPolicy(cfg, exp)
	if err != nil {
		return err
	}
	b.pol.Store(p)
	return nil
}

func newPolicy(cfg Config, exp Expander) (*policy, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	p := &policy{cfg: cfg, domains: map[string]bool{}, local: map[string]bool{}, expander: exp}
	for _, d := range cfg.RelayDomains {
		nd, err := routing.NormalizeDomain(d)
		if err != nil {
			return nil, fmt.Errorf("relay domain %q: %w", d, err)
		}
		p.domains[nd], p.local[nd] = true, true
	}
	for _, d := range cfg.LocalDomains {
		nd, err := routing.NormalizeDomain(d)
		if err != nil {
			return nil, fmt.Errorf("local domain %q: %w", d, err)
		}
		p.local[nd] = true
	}
	if cfg.SRS != nil {
		nd, err := routing.NormalizeDomain(cfg.SRS.Domain)
		if err != nil {
			return nil, fmt.Errorf("SRS domain %q: %w", cfg.SRS.Domain, err)
		}
		if p.domains[nd] {
			return nil, fmt.Errorf("SRS domain %s must not also be a relay domain: bounces to it are decoded, not looked up", nd)
		}
		p.srsDom = nd
		p.local[nd] = true
	}
	return p, nil
}

// Local reports whether domain is ours (relay, local or SRS domain): mail
// for it is not an external forward.
func (b *Backend) Local(domain string) bool { return b.pol.Load().isLocal(domain) }

func (p *policy) isLocal(domain string) bool {
	d, err := routing.NormalizeDomain(domain)
	return err == nil && p.local[d]
}

// NewServer returns a go-smtp server for b (not yet listening).
func (b *Backend) NewServer() *smtp.Server {
	cfg := b.pol.Load().cfg
	s := smtp.NewServer(b)
	s.Domain = cfg.Hostname
	s.MaxRecipients = cfg.MaxRecipients
	s.MaxJunkCommands = cfg.MaxJunkCommands
	s.MaxMessageBytes = cfg.MaxSize
	s.MaxLineLength = 4096 // commands
	// Message lines of any length are taken, as Postfix takes them (senders'
	// servers would bounce what the MX in front of Postfix used to take);
	// nothing of ours holds a whole line, and external deliveries break
	// lines over 998 octets as Postfix's smtp_line_length_limit does.
	s.MaxDataLineLength = -1
	s.ReadTimeout = cfg.CommandTimeout
	s.WriteTimeout = cfg.CommandTimeout
	s.TLSConfig = cfg.TLS
	s.EnableSMTPUTF8 = true
	s.EnableDSN = true
	s.ErrorLog = slogLogger{b.log}
	return s
}

// NewSession is called by go-smtp for each connection.
func (b *Backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := &session{b: b, p: b.pol.Load(), conn: c, helo: c.Hostname(), seen: map[string]bool{}}
	if a, ok := c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		s.clientIP = a.IP.String()
	} else {
		s.clientIP = c.Conn().RemoteAddr().String()
	}
	s.log = b.log.With("client", s.clientIP)
	s.log.Debug("connect")
	return s, nil
}

type session struct {
	b        *Backend
	p        *policy // the policy this session started with
	conn     *smtp.Conn
	log      *slog.Logger
	clientIP string
	helo     string

	commands, errors int

	hasFrom bool
	from    string // external (wire) form
	rawFrom string // as go-smtp parsed it: what SRS encodes
	opts    smtp.MailOptions
	rcpts   []envelope.Recipient
	seen    map[string]bool
	notify  string // NOTIFY= of the RCPT being processed
	orcpt   string
	// srsFrom is from rewritten for external forwards, computed on the
	// first external recipient of the transaction.
	srsFrom    string
	srsFromErr error
	srsDone    bool
	srsRcpts   int // SRS addresses accepted in this transaction
}

// tracked is the session's connection as the listener tracks it (nil in
// tests that serve without Listen).
func (s *session) tracked() *trackedConn {
	c := s.conn.Conn()
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// inTransaction tells the listener whether this session is moving mail.
func (s *session) inTransaction(on bool) {
	if t := s.tracked(); t != nil {
		if !on {
			t.idleSince.Store(time.Now().UnixNano())
		}
		t.inTxn.Store(on)
	}
}

func (s *session) Reset() {
	s.inTransaction(false)
	s.hasFrom, s.from, s.rawFrom, s.opts = false, "", "", smtp.MailOptions{}
	s.rcpts = nil
	s.srsFrom, s.srsFromErr, s.srsDone, s.srsRcpts = "", nil, false, 0
	s.seen = map[string]bool{}
}

func (s *session) Logout() error { return nil }

// Mail, Rcpt and Data count commands and refusals: past the limits the
// session ends with 421, as Postfix's smtpd_hard_error_limit does. The
// command limit is checked before a command runs, so that a message is
// never queued and then answered 421 (the client would send it again).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if err := s.admitCommand(); err != nil {
		return err
	}
	return s.account(s.mail(from, opts))
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := s.admitCommand(); err != nil {
		return err
	}
	return s.account(s.rcpt(to, opts))
}

func (s *session) Data(r io.Reader) error {
	if err := s.admitCommand(); err != nil {
		return err // before anything is spooled
	}
	err := s.data(r)
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code == 250 {
		if t := s.tracked(); t != nil {
			t.delivered() // a client that sends mail, not a flood
		}
	}
	return s.account(err)
}

// admitCommand counts a command in, or ends the session past the limit.
func (s *session) admitCommand() error {
	s.commands++
	if s.commands > s.p.cfg.MaxCommands {
		s.log.Warn("disconnect: too many commands", "commands", s.commands)
		s.closeAfterReply()
		return replyTooManyCmds
	}
	return nil
}

// account counts a refusal: past the error limit the refusal is replaced
// by 421 (a refusal already: nothing was accepted).
func (s *session) account(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 400 {
		s.errors++
		if se.Code == 421 {
			s.closeAfterReply()
			return err
		}
	}
	if err != nil && s.errors >= s.p.cfg.MaxErrors {
		s.log.Warn("disconnect: too many errors", "errors", s.errors)
		s.closeAfterReply()
		return replyTooManyErrs
	}
	return err
}

// clientGone reports whether the client's stream ended (EOF) under us.
func (s *session) clientGone() bool {
	c := s.conn.Conn()
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, ok := c.(*trackedConn)
	return ok && t.ended.Load()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// closeAfterReply makes the connection close once the next reply is out.
func (s *session) closeAfterReply() {
	c := s.conn.Conn()
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if t, ok := c.(*trackedConn); ok {
		t.closeAfter.Store(true)
	}
}

func (s *session) mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	if from != "" {
		if _, err := routing.ParseAddress(from); err != nil {
			return replyBadSender
		}
		if !isASCII(from) && (opts == nil || !opts.UTF8) {
			return replyNeedUTF8
		}
	}
	if rc, ok := s.b.spool.(roomChecker); ok {
		var size int64
		if opts != nil {
			size = opts.Size
		}
		if err := rc.Room(size); err != nil {
			s.log.Warn("defer: spool below its free-space reserve", "err", err)
			return replySpoolFull
		}
	}
	s.hasFrom, s.rawFrom = true, from
	s.inTransaction(true)
	// Kept in external form: it goes back on the wire in MAIL FROM.
	if from != "" {
		s.from = routing.WireForm(from)
	}
	if opts != nil {
		s.opts = *opts
	}
	return nil
}

func (s *session) rcpt(to string, opts *smtp.RcptOptions) error {
	s.notify, s.orcpt = "", ""
	if opts != nil {
		var n []string
		for _, v := range opts.Notify {
			n = append(n, string(v))
		}
		s.notify = strings.Join(n, ",")
		if opts.OriginalRecipient != "" {
			s.orcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	if to == "postmaster" && len(s.p.cfg.RelayDomains) > 0 {
		// RCPT TO:<Postmaster> with no domain (RFC 5321 4.5.1): the
		// postmaster of our first relay domain.
		to = "postmaster@" + s.p.cfg.RelayDomains[0]
	}
	addr, err := routing.ParseAddress(to)
	if err != nil {
		return replyBadRcpt
	}
	if !isASCII(to) && !s.opts.UTF8 {
		return replyNeedUTF8
	}
	if err := s.checkRecipient(to, addr); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.p.cfg.LookupTimeout)
	defer cancel()
	var finals []string
	switch {
	case s.p.srsDom != "" && addr.Domain == s.p.srsDom && strings.EqualFold(addr.Local, "postmaster"):
		// RFC 5321 4.5.1: the SRS domain's postmaster is our first relay
		// domain's (the SRS domain has no mailboxes)
		pm := "postmaster@" + s.p.cfg.RelayDomains[0]
		finals, err = s.p.expander.Expand(ctx, pm)
		finals, err = s.postmaster(pm, finals, err)
	case s.p.srsDom != "" && addr.Domain == s.p.srsDom:
		var reply error
		if finals, reply = s.reverseSRS(ctx, to); reply != nil {
			return reply
		}
	case !s.p.domains[addr.Domain]:
		s.log.Info("reject: relay access denied", "from", s.from, "to", to)
		return replyRelayDenied
	default:
		// The client's spelling is kept, unless its domain only becomes
		// ours once normalised (full-width or U-label forms): then the
		// normalised form is what we look up and pass on.
		rcptAddr := routing.WireForm(to)
		if i := strings.LastIndexByte(to, '@'); i >= 0 && !strings.EqualFold(to[i+1:], addr.Domain) {
			rcptAddr = routing.QuoteLocal(addr.Local) + "@" + addr.Domain
		}
		finals, err = s.p.expander.Expand(ctx, rcptAddr)
		switch {
		case s.p.cfg.DryRun && err == nil:
			s.log.Info("dry-run: would rewrite", "to", to, "finals", finals)
			finals = []string{rcptAddr}
		case s.p.cfg.DryRun && errors.Is(err, routing.ErrNotFound) && s.p.cfg.PassUnknown:
			s.log.Info("dry-run: not in the directory, would pass through unchanged", "to", to)
			finals, err = []string{rcptAddr}, nil
		case s.p.cfg.DryRun && errors.Is(err, routing.ErrNotFound):
			s.log.Info("dry-run: would refuse as unknown (550 5.1.1)", "to", to)
			finals, err = []string{rcptAddr}, nil
		case s.p.cfg.PassUnknown && errors.Is(err, routing.ErrNotFound):
			s.log.Info("pass-through: not in the directory, delivered unchanged", "to", to)
			finals, err = []string{rcptAddr}, nil
		case strings.EqualFold(addr.Local, "postmaster"):
			finals, err = s.postmaster(rcptAddr, finals, err)
		}
	}
	if err := s.rcptError(to, err); err != nil {
		return err
	}
	// The sender for external forwards is settled before any recipient of
	// this RCPT is added, so a refusal leaves none of them behind.
	fwdFrom, err := s.forwardFrom(ctx, finals)
	if err != nil {
		return err
	}
	// All of this RCPT's new recipients fit, or none is added.
	fresh := map[string]bool{}
	for _, f := range finals {
		if k := routing.RecipientKey(f); !s.seen[k] {
			fresh[k] = true
		}
	}
	if len(s.rcpts)+len(fresh) > s.p.cfg.MaxRecipients {
		return replyTooManyRcpt
	}
	added := 0
	for _, f := range finals {
		k := routing.RecipientKey(f)
		if s.seen[k] {
			continue
		}
		rc := envelope.Recipient{Addr: f, OrigTo: routing.WireForm(to), Status: envelope.Pending, DSNNotify: s.notify, ORcpt: s.orcpt}
		s.decideForward(&rc, addr, fwdFrom)
		s.seen[k] = true
		s.rcpts = append(s.rcpts, rc)
		added++
	}
	s.log.Debug("rcpt ok", "to", to, "finals", finals, "new", added)
	return nil
}

// postmaster makes postmaster@ each of our domains deliverable (RFC 5321
// 4.5.1) when the directory does not know it: to Config.Postmaster, or
// unchanged to the next hop (Postfix has a postmaster of its own).
func (s *session) postmaster(addr string, finals []string, err error) ([]string, error) {
	if !errors.Is(err, routing.ErrNotFound) {
		return finals, err
	}
	to := addr
	if pm := s.p.cfg.Postmaster; pm != "" {
		to = pm
	}
	s.log.Info("postmaster: not in the directory, delivered to "+to, "to", addr)
	return []string{to}, nil
}

// rcptError maps a routing error to the RCPT reply.
func (s *session) rcptError(to string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, routing.ErrNotFound):
		s.log.Info("reject: unknown recipient", "from", s.from, "to", to)
		return replyUnknownUser
	case errors.Is(err, routing.ErrExpansionLimit):
		s.log.Warn("defer: alias expansion", "to", to, "err", err)
		return replyExpansion
	default: // directory down, timeout, anything else: never a 5xx
		s.log.Warn("defer: directory lookup failed", "to", to, "err", err)
		return replyDirDown
	}
}

// Per-message worst cases for the memory budget: the body buffer and
// stream state, and with the checks on, their copies of a header (up to
// 256 KiB each), the DKIM pipe and the signers' buffers.
const (
	dataReserve     = 256 << 10
	dataReserveAuth = 2 << 20
)

func (s *session) data(r io.Reader) error {
	if len(s.rcpts) == 0 {
		return replyNoRcpt
	}
	need := int64(dataReserve)
	if s.p.cfg.Auth != nil {
		need = dataReserveAuth
	}
	if s.b.mem.Add(need) > s.p.cfg.MemoryBudget {
		s.b.mem.Add(-need)
		s.log.Warn("defer: memory budget of messages in transfer reached", "budget", s.p.cfg.MemoryBudget)
		return replyNoMemory
	}
	defer s.b.mem.Add(-need)
	// The whole message must arrive within DataTimeout (go-smtp's own
	// deadline is per command line).
	s.conn.Conn().SetReadDeadline(time.Now().Add(s.p.cfg.DataTimeout))
	w, err := s.b.spool.Create()
	if err != nil {
		return s.storageReply(err, "")
	}
	received := s.receivedHeader(w.ID())
	if _, err := io.WriteString(w, received); err != nil {
		w.Abort()
		return s.storageReply(err, w.ID())
	}
	r = newLineEnds(r)
	var chk *auth.Check
	if a := s.p.cfg.Auth; a != nil {
		// The checker sees the client's message (our Received header is
		// not part of it), with forged Authentication-Results removed from
		// what is spooled and checked alike.
		external := false
		for _, rc := range s.rcpts {
			external = external || rc.Forward
		}
		chk = a.Start(auth.Inbound{ClientIP: net.ParseIP(s.clientIP), Helo: s.helo, MailFrom: s.from, Forward: external})
		defer chk.Abort()
		r = io.TeeReader(auth.StripForged(r, a.AuthServID()), chk)
	}
	recv := &receivedCounter{w: w, max: s.p.cfg.MaxReceived}
	if _, err := io.Copy(recv, r); err != nil {
		w.Abort()
		var ne net.Error
		switch {
		case errors.Is(err, smtp.ErrDataTooLarge):
			return replyTooBig
		case errors.Is(err, errTooManyReceived):
			s.log.Warn("reject: mail loop", "from", s.from, "received_headers", recv.received)
			return replyLoop
		case errors.As(err, &ne) && ne.Timeout():
			s.closeAfterReply()
			return replyDataTimeout
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se
		}
		return s.storageReply(err, w.ID())
	}
	if s.clientGone() {
		// The message may be cut short (a BDAT chunk ending at EOF): the
		// client gets no 250 and will send it again; keep nothing.
		w.Abort()
		s.log.Warn("client disconnected during the message; discarded", "queue_id", w.ID())
		return replyLocalError
	}
	var authHeader, forwardHeader, senderAuth string
	var fromRewrite *envelope.FromRewrite
	if chk != nil {
		v := chk.Finish()
		if v.Err != nil {
			s.log.Warn("auth: signing failed; forwarding unsigned", "queue_id", w.ID(), "err", v.Err)
		}
		if v.Action == auth.Reject {
			w.Abort()
			s.log.Info("reject: message authentication policy", "queue_id", w.ID(), "from", s.from, "reason", v.Message)
			return &smtp.SMTPError{Code: v.Code, EnhancedCode: smtp.EnhancedCode(v.EnhancedCode), Message: v.Message}
		}
		authHeader, forwardHeader = v.Header, v.ForwardHeader
		senderAuth = v.Results.SenderAuth(s.from)
		if rw := v.FromRewrite; rw != nil {
			fromRewrite = &envelope.FromRewrite{Offset: rw.Offset + int64(len(received)), Length: rw.Length,
				Fields: rw.Fields, ForwardHeader: rw.ForwardHeader}
		}
		if v.Forwarding != "" {
			s.log.Info("dmarc forwarding", "queue_id", w.ID(), "outcome", v.Forwarding, "from_domain", v.Results.DMARC.From,
				"dmarc", v.Results.DMARC.Result, "policy", v.Results.DMARC.Policy)
			if o := s.p.cfg.ObserveForwarding; o != nil {
				o(v.Forwarding)
			}
		}
	}
	now := time.Now()
	env := &envelope.Envelope{
		AuthHeader:    authHeader,
		ForwardHeader: forwardHeader,
		From:          s.from,
		Recipients:    s.rcpts,
		Received:      now,
		ClientAddr:    s.clientIP,
		ClientHelo:    s.helo,
		SMTPUTF8:      s.opts.UTF8,
		UTF8Header:    recv.utf8Header,
		Body8Bit:      s.opts.Body == smtp.Body8BitMIME,
		DSNRet:        string(s.opts.Return),
		DSNEnvID:      s.opts.EnvelopeID,
		SenderAuth:    senderAuth,
		FromRewrite:   fromRewrite,
		NextAttempt:   now.Add(s.p.cfg.FirstRetry),
	}
	if err := w.Commit(env); err != nil {
		return s.storageReply(err, w.ID())
	}
	s.log.Info(fmt.Sprintf("from=<%s>, size=%d, nrcpt=%d (queue active)", s.from, env.Size, len(env.Recipients)),
		"queue_id", env.ID, "helo", s.helo)
	s.b.submit(env)
	return replyQueued(env.ID)
}

func (s *session) storageReply(err error, id string) error {
	s.log.Error("cannot spool message", "queue_id", id, "err", err)
	if errors.Is(err, queue.ErrSpoolFull) {
		return replySpoolFull
	}
	return replyLocalError
}

// receivedHeader is our trace header for the session's message.
func (s *session) receivedHeader(id string) string {
	t := trace{helo: s.helo, clientIP: s.clientIP, hostname: s.p.cfg.Hostname, utf8: s.opts.UTF8, id: id}
	if st, ok := s.conn.TLSConnectionState(); ok {
		t.tls = &st
	}
	if len(s.rcpts) == 1 {
		t.forRcpt = s.rcpts[0].OrigTo
	}
	return t.field(time.Now())
}

// trace is what our Received header says about a message's arrival.
type trace struct {
	helo, clientIP, hostname, id string
	utf8                         bool
	tls                          *tls.ConnectionState // nil: in clear
	// forRcpt is the one recipient, or "": "for" is given only for a single
	// recipient, so fan-out does not disclose the other ones.
	forRcpt string
}

// field is the Received header field (RFC 5321 §4.4, the protocol names of
// RFC 3848 and RFC 6531), CRLF-terminated; golden cases in
// testdata/received.golden.
func (t trace) field(now time.Time) string {
	helo := t.helo
	if helo == "" {
		helo = "unknown"
	}
	proto, tlsInfo := "ESMTP", ""
	if t.utf8 {
		proto = "UTF8SMTP"
	}
	if t.tls != nil {
		proto += "S"
		tlsInfo = fmt.Sprintf(" (%s with cipher %s)", tls.VersionName(t.tls.Version), tls.CipherSuiteName(t.tls.CipherSuite))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (mailfwd) with %s%s id %s", sanitize(helo), t.clientIP, t.hostname, proto, tlsInfo, t.id)
	if t.forRcpt != "" {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", sanitize(t.forRcpt))
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", now.Format(time.RFC1123Z))
	return b.String()
}

// sanitize keeps client-supplied text from breaking the header.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '(' || r == ')' {
			return '?'
		}
		return r
	}, s)
}

type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Printf(format string, v ...any) { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l slogLogger) Println(v ...any)               { l.l.Warn(fmt.Sprint(v...)) }
