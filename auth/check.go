package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// Action is what the policy does with a message that failed a check.
type Action int

const (
	Accept Action = iota // deliver, results only in Authentication-Results
	Tag                  // deliver with an X-Mailfwd-Auth header naming the failure
	Reject               // refuse at end of DATA (5xx)
)

func (a Action) String() string { return [...]string{"accept", "tag", "reject"}[a] }

// TagHeader is the field added when the policy tags a message.
const TagHeader = "X-Mailfwd-Auth"

// Config configures an Authenticator. The zero policy accepts everything.
type Config struct {
	// AuthServID is our authserv-id in Authentication-Results (RFC 8601):
	// normally the relay's hostname. Required.
	AuthServID string
	// Resolver answers DNS; nil is net.DefaultResolver.
	Resolver Resolver
	// LookupTimeout bounds each DNS lookup. Required.
	LookupTimeout time.Duration
	// Timeout bounds the wait in Finish for checks still running at the end
	// of the message; what is unfinished is a temperror. Required.
	Timeout time.Duration
	// SPFFail is done with messages whose SPF result is fail.
	SPFFail Action
	// DMARCReject is done with messages that fail DMARC of a domain whose
	// policy is p=reject (sp= for subdomains) at pct=100.
	DMARCReject Action
	// DKIMKey signs external forwards (d= the relay's domain); nil: no
	// signature.
	DKIMKey *Key
	// ARCKey seals external forwards (RSA only); nil: no ARC set.
	ARCKey *Key
	// FromRewrite turns on DMARC-aware forwarding (forward.go); nil: off.
	FromRewrite *FromRewriting
	// Now is the clock for signature timestamps (default time.Now).
	Now func() time.Time
}

// Authenticator checks inbound messages. It is safe for concurrent use.
type Authenticator struct {
	cfg Config
	g   guard
}

// New checks cfg and returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if cfg.AuthServID == "" {
		return nil, errors.New("auth: AuthServID is required")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.LookupTimeout <= 0 || cfg.Timeout <= 0 {
		return nil, errors.New("auth: LookupTimeout and Timeout must be positive")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ARCKey != nil && cfg.ARCKey.Algorithm() != "rsa-sha256" {
		return nil, errors.New("auth: the ARC key must be RSA (RFC 8617 defines rsa-sha256 only)")
	}
	return &Authenticator{cfg: cfg, g: guard{r: cfg.Resolver, timeout: cfg.LookupTimeout}}, nil
}

// AuthServID is our authserv-id.
func (a *Authenticator) AuthServID() string { return a.cfg.AuthServID }

// Inbound is what the relay knows about a message before its data.
type Inbound struct {
	ClientIP net.IP
	Helo     string
	MailFrom string // "" for the null sender
	// Forward: some recipient is an external forward, so Finish also
	// returns the ARC set and DKIM signature (Verdict.ForwardHeader).
	Forward bool
}

// SPFResult is the SPF outcome (RFC 7208).
type SPFResult struct {
	Result string // none, neutral, pass, fail, softfail, temperror, permerror
	Domain string // the domain checked (MAIL FROM's, or HELO for <>)
	Helo   bool   // the HELO identity was checked (null sender)
	Reason string
}

// DKIMResult is the outcome for one DKIM-Signature.
type DKIMResult struct {
	Result     string // pass, fail, permerror, temperror
	Domain     string // d=
	Identifier string // i= (or @d)
	Reason     string
}

// DMARCResult is the DMARC outcome (RFC 7489).
type DMARCResult struct {
	Result      string // none, pass, fail, temperror, permerror
	From        string // the RFC5322.From domain
	Policy      string // the applicable policy: none, quarantine, reject ("" without record)
	Percent     int
	SPFAligned  bool
	DKIMAligned bool
	Reason      string
}

// ARCResult is the validation of the chain the message arrived with.
type ARCResult struct {
	Result    string // none, pass, fail (the cv our seal will carry)
	Instances int
	Reason    string
}

// Results is every check's outcome.
type Results struct {
	SPF      SPFResult
	DKIM     []DKIMResult
	DMARC    DMARCResult
	ARC      ARCResult
	ClientIP string
}

