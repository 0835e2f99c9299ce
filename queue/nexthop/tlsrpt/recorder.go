package tlsrpt

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// PolicyType is the policy-type of §4.4.
type PolicyType string

// The policy types of RFC 8460 §4.4.
const (
	PolicySTS           PolicyType = "sts"
	PolicyTLSA          PolicyType = "tlsa"
	PolicyNoPolicyFound PolicyType = "no-policy-found"
)

// Valid reports whether t is one of the three policy types.
func (t PolicyType) Valid() bool {
	return t == PolicySTS || t == PolicyTLSA || t == PolicyNoPolicyFound
}

// PolicyKey is the policy a session was held to; sessions are counted
// per distinct key, and each key becomes one entry of policies[] in the
// report of its Domain. It is also the report's "policy" object.
type PolicyKey struct {
	Type PolicyType `json:"policy-type"`
	// String is the policy as text: the lines of the MTA-STS policy, or
	// the TLSA records in presentation format. Empty for
	// no-policy-found.
	String []string `json:"policy-string,omitempty"`
	// Domain is the policy domain: the recipient domain for MTA-STS and
	// no-policy-found, the TLSA base domain for DANE.
	Domain string `json:"policy-domain"`
	// MXHost lists the MX patterns of the policy (the mx: lines of an
	// MTA-STS policy, or the MX host of a TLSA policy).
	MXHost []string `json:"mx-host,omitempty"`
}

// ResultType is the result-type of a failure (§4.3, the IANA "STARTTLS
// Validation Result Types" registry).
type ResultType string

// The result types registered by RFC 8460 §6.5.
const (
	ResultSTARTTLSNotSupported    ResultType = "starttls-not-supported"
	ResultCertificateHostMismatch ResultType = "certificate-host-mismatch"
	ResultCertificateExpired      ResultType = "certificate-expired"
	ResultCertificateNotTrusted   ResultType = "certificate-not-trusted"
	ResultValidationFailure       ResultType = "validation-failure"
	ResultTLSAInvalid             ResultType = "tlsa-invalid"
	ResultDNSSECInvalid           ResultType = "dnssec-invalid"
	ResultDANERequired            ResultType = "dane-required"
	ResultSTSPolicyFetchError     ResultType = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid        ResultType = "sts-policy-invalid"
	ResultSTSWebPKIInvalid        ResultType = "sts-webpki-invalid"
)

// ResultTypes lists the registered result types.
var ResultTypes = []ResultType{
	ResultSTARTTLSNotSupported, ResultCertificateHostMismatch,
	ResultCertificateExpired, ResultCertificateNotTrusted,
	ResultValidationFailure, ResultTLSAInvalid, ResultDNSSECInvalid,
	ResultDANERequired, ResultSTSPolicyFetchError, ResultSTSPolicyInvalid,
	ResultSTSWebPKIInvalid,
}

// Valid reports whether t is a registered result type.
func (t ResultType) Valid() bool {
	for _, v := range ResultTypes {
		if t == v {
			return true
		}
	}
	return false
}

// FailureDetail describes a failed session; failures are counted per
// distinct FailureDetail. All fields but ResultType are optional, as
// some failures (a policy fetch error) happen before any MX is known.
type FailureDetail struct {
	ResultType            ResultType `json:"result-type"`
	SendingMTAIP          string     `json:"sending-mta-ip,omitempty"`
	ReceivingMXHostname   string     `json:"receiving-mx-hostname,omitempty"`
	ReceivingMXHelo       string     `json:"receiving-mx-helo,omitempty"`
	ReceivingIP           string     `json:"receiving-ip,omitempty"`
	FailureReasonCode     string     `json:"failure-reason-code,omitempty"`
	AdditionalInformation string     `json:"additional-information,omitempty"`
}

