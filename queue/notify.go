package queue

import (
	"io"
	"strings"

	"mailfwd/queue/dsn"
	"mailfwd/queue/envelope"
)

// bounce queues a failure DSN to env's sender for the recipients that
// failed and were not reported yet, and marks them reported. No DSN goes
// to the null sender (RFC 5321 §4.5.5) or for NOTIFY=NEVER. The sender is
// the original (not SRS) one: it is who must hear of the failure.
func (q *Scheduler) bounce(env *envelope.Envelope) error {
	return q.notify(env, dsn.Failure, func(r *envelope.Recipient) bool { return r.Status == envelope.Failed && !r.Bounced },
		func(r *envelope.Recipient) { r.Bounced = true }, "FAILURE")
}

// warnDelay queues a delay DSN for recipients still pending after the
// delay warning time, once each.
func (q *Scheduler) warnDelay(env *envelope.Envelope) error {
	err := q.notify(env, dsn.Delay, func(r *envelope.Recipient) bool { return r.Status == envelope.Pending && !r.DelayNotified },
		func(r *envelope.Recipient) { r.DelayNotified = true }, "DELAY")
	if err == nil {
		err = q.Spool.Update(env)
	}
	return err
}

func (q *Scheduler) notify(env *envelope.Envelope, kind dsn.Kind, due func(*envelope.Recipient) bool, mark func(*envelope.Recipient), want string) error {
	var report []*envelope.Recipient
	for i := range env.Recipients {
		r := &env.Recipients[i]
		if !due(r) {
			continue
		}
		switch {
		case env.From == "" || !r.Wants(want):
			mark(r) // nothing to send: reported as far as it will ever be
		case r.Forward && !q.forwardDSN(env):
			mark(r)
			q.Log.Info("no DSN for a failed forward: the sender was not authenticated (it would be backscatter)",
				"queue_id", env.ID, "from", env.From, "orig_to", r.OrigTo, "kind", want)
		default:
			report = append(report, r)
		}
	}
	if len(report) == 0 {
		return nil
	}
	body, err := q.Spool.OpenBody(env)
	if err != nil {
		return err
	}
	defer body.Close()
	w, err := q.Spool.Create()
	if err != nil {
		return err
	}
	now := q.now()
	var out io.Writer = w
	var signer DSNSigner
	if q.SignDSN != nil {
		signer = q.SignDSN()
		out = io.MultiWriter(w, signer)
	}
	if err := dsn.Write(out, dsn.Report{ReportingMTA: q.hostname(), Envelope: env, Recipients: report, Kind: kind,
		Original: body, Now: now, RetryUntil: env.Received.Add(q.Lifetime), Reveal: q.RevealForward}); err != nil {
		w.Abort()
		return err
	}
	external := true
	if i := strings.LastIndexByte(env.From, '@'); i >= 0 && q.Local != nil {
		external = !q.Local(env.From[i+1:])
	}
	notice := &envelope.Envelope{From: "", Received: now, NextAttempt: now.Add(q.Retry.Min),
		Recipients: []envelope.Recipient{{Addr: env.From, Status: envelope.Pending, Forward: external, DSNNotify: "NEVER"}}}
	if signer != nil {
		h, err := signer.Finish()
		if err != nil {
			q.Log.Warn("cannot DKIM-sign the DSN; sending it unsigned", "queue_id", env.ID, "err", err)
		}
		notice.AuthHeader = h
	}
	if err := w.Commit(notice); err != nil {
		return err
	}
	for _, r := range report {
		mark(r)
	}
	q.observe("dsn", map[dsn.Kind]string{dsn.Failure: "failure", dsn.Delay: "delay"}[kind])
	kindName := map[dsn.Kind]string{dsn.Failure: "bounce", dsn.Delay: "delay notice"}[kind]
	q.Log.Info(kindName+" queued", "queue_id", env.ID, "dsn_queue_id", notice.ID, "to", env.From, "recipients", len(report))
	q.Submit(notice)
	return nil
}

// Inject queues a message of our own (a TLS report) from from to to,
// durably, and returns its queue ID.
func (q *Scheduler) Inject(from, to string, msg []byte) (string, error) {
	external := true
	if i := strings.LastIndexByte(to, '@'); i >= 0 && q.Local != nil {
		external = !q.Local(to[i+1:])
	}
	env, err := q.Spool.Queue(from, to, external, msg, q.now())
	if err != nil {
		return "", err
	}
	q.Submit(env)
	return env.ID, nil
}

// ForwardDSN decides which senders hear about failed external forwards.
type ForwardDSN string

const (
	// ForwardDSNAuthenticated (the default): only a sender authenticated at
	// our edge (Envelope.SenderAuth). Mail from a forged sender that a
	// user's outside mailbox refuses would otherwise bounce to the forged
	// address: backscatter, which gets our IP listed.
	ForwardDSNAuthenticated ForwardDSN = "authenticated"
	ForwardDSNAlways        ForwardDSN = "always"
	ForwardDSNNever         ForwardDSN = "never"
)

func (q *Scheduler) forwardDSN(env *envelope.Envelope) bool {
	switch q.ForwardDSN {
	case ForwardDSNAlways:
		return true
	case ForwardDSNNever:
		return false
	}
	return env.SenderAuth != ""
}

func (q *Scheduler) hostname() string {
	if q.Hostname != "" {
		return q.Hostname
	}
	return "localhost"
}