// Verdict is what the relay does with the message.
type Verdict struct {
	Results Results
	Action  Action
	// For Reject: the reply (550 5.7.1 for SPF, 550 5.7.26 for DMARC).
	Code         int
	EnhancedCode [3]int
	Message      string
	// Header goes before the message for every recipient:
	// Authentication-Results (and TagHeader when tagged), CRLF-terminated.
	Header string
	// ForwardHeader goes before Header for external forwards only: the
	// ARC set and our DKIM-Signature. Empty when not configured.
	ForwardHeader string
	// Err reports a signing failure (ForwardHeader is then incomplete);
	// checks themselves never fail, they give temperror/permerror results.
	Err error
	// Forwarding is the DMARC-aware forwarding outcome for external
	// forwards (Forward* constants; "" when nothing is forwarded), and
	// FromRewrite, when it is ForwardRewritten, how such a forward leaves.
	Forwarding  string
	FromRewrite *FromRewrite
}

// Check is one message being checked: an io.Writer fed the message as
// received (header and body, after StripForged), then Finish.
type Check struct {
	a      *Authenticator
	in     Inbound
	ctx    context.Context
	cancel context.CancelFunc
	kc     *keyCache

	hdr      []byte
	inHeader bool
	broken   string
	done     bool
	fields   []field
	chain    *arcChain

	relaxed, simple *bodyHasher
	dkimPW          *bufPipe
	dkimDone        chan dkimOut
	spfDone         chan SPFResult
	dmarcDone       chan dmarcOut
	arcDone         chan arcVerdict
	fromDomain      string
	fromErr         string
	once            sync.Once
	dmarcTesting    bool       // the record says t=y (DMARCbis testing)
	arcVerdict      arcVerdict // of the chain the message arrived with
	rewriteErr      error
}

// dkimPipeSize is how much of a message may wait for the DKIM verifier.
const dkimPipeSize = 128 << 10

type dkimOut struct {
	v   []*dkim.Verification
	err error
}

type dmarcOut struct {
	rec     *dmarc.Record
	testing bool // t=y
	atOrg   bool
	result  string // "" found/none decided by rec; temperror/permerror/none
	reason  string
	orgDom  string
}

// Start begins checking a message: SPF runs at once, in the background,
// while the data arrives. Call Finish (or Abort) exactly once.
func (a *Authenticator) Start(in Inbound) *Check {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Check{a: a, in: in, ctx: ctx, cancel: cancel, inHeader: true,
		kc: &keyCache{ctx: ctx, g: a.g, m: map[string]*keyResult{}}}
	c.spfDone = make(chan SPFResult, 1)
	go func() { c.spfDone <- a.checkSPF(ctx, in) }()
	return c
}

func (a *Authenticator) checkSPF(ctx context.Context, in Inbound) SPFResult {
	r := SPFResult{}
	sender := in.MailFrom
	if i := strings.LastIndexByte(sender, '@'); i >= 0 {
		r.Domain = strings.ToLower(sender[i+1:])
	} else {
		r.Domain, r.Helo = strings.ToLower(in.Helo), true
		sender = ""
	}
	if in.ClientIP == nil {
		r.Result, r.Reason = "none", "no client address"
		return r
	}
	if r.Domain == "" || strings.HasPrefix(r.Domain, "[") {
		r.Result, r.Reason = "none", "no domain to check"
		return r
	}
	res, err := spf.CheckHostWithSender(in.ClientIP, in.Helo, sender,
		spf.WithContext(ctx), spf.WithResolver(a.g))
	r.Result = string(res)
	if err != nil && res != spf.Pass && !errors.Is(err, spf.ErrNoResult) {
		r.Reason = err.Error()
	}
	return r
}

// Write takes the next bytes of the message. It never fails.
func (c *Check) Write(p []byte) (int, error) {
	if c.done || c.broken != "" {
		return len(p), nil
	}
	if c.inHeader {
		scanned := len(c.hdr)
		c.hdr = append(c.hdr, p...)
		end, bodyAt := headerEnd(c.hdr, scanned)
		if end < 0 {
			if len(c.hdr) > maxHeader {
				c.broken, c.hdr = "header section too large", nil
			}
			return len(p), nil
		}
		hdr := c.hdr
		c.hdr = nil
		c.inHeader = false
		c.onHeader(hdr[:end], hdr[:bodyAt])
		c.body(hdr[bodyAt:])
		return len(p), nil
	}
	c.body(p)
	return len(p), nil
}

func (c *Check) body(p []byte) {
	if len(p) == 0 {
		return
	}
	if c.relaxed != nil {
		c.relaxed.Write(p)
	}
	if c.simple != nil {
		c.simple.Write(p)
	}
	if c.dkimPW != nil {
		c.dkimPW.Write(p) // buffered: the verifier may be waiting for DNS
	}
}