// RecorderOptions configures a Recorder. Zero values take the defaults.
type RecorderOptions struct {
	// Path is the persistence file; empty keeps counts in memory only.
	Path string
	// MaxDomains bounds the policy domains held, summed over all held
	// days (default 10000). Sessions for further domains are dropped
	// and counted in Stats.DroppedDomainSessions.
	MaxDomains int
	// MaxPoliciesPerDomain bounds the distinct PolicyKeys of one domain
	// on one day (default 4: a policy may change during the day).
	MaxPoliciesPerDomain int
	// MaxFailureDetails bounds the distinct FailureDetails held in all
	// (default 20000), MaxFailureDetailsPerPolicy those of one policy
	// (default 100). A failure beyond them still counts in the
	// summary's total-failure-session-count; only its detail is lost
	// (Stats.DroppedFailureDetails).
	MaxFailureDetails          int
	MaxFailureDetailsPerPolicy int
	// KeepDays is how many UTC days, today included, are held; older
	// unsent days are discarded (default 3: RFC 8460 §5.3 asks for
	// retries for 24 hours, not longer).
	KeepDays int
	// Now is the clock (default time.Now); sessions count in its UTC day.
	Now func() time.Time
}

// Stats reports a Recorder's size and what it dropped since it was opened.
type Stats struct {
	Days, Domains, FailureDetails int // held now

	DroppedDomainSessions int64 // sessions lost to MaxDomains
	DroppedPolicySessions int64 // sessions lost to MaxPoliciesPerDomain
	DroppedFailureDetails int64 // failures counted without their detail
	RejectedSessions      int64 // invalid policy type or domain
	InvalidFailureDetails int64 // unregistered result-type: counted, detail dropped
	ExpiredDays           int64 // days discarded unsent after KeepDays
}

// Recorder counts TLS session outcomes per UTC day, policy domain and
// policy. It is safe for concurrent use; its memory is bounded by
// RecorderOptions.
type Recorder struct {
	opts RecorderOptions

	flushMu sync.Mutex // serialises Flush so an older snapshot never overwrites a newer one

	mu       sync.Mutex
	days     map[string]*dayState // by dayKey
	nDomains int
	nDetails int
	gen      uint64 // bumped on each change
	saved    uint64 // gen of the last write
	stats    Stats
}

type dayState struct {
	domains map[string]*domainState
}

type domainState struct {
	policies map[string]*policyState // by policyID
	// sent holds the rua URLs this day's report was delivered to, so a
	// retry after a partial failure does not send duplicates.
	sent map[string]bool
}

type policyState struct {
	key       PolicyKey
	success   int64
	failure   int64
	details   map[FailureDetail]int64
	truncated int64 // failures whose detail was not kept
}

// Limits on the strings the recorder keeps: they come from remote
// servers (HELO, policy text) and would otherwise make memory unbounded.
const (
	maxField        = 512
	maxPolicyBytes  = 8 << 10
	maxPolicyLines  = 256
	maxMXHosts      = 64
	fileVersion     = 1
	dayLayout       = "2006-01-02"
	defaultKeepDays = 3
)

