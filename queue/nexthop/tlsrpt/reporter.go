package tlsrpt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// TXTResolver looks up TXT records; *net.Resolver is one. A
// *net.DNSError with IsNotFound means the name has none.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Config configures a Reporter.
type Config struct {
	Recorder *Recorder // required
	// Info says who reports; OrganizationName, ContactInfo and
	// Submitter are required.
	Info ReportInfo
	// From is the From: and envelope sender of mailed reports; default
	// "noreply-tlsrpt@" + Info.Submitter.
	From string
	// Resolver finds _smtp._tls TXT records; default net.DefaultResolver.
	Resolver TXTResolver
	// SendMail hands a mailto: report to the relay for delivery; nil
	// means mailto: destinations are not supported and are skipped.
	SendMail func(ctx context.Context, from, to string, msg []byte) error
	// HTTPClient POSTs https: reports; nil means https: destinations
	// are skipped. It should have a timeout.
	HTTPClient *http.Client
	// Logf receives what the Reporter cannot return (Run's failures,
	// domains skipped); nil discards it.
	Logf func(format string, args ...any)
	// Parallel is how many domains SendDay delivers to at once (default 4).
	Parallel int

	// Run's timing. Reports go out SendDelay plus up to SendJitter
	// after 00:00 UTC (default 15m and 45m, a negative SendJitter for
	// none: receivers get load spread over the hour rather than a spike
	// at midnight), and SendDelay after
	// Run starts when days are already due. Failed sends are retried
	// every RetryInterval (default 1h); counts are flushed every
	// FlushInterval (default 5m).
	SendDelay, SendJitter, RetryInterval, FlushInterval time.Duration
}

// Reporter builds and delivers the daily reports of a Recorder.
type Reporter struct {
	cfg Config
	rec *Recorder
}

// ErrDayNotOver is SendDay's answer for today or a later day: a report
// must cover a whole day, and sending it early would lose the rest.
var ErrDayNotOver = errors.New("tlsrpt: day not over yet")

// NewReporter checks cfg and fills in defaults. It starts nothing.
func NewReporter(cfg Config) (*Reporter, error) {
	if cfg.Recorder == nil {
		return nil, errors.New("tlsrpt: Config.Recorder is required")
	}
	if cfg.Info.OrganizationName == "" || cfg.Info.ContactInfo == "" {
		return nil, errors.New("tlsrpt: Config.Info needs OrganizationName and ContactInfo")
	}
	sub, ok := normDomain(cfg.Info.Submitter)
	if !ok {
		return nil, fmt.Errorf("tlsrpt: bad Config.Info.Submitter %q", cfg.Info.Submitter)
	}
	cfg.Info.Submitter = sub
	if cfg.From == "" {
		cfg.From = "noreply-tlsrpt@" + sub
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.SendDelay <= 0 {
		cfg.SendDelay = 15 * time.Minute
	}
	if cfg.SendJitter < 0 {
		cfg.SendJitter = 0
	} else if cfg.SendJitter == 0 {
		cfg.SendJitter = 45 * time.Minute
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Hour
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 5 * time.Minute
	}
	return &Reporter{cfg: cfg, rec: cfg.Recorder}, nil
}

// SendDay delivers the reports of the UTC day containing day to every
// policy domain that publishes a TLSRPT record, to each of its
// supported rua destinations. A domain's counts are cleared once all
// its destinations took the report, or at once if it publishes no
// usable record. Anything else (DNS trouble, a refused POST, SendMail
// failing) leaves the domain's counts, and which destinations already
// got the report, for the next call; the error joins what failed.
// Counts are flushed before returning.
func (rp *Reporter) SendDay(ctx context.Context, day time.Time) error {
	start := utcDay(day)
	if !start.Before(utcDay(rp.rec.opts.Now())) {
		return ErrDayNotOver
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, rp.cfg.Parallel)
	)
	for _, p := range rp.rec.pending(start, rp.cfg.Info) {
		if ctx.Err() != nil {
			mu.Lock()
			errs = append(errs, ctx.Err())
			mu.Unlock()
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := rp.sendDomain(ctx, start, p); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := rp.rec.Flush(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (rp *Reporter) sendDomain(ctx context.Context, day time.Time, p pendingReport) error {
	domain := p.report.PolicyDomain()
	txts, err := rp.cfg.Resolver.LookupTXT(ctx, TXTName(domain))
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		rp.rec.clear(day, domain)
		return nil
	}
	if err != nil {
		return fmt.Errorf("tlsrpt: %s: looking up %s: %w", domain, TXTName(domain), err)
	}
	rec, err := ParseTXT(txts)
	if err != nil {
		if !errors.Is(err, ErrNoRecord) {
			rp.cfg.Logf("tlsrpt: %s: not reporting: %v", domain, err)
		}
		rp.rec.clear(day, domain)
		return nil
	}
	var errs []error
	for _, u := range rec.RUA {
		if p.sent[u.URL] {
			continue
		}
		var err error
		switch {
		case u.Scheme == "mailto" && rp.cfg.SendMail != nil:
			var msg []byte
			msg, err = MailMessage(p.report, rp.cfg.From, u.Address, rp.cfg.Info.Submitter, rp.rec.opts.Now())
			if err == nil {
				err = rp.cfg.SendMail(ctx, rp.cfg.From, u.Address, msg)
			}
		case u.Scheme == "https" && rp.cfg.HTTPClient != nil:
			err = Post(ctx, rp.cfg.HTTPClient, u.URL, p.report)
		default:
			continue // a transport we were not given
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tlsrpt: %s: sending to %s: %w", domain, u.URL, err))
			continue
		}
		rp.rec.markSent(day, domain, u.URL)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	rp.rec.clear(day, domain)
	return nil
}

// SendPending calls SendDay for every held day before today, oldest first.
func (rp *Reporter) SendPending(ctx context.Context) error {
	var errs []error
	for _, d := range rp.rec.pendingDays() {
		if err := rp.SendDay(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run flushes the recorder every FlushInterval and sends the reports
// of each finished day (SendPending) shortly after midnight UTC,
// retrying failures every RetryInterval. It returns when ctx is done,
// after a last Flush, with that Flush's error.
func (rp *Reporter) Run(ctx context.Context) error {
	flush := time.NewTicker(rp.cfg.FlushInterval)
	defer flush.Stop()
	wait := rp.nextSlot()
	if len(rp.rec.pendingDays()) > 0 {
		wait = rp.cfg.SendDelay // due from before a restart
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return rp.rec.Flush()
		case <-flush.C:
			if err := rp.rec.Flush(); err != nil {
				rp.cfg.Logf("%v", err)
			}
		case <-timer.C:
			wait := rp.nextSlot()
			if err := rp.SendPending(ctx); err != nil {
				rp.cfg.Logf("tlsrpt: sending reports: %v", err)
				wait = min(wait, rp.cfg.RetryInterval)
			}
			timer.Reset(wait)
		}
	}
}

// nextSlot is the time until the next daily send.
func (rp *Reporter) nextSlot() time.Duration {
	now := rp.rec.opts.Now()
	at := utcDay(now).Add(24*time.Hour + rp.cfg.SendDelay)
	if j := rp.cfg.SendJitter; j > 0 {
		at = at.Add(rand.N(j))
	}
	return at.Sub(now)
}