// onHeader starts everything that needs the header: DKIM verification
// (fed the body as it comes), the DMARC record lookup and the ARC seals.
func (c *Check) onHeader(fields, withBlank []byte) {
	c.fields = parseHeader(fields)
	c.chain = parseChain(c.fields)
	a := c.a
	// the ARC set and our DKIM signature both cover the relaxed body
	needRelaxed := c.in.Forward && (a.cfg.ARCKey != nil || a.cfg.DKIMKey != nil)
	if n := len(c.chain.sets); n > 0 && c.chain.err == "" {
		bc := "simple"
		if cv, ok := c.chain.sets[n-1].amsTags["c"]; ok {
			if _, b, ok := strings.Cut(stripWS(cv), "/"); ok && b != "" {
				bc = b
			}
		}
		if bc == "relaxed" {
			needRelaxed = true
		} else {
			c.simple = newBodyHasher(false, sha256.New())
		}
	}
	if c.in.Forward && a.cfg.FromRewrite != nil && (a.cfg.DKIMKey != nil || a.cfg.ARCKey != nil) {
		needRelaxed = true // to sign a rewritten header
	}
	if needRelaxed {
		c.relaxed = newBodyHasher(true, sha256.New())
	}
	hasSig := false
	for _, f := range c.fields {
		if f.lower() == "dkim-signature" {
			hasSig = true
			break
		}
	}
	if hasSig {
		// A small pipe: while a key lookup hangs, the writer (the client)
		// waits, bounded by the lookup timeout, instead of megabytes of the
		// message piling up in memory per session.
		pr := newBufPipe(dkimPipeSize)
		c.dkimPW = pr
		c.dkimDone = make(chan dkimOut, 1)
		head := withBlank // not written to again: no copy
		go func() {
			v, err := dkim.VerifyWithOptions(io.MultiReader(bytes.NewReader(head), pr),
				&dkim.VerifyOptions{LookupTXT: a.g.txtFunc(c.ctx), MaxVerifications: 10})
			pr.CloseRead()
			c.dkimDone <- dkimOut{v, err}
		}()
	}
	c.fromDomain, c.fromErr = fromDomain(c.fields)
	if c.fromDomain != "" {
		c.dmarcDone = make(chan dmarcOut, 1)
		go func() { c.dmarcDone <- a.lookupDMARC(c.ctx, c.fromDomain) }()
	}
	if len(c.chain.sets) > 0 || c.chain.err != "" {
		c.arcDone = make(chan arcVerdict, 1)
		go func() { c.arcDone <- validateSeals(c.kc, c.chain) }()
	}
}

var angleAddr = regexp.MustCompile(`@([A-Za-z0-9.-]+)\s*>?\s*$`)

// fromDomain is the RFC5322.From domain: exactly one From field with
// addresses of one domain.
func fromDomain(fields []field) (string, string) {
	var froms []string
	for _, f := range fields {
		if f.lower() == "from" {
			froms = append(froms, f.value())
		}
	}
	if len(froms) != 1 {
		return "", fmt.Sprintf("%d From fields", len(froms))
	}
	dom := ""
	p := mail.AddressParser{}
	list, err := p.ParseList(froms[0])
	if err == nil {
		for _, ad := range list {
			i := strings.LastIndexByte(ad.Address, '@')
			d := strings.ToLower(strings.TrimSuffix(ad.Address[i+1:], "."))
			if dom != "" && d != dom {
				return "", "From with several domains"
			}
			dom = d
		}
	} else if m := angleAddr.FindStringSubmatch(froms[0]); m != nil {
		dom = strings.ToLower(strings.TrimSuffix(m[1], "."))
	}
	if dom == "" || !strings.Contains(dom, ".") {
		return "", "no usable From domain"
	}
	return dom, ""
}

func orgDomain(d string) string {
	o, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return o
}