// OpenRecorder returns a Recorder, loading the counts saved at
// opts.Path if the file exists. A file that cannot be read or parsed is
// an error: the caller decides whether to remove it and start afresh.
func OpenRecorder(opts RecorderOptions) (*Recorder, error) {
	if opts.MaxDomains <= 0 {
		opts.MaxDomains = 10000
	}
	if opts.MaxPoliciesPerDomain <= 0 {
		opts.MaxPoliciesPerDomain = 4
	}
	if opts.MaxFailureDetails <= 0 {
		opts.MaxFailureDetails = 20000
	}
	if opts.MaxFailureDetailsPerPolicy <= 0 {
		opts.MaxFailureDetailsPerPolicy = 100
	}
	if opts.KeepDays <= 0 {
		opts.KeepDays = defaultKeepDays
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Recorder{opts: opts, days: map[string]*dayState{}}
	if opts.Path != "" {
		if err := r.load(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Success counts a session that negotiated TLS as policy demands.
func (r *Recorder) Success(policy PolicyKey) { r.record(policy, nil) }

// Failure counts a session that failed policy, with what went wrong.
func (r *Recorder) Failure(policy PolicyKey, f FailureDetail) { r.record(policy, &f) }

func (r *Recorder) record(policy PolicyKey, f *FailureDetail) {
	key, ok := normPolicy(policy)
	if !ok {
		r.mu.Lock()
		r.stats.RejectedSessions++
		r.mu.Unlock()
		return
	}
	// Normalise outside the lock: concurrent sessions contend only for
	// the map updates.
	id := policyID(key)
	day := dayKey(r.opts.Now())
	var fd FailureDetail
	validDetail := false
	if f != nil {
		fd = normDetail(*f)
		validDetail = fd.ResultType.Valid()
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	p := r.policyLocked(day, key, id)
	if p == nil {
		return
	}
	r.gen++
	if f == nil {
		p.success++
		return
	}
	p.failure++
	if !validDetail {
		r.stats.InvalidFailureDetails++
		p.truncated++
		return
	}
	r.addDetailLocked(p, fd, 1)
}

// policyLocked finds or, within the caps, creates the counters of key
// on day; nil (and the drop counted) when a cap is reached.
func (r *Recorder) policyLocked(day string, key PolicyKey, id string) *policyState {
	d := r.days[day]
	if d == nil {
		d = &dayState{domains: map[string]*domainState{}}
		r.days[day] = d
	}
	dom := d.domains[key.Domain]
	if dom == nil {
		if r.nDomains >= r.opts.MaxDomains {
			r.stats.DroppedDomainSessions++
			if len(d.domains) == 0 {
				delete(r.days, day)
			}
			return nil
		}
		dom = &domainState{policies: map[string]*policyState{}}
		d.domains[key.Domain] = dom
		r.nDomains++
	}
	p := dom.policies[id]
	if p == nil {
		if len(dom.policies) >= r.opts.MaxPoliciesPerDomain {
			r.stats.DroppedPolicySessions++
			return nil
		}
		p = &policyState{key: key, details: map[FailureDetail]int64{}}
		dom.policies[id] = p
	}
	return p
}

func (r *Recorder) addDetailLocked(p *policyState, fd FailureDetail, n int64) {
	if _, ok := p.details[fd]; !ok {
		if r.nDetails >= r.opts.MaxFailureDetails || len(p.details) >= r.opts.MaxFailureDetailsPerPolicy {
			r.stats.DroppedFailureDetails += n
			p.truncated += n
			return
		}
		r.nDetails++
	}
	p.details[fd] += n
}

// pruneLocked discards days that fell out of KeepDays.
func (r *Recorder) pruneLocked() {
	cutoff := dayKey(r.opts.Now().AddDate(0, 0, -(r.opts.KeepDays - 1)))
	for k := range r.days {
		if k < cutoff {
			r.dropDayLocked(k)
			r.stats.ExpiredDays++
			r.gen++
		}
	}
}

func (r *Recorder) dropDayLocked(k string) {
	for dom := range r.days[k].domains {
		r.dropDomainLocked(k, dom)
	}
	delete(r.days, k)
}

func (r *Recorder) dropDomainLocked(day, domain string) {
	d := r.days[day]
	if d == nil {
		return
	}
	dom := d.domains[domain]
	if dom == nil {
		return
	}
	for _, p := range dom.policies {
		r.nDetails -= len(p.details)
	}
	r.nDomains--
	delete(d.domains, domain)
	if len(d.domains) == 0 {
		delete(r.days, day)
	}
}

// Stats returns current sizes and drop counters.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Days, s.Domains, s.FailureDetails = len(r.days), r.nDomains, r.nDetails
	return s
}

// Reports builds the reports for the UTC day containing day, one per
// policy domain, sorted by domain. Domains already delivered and
// cleared by SendDay are absent.
func (r *Recorder) Reports(day time.Time, info ReportInfo) []*Report {
	var out []*Report
	for _, p := range r.pending(day, info) {
		out = append(out, p.report)
	}
	return out
}

// pendingReport is a report still to deliver, with the rua URLs it
// already reached.
type pendingReport struct {
	report *Report
	sent   map[string]bool
}

func (r *Recorder) pending(day time.Time, info ReportInfo) []pendingReport {
	start := utcDay(day)
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.days[start.Format(dayLayout)]
	if d == nil {
		return nil
	}
	domains := make([]string, 0, len(d.domains))
	for k := range d.domains {
		domains = append(domains, k)
	}
	sort.Strings(domains)
	out := make([]pendingReport, 0, len(domains))
	for _, name := range domains {
		dom := d.domains[name]
		sent := make(map[string]bool, len(dom.sent))
		for k := range dom.sent {
			sent[k] = true
		}
		out = append(out, pendingReport{report: buildReport(start, name, dom, info), sent: sent})
	}
	return out
}

// pendingDays lists the held days before today, oldest first: the ones
// a report is due for.
func (r *Recorder) pendingDays() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	today := dayKey(r.opts.Now())
	var out []time.Time
	for k := range r.days {
		if k < today {
			t, _ := time.Parse(dayLayout, k)
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// markSent records that day's report for domain reached url.
func (r *Recorder) markSent(day time.Time, domain, url string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.days[dayKey(day)]
	if d == nil || d.domains[domain] == nil {
		return
	}
	dom := d.domains[domain]
	if dom.sent == nil {
		dom.sent = map[string]bool{}
	}
	dom.sent[url] = true
	r.gen++
}

// clear forgets day's counts for domain: its report is delivered, or it
// takes no reports.
func (r *Recorder) clear(day time.Time, domain string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropDomainLocked(dayKey(day), domain)
	r.gen++
}

// The persistence file. Slices rather than maps keep it stable to diff.
type fileState struct {
	Version int       `json:"version"`
	Days    []fileDay `json:"days"`
}

type fileDay struct {
	Day     string       `json:"day"`
	Domains []fileDomain `json:"domains"`
}

type fileDomain struct {
	Domain   string       `json:"domain"`
	Sent     []string     `json:"sent,omitempty"`
	Policies []filePolicy `json:"policies"`
}

type filePolicy struct {
	Policy    PolicyKey        `json:"policy"`
	Success   int64            `json:"success"`
	Failure   int64            `json:"failure"`
	Details   []FailureDetails `json:"details,omitempty"`
	Truncated int64            `json:"truncated,omitempty"`
}

// Flush writes the counts to the persistence file if they changed since
// the last write. The write is atomic (temporary file, fsync, rename,
// directory fsync): a crash leaves the old or the new file, never a
// torn one.
func (r *Recorder) Flush() error {
	if r.opts.Path == "" {
		return nil
	}
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	r.pruneLocked()
	if r.gen == r.saved {
		r.mu.Unlock()
		return nil
	}
	gen := r.gen
	data, err := json.Marshal(r.fileStateLocked())
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("tlsrpt: encoding state: %w", err)
	}
	if err := writeFileAtomic(r.opts.Path, data); err != nil {
		return err
	}
	r.mu.Lock()
	if gen > r.saved {
		r.saved = gen
	}
	r.mu.Unlock()
	return nil
}

func (r *Recorder) fileStateLocked() *fileState {
	fs := &fileState{Version: fileVersion, Days: []fileDay{}}
	days := make([]string, 0, len(r.days))
	for k := range r.days {
		days = append(days, k)
	}
	sort.Strings(days)
	for _, k := range days {
		d := r.days[k]
		fd := fileDay{Day: k}
		names := make([]string, 0, len(d.domains))
		for n := range d.domains {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			dom := d.domains[n]
			fdom := fileDomain{Domain: n}
			for u := range dom.sent {
				fdom.Sent = append(fdom.Sent, u)
			}
			sort.Strings(fdom.Sent)
			for _, id := range sortedKeys(dom.policies) {
				p := dom.policies[id]
				fdom.Policies = append(fdom.Policies, filePolicy{
					Policy: p.key, Success: p.success, Failure: p.failure,
					Details: sortedDetails(p.details), Truncated: p.truncated,
				})
			}
			fd.Domains = append(fd.Domains, fdom)
		}
		fs.Days = append(fs.Days, fd)
	}
	return fs
}

func (r *Recorder) load() error {
	data, err := os.ReadFile(r.opts.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tlsrpt: reading state: %w", err)
	}
	var fs fileState
	if err := json.Unmarshal(data, &fs); err != nil {
		return fmt.Errorf("tlsrpt: parsing state %s: %w", r.opts.Path, err)
	}
	if fs.Version != fileVersion {
		return fmt.Errorf("tlsrpt: state %s has version %d, want %d", r.opts.Path, fs.Version, fileVersion)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Entries pass through the same normalisation and caps as live
	// sessions, so a hand-edited file or lowered caps stay bounded.
	for _, fd := range fs.Days {
		if _, err := time.Parse(dayLayout, fd.Day); err != nil {
			return fmt.Errorf("tlsrpt: state %s: bad day %q", r.opts.Path, fd.Day)
		}
		for _, fdom := range fd.Domains {
			for _, fp := range fdom.Policies {
				key, ok := normPolicy(fp.Policy)
				if !ok || key.Domain != fdom.Domain || fp.Success < 0 || fp.Failure < 0 {
					continue
				}
				p := r.policyLocked(fd.Day, key, policyID(key))
				if p == nil {
					continue
				}
				p.success += fp.Success
				p.failure += fp.Failure
				p.truncated += max(fp.Truncated, 0)
				for _, d := range fp.Details {
					if fdt := normDetail(d.FailureDetail); fdt.ResultType.Valid() && d.FailedSessionCount > 0 {
						r.addDetailLocked(p, fdt, d.FailedSessionCount)
					}
				}
			}
			if dom := r.days[fd.Day].domainOrNil(fdom.Domain); dom != nil && len(fdom.Sent) > 0 {
				dom.sent = map[string]bool{}
				for _, u := range fdom.Sent {
					dom.sent[u] = true
				}
			}
		}
	}
	r.pruneLocked()
	r.stats = Stats{}
	r.saved = r.gen
	return nil
}

func (d *dayState) domainOrNil(name string) *domainState {
	if d == nil {
		return nil
	}
	return d.domains[name]
}

func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("tlsrpt: saving state: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
			err = fmt.Errorf("tlsrpt: saving state: %w", err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	// The rename is durable only once the directory is synced.
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	d.Sync()
	return nil
}

// utcDay is the start of the UTC day containing t.
func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func dayKey(t time.Time) string { return t.UTC().Format(dayLayout) }

// policyID is a map key identifying a normalised PolicyKey exactly.
func policyID(k PolicyKey) string {
	b, _ := json.Marshal(k)
	return string(b)
}

// normPolicy canonicalises and bounds a PolicyKey, copying its slices
// (the caller may reuse them); false if it cannot be reported.
func normPolicy(k PolicyKey) (PolicyKey, bool) {
	dom, ok := normDomain(k.Domain)
	if !ok || !k.Type.Valid() {
		return PolicyKey{}, false
	}
	out := PolicyKey{Type: k.Type, Domain: dom}
	total := 0
	for _, s := range k.String {
		s = clip(s, maxField*2)
		if len(out.String) >= maxPolicyLines || total+len(s) > maxPolicyBytes {
			break
		}
		total += len(s)
		out.String = append(out.String, s)
	}
	for _, h := range k.MXHost {
		if len(out.MXHost) >= maxMXHosts {
			break
		}
		out.MXHost = append(out.MXHost, clip(strings.ToLower(strings.TrimSuffix(h, ".")), 255))
	}
	return out, true
}

// normDomain lowercases a domain and checks it is a plausible DNS name
// (A-labels), since it ends up in mail headers and file names.
func normDomain(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" || len(s) > 253 || s[0] == '.' || strings.Contains(s, "..") {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", false
		}
	}
	return s, true
}

func normDetail(f FailureDetail) FailureDetail {
	f.SendingMTAIP = normIP(f.SendingMTAIP)
	f.ReceivingIP = normIP(f.ReceivingIP)
	f.ReceivingMXHostname = clip(strings.ToLower(strings.TrimSuffix(f.ReceivingMXHostname, ".")), 255)
	f.ReceivingMXHelo = clip(f.ReceivingMXHelo, 255)
	f.FailureReasonCode = clip(f.FailureReasonCode, maxField)
	f.AdditionalInformation = clip(f.AdditionalInformation, maxField)
	return f
}

// normIP writes addresses one way, so "::ffff:1.2.3.4" and "1.2.3.4"
// or differently zero-padded IPv6 do not split counts.
func normIP(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return clip(s, 64)
}

// clip truncates s to at most n bytes of valid UTF-8.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "")
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