func (a *Authenticator) lookupDMARC(ctx context.Context, from string) dmarcOut {
	out := dmarcOut{orgDom: orgDomain(from)}
	try := func(d string) (bool, bool) { // found, stop
		txts, err := a.g.LookupTXT(ctx, "_dmarc."+d)
		if err != nil && !isNotFound(err) {
			out.result, out.reason = "temperror", "DMARC record lookup failed"
			return false, true
		}
		var recs []string
		for _, t := range txts {
			if strings.HasPrefix(strings.TrimSpace(t), "v=DMARC1") {
				recs = append(recs, t)
			}
		}
		if len(recs) != 1 {
			return false, false // none, or several: no policy (RFC 7489 §6.6.3)
		}
		rec, err := dmarc.Parse(recs[0])
		if err != nil {
			out.result, out.reason = "permerror", "bad DMARC record"
			return false, true
		}
		out.rec = rec
		if t, ok := tags(recs[0]); ok && strings.EqualFold(strings.TrimSpace(t["t"]), "y") {
			out.testing = true
		}
		return true, true
	}
	if found, stop := try(from); found || stop {
		return out
	}
	if out.orgDom != from {
		if found, _ := try(out.orgDom); found {
			out.atOrg = true
		}
	}
	if out.rec == nil && out.result == "" {
		out.result = "none"
	}
	return out
}

// Abort ends a check whose message was not accepted. It is a no-op after
// Finish, so `defer c.Abort()` is fine.
func (c *Check) Abort() {
	c.once.Do(func() {
		c.done = true
		if c.dkimPW != nil {
			c.dkimPW.CloseWrite(errors.New("aborted"))
		}
		c.cancel()
	})
}

// Finish waits (at most Config.Timeout) for the checks, and returns the
// verdict and the header fields to prepend.
func (c *Check) Finish() *Verdict {
	v := &Verdict{}
	ran := false
	c.once.Do(func() { ran = true; c.finish(v) })
	if !ran {
		v.Err = errors.New("auth: check already finished")
	}
	return v
}

func (c *Check) finish(v *Verdict) {
	defer c.cancel()
	a := c.a
	if c.inHeader && c.broken == "" {
		// no blank line: the whole message is header
		h := c.hdr
		if len(h) > 0 && h[len(h)-1] != '\n' {
			h = append(h, '\r', '\n')
		}
		c.inHeader = false
		c.onHeader(h, append(h, '\r', '\n'))
	}
	c.done = true
	if c.dkimPW != nil {
		c.dkimPW.CloseWrite(nil)
	}
	deadline := time.NewTimer(a.cfg.Timeout)
	defer deadline.Stop()
	timedOut := false

	r := &v.Results
	if c.in.ClientIP != nil {
		r.ClientIP = c.in.ClientIP.String()
	}
	select {
	case r.SPF = <-c.spfDone:
	case <-deadline.C:
		timedOut = true
		r.SPF = SPFResult{Result: "temperror", Reason: "timed out"}
		r.SPF.Domain, r.SPF.Helo = spfIdentity(c.in)
	}

	if c.dkimDone != nil {
		var out dkimOut
		got := false
		if !timedOut {
			select {
			case out = <-c.dkimDone:
				got = true
			case <-deadline.C:
				timedOut = true
			}
		}
		if !got {
			r.DKIM = []DKIMResult{{Result: "temperror", Reason: "timed out"}}
		} else {
			for _, vf := range out.v {
				d := DKIMResult{Domain: vf.Domain, Identifier: vf.Identifier, Result: "pass"}
				switch {
				case vf.Err == nil:
				case dkim.IsTempFail(vf.Err):
					d.Result, d.Reason = "temperror", vf.Err.Error()
				case dkim.IsPermFail(vf.Err):
					d.Result, d.Reason = "permerror", vf.Err.Error()
				default:
					d.Result, d.Reason = "fail", vf.Err.Error()
				}
				r.DKIM = append(r.DKIM, d)
			}
			if len(out.v) == 0 && out.err != nil {
				r.DKIM = []DKIMResult{{Result: "permerror", Reason: out.err.Error()}}
			}
		}
	}

	r.ARC = ARCResult{Result: CVNone}
	var av arcVerdict
	if c.arcDone != nil {
		got := false
		if !timedOut {
			select {
			case av = <-c.arcDone:
				got = true
			case <-deadline.C:
				timedOut = true
			}
		}
		if !got {
			av = arcVerdict{cv: CVFail, reason: "timed out", temp: true, instances: len(c.chain.sets)}
		} else if av.cv == CVPass {
			latest := c.chain.sets[len(c.chain.sets)-1]
			if err, temp := verifyAMS(c.kc, c.fields, latest, c.bodyHash); err != nil {
				av.cv, av.reason, av.temp = CVFail, fmt.Sprintf("ARC-Message-Signature i=%d: %v", len(c.chain.sets), err), temp
			}
		}
		r.ARC = ARCResult{Result: av.cv, Instances: av.instances, Reason: av.reason}
	}

	r.DMARC = c.dmarc(r, &timedOut, deadline.C)
	if c.broken != "" {
		r.DMARC = DMARCResult{Result: "permerror", Reason: c.broken}
	}

	v.Header = r.header(a.cfg.AuthServID)
	c.policy(v)
	if c.in.Forward && c.broken == "" {
		var fh strings.Builder
		if c.chain == nil {
			c.chain = &arcChain{}
		}
		if av.cv == "" {
			av.cv = CVNone
		}
		c.arcVerdict = av
		if a.cfg.ARCKey != nil {
			s, err := seal(a.cfg.ARCKey, a.cfg.Now(), c.fields, c.chain, av, r.payload(a.cfg.AuthServID), c.relaxedSum())
			if err != nil {
				v.Err = err
			}
			fh.WriteString(s)
		}
		if a.cfg.DKIMKey != nil {
			s, err := dkimSignFields(a.cfg.DKIMKey, a.cfg.Now(), c.fields, c.relaxedSum())
			if err != nil && v.Err == nil {
				v.Err = err
			}
			fh.WriteString(s)
		}
		v.ForwardHeader = fh.String()
		v.Forwarding, v.FromRewrite = c.forwarding(r)
		if c.rewriteErr != nil && v.Err == nil {
			v.Err = c.rewriteErr
		}
	}
}

func spfIdentity(in Inbound) (string, bool) {
	if i := strings.LastIndexByte(in.MailFrom, '@'); i >= 0 {
		return strings.ToLower(in.MailFrom[i+1:]), false
	}
	return strings.ToLower(in.Helo), true
}

func (c *Check) relaxedSum() []byte {
	if c.relaxed == nil {
		c.relaxed = newBodyHasher(true, sha256.New())
	}
	return c.relaxed.sumOnce()
}

func (c *Check) bodyHash(relaxed bool) []byte {
	if relaxed {
		return c.relaxedSum()
	}
	if c.simple == nil {
		return nil
	}
	return c.simple.sumOnce()
}

func (c *Check) dmarc(r *Results, timedOut *bool, deadline <-chan time.Time) DMARCResult {
	d := DMARCResult{From: c.fromDomain}
	if c.fromDomain == "" {
		d.Result, d.Reason = "permerror", c.fromErr
		if c.fromErr == "" {
			d.Result = "none"
		}
		return d
	}
	var out dmarcOut
	if *timedOut {
		d.Result, d.Reason = "temperror", "timed out"
		return d
	}
	select {
	case out = <-c.dmarcDone:
	case <-deadline:
		*timedOut = true
		d.Result, d.Reason = "temperror", "timed out"
		return d
	}
	if out.rec == nil {
		d.Result, d.Reason = out.result, out.reason
		return d
	}
	rec := out.rec
	c.dmarcTesting = out.testing
	d.Policy = string(rec.Policy)
	if out.atOrg && rec.SubdomainPolicy != "" {
		d.Policy = string(rec.SubdomainPolicy)
	}
	d.Percent = 100
	if rec.Percent != nil {
		d.Percent = *rec.Percent
	}
	aligned := func(dom string, mode dmarc.AlignmentMode) bool {
		dom = strings.ToLower(strings.TrimSuffix(dom, "."))
		if dom == "" {
			return false
		}
		if mode == dmarc.AlignmentStrict {
			return dom == c.fromDomain
		}
		return orgDomain(dom) == out.orgDom
	}
	// SPF's identity is MAIL FROM's domain, or HELO for the null sender
	// (RFC 7489 §4.1 note); r.SPF.Domain is whichever was checked.
	if r.SPF.Result == "pass" {
		d.SPFAligned = aligned(r.SPF.Domain, rec.SPFAlignment)
	}
	temp := r.SPF.Result == "temperror"
	for _, k := range r.DKIM {
		if k.Result == "pass" && aligned(k.Domain, rec.DKIMAlignment) {
			d.DKIMAligned = true
		}
		if k.Result == "temperror" {
			temp = true
		}
	}
	switch {
	case d.SPFAligned || d.DKIMAligned:
		d.Result = "pass"
	case temp:
		d.Result, d.Reason = "temperror", "SPF or DKIM could not be checked"
	default:
		d.Result = "fail"
	}
	return d
}

// policy applies Config.SPFFail and Config.DMARCReject. A temperror never
// rejects.
func (c *Check) policy(v *Verdict) {
	r := &v.Results
	cfg := c.a.cfg
	var tags []string
	if r.SPF.Result == "fail" && cfg.SPFFail != Accept {
		if cfg.SPFFail == Reject {
			v.Action, v.Code, v.EnhancedCode = Reject, 550, [3]int{5, 7, 1}
			v.Message = fmt.Sprintf("SPF: %s is not allowed to send mail for %s", r.ClientIP, r.SPF.Domain)
			return
		}
		tags = append(tags, "spf=fail")
	}
	if r.DMARC.Result == "fail" && r.DMARC.Policy == "reject" && r.DMARC.Percent == 100 && cfg.DMARCReject != Accept {
		if cfg.DMARCReject == Reject {
			v.Action, v.Code, v.EnhancedCode = Reject, 550, [3]int{5, 7, 26}
			v.Message = fmt.Sprintf("DMARC: unauthenticated mail from %s is refused by its domain's policy", r.DMARC.From)
			return
		}
		tags = append(tags, "dmarc=fail policy=reject")
	}
	if len(tags) > 0 {
		v.Action = Tag
		v.Header += TagHeader + ": fail; " + strings.Join(tags, "; ") + "\r\n"
	}
}

// results converts to go-msgauth authres results.
func (r *Results) results() []authres.Result {
	var out []authres.Result
	spfr := &authres.SPFResult{Value: authres.ResultValue(r.SPF.Result)}
	if r.SPF.Helo {
		spfr.Helo = r.SPF.Domain
	} else {
		spfr.From = r.SPF.Domain
	}
	out = append(out, spfr)
	if len(r.DKIM) == 0 {
		out = append(out, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range r.DKIM {
		res := &authres.DKIMResult{Value: authres.ResultValue(d.Result), Domain: d.Domain, Identifier: d.Identifier}
		if d.Result != "pass" {
			res.Reason = cleanReason(d.Reason)
		}
		out = append(out, res)
	}
	dm := &authres.DMARCResult{Value: authres.ResultValue(r.DMARC.Result), From: r.DMARC.From}
	out = append(out, dm)
	arc := &authres.GenericResult{Method: "arc", Value: authres.ResultValue(r.ARC.Result), Params: map[string]string{}}
	if r.ClientIP != "" {
		arc.Params["smtp.remote-ip"] = r.ClientIP
	}
	out = append(out, arc)
	return out
}

// cleanReason keeps reasons parseable: no ';', quotes or line ends.
func cleanReason(s string) string {
	s = strings.Map(func(r rune) rune {
		switch r {
		case ';', '"', '\\', '\r', '\n', '(', ')':
			return ' '
		}
		if r < 32 || r > 126 {
			return -1
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

// payload is the Authentication-Results value: "authserv-id; m=r ...; ...".
func (r *Results) payload(authservID string) string {
	res := r.results()
	parts := []string{authservID}
	for _, x := range res {
		s := strings.TrimSpace(authres.Format("x", []authres.Result{x}))
		parts = append(parts, strings.TrimPrefix(s, "x; "))
	}
	return strings.Join(parts, "; ")
}

func (r *Results) header(authservID string) string {
	return "Authentication-Results: " + foldAR(r.payload(authservID)) + "\r\n"
}

// SenderAuth says how the envelope sender mailFrom was authenticated:
// "spf" (SPF pass for its domain, not HELO), "dkim" (a passing DKIM
// signature whose d= is in its organizational domain), or "" (not: DSNs
// to it could be backscatter).
func (r Results) SenderAuth(mailFrom string) string {
	i := strings.LastIndexByte(mailFrom, '@')
	if i < 0 {
		return ""
	}
	dom := strings.ToLower(strings.TrimSuffix(mailFrom[i+1:], "."))
	if r.SPF.Result == "pass" && !r.SPF.Helo && strings.EqualFold(r.SPF.Domain, dom) {
		return "spf"
	}
	org := orgDomain(dom)
	for _, k := range r.DKIM {
		if k.Result == "pass" && orgDomain(strings.ToLower(strings.TrimSuffix(k.Domain, "."))) == org {
			return "dkim"
		}
	}
	return ""
}

// AuthenticationResults is the Authentication-Results field for r
// (folded, CRLF-terminated).
func (r Results) AuthenticationResults(authservID string) string { return r.header(authservID) }
