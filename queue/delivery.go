package queue

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

// outcome is what a transaction tells us about its destination.
type outcome int8

const (
	outcomeOK       outcome = iota // the server answered (whatever it said)
	outcomeSlow                    // it asked us to slow down
	outcomeConnFail                // no usable session: refused, dropped, timed out
	outcomeShutdown                // we are stopping: it tells nothing
)

// work is one delivery worker of class c: it takes a transaction from the
// destination whose turn it is, among those that may start one now.
func (q *Scheduler) work(ctx context.Context, c class) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		for !q.stopped && q.ready[c].empty() {
			q.cond[c].Wait()
		}
		if q.stopped {
			return
		}
		d := q.ready[c].pop()
		d.inReady = false
		now := q.now()
		if ok, _ := d.canStart(now); !ok {
			q.readyLocked(d, now)
			continue
		}
		j := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		d.active++
		d.nextStart = now.Add(d.rateDelay)
		d.lastUsed = now
		q.readyLocked(d, now) // another worker may take its next job
		q.mu.Unlock()

		out, errText := q.deliver(ctx, j)

		q.mu.Lock()
		d.active--
		now = q.now()
		done := q.feedbackLocked(d, out, errText, now)
		for _, r := range j.rcpts {
			switch {
			case out == outcomeShutdown:
			case r.Status == envelope.Sent:
				d.sent++
			case r.Status == envelope.Pending:
				d.deferred++
				if r.LastReply != "" {
					d.lastError = r.LastReply // why it defers, for queue destinations
				}
				if out == outcomeSlow {
					r.NextAttempt = d.pausedUntil // not the message's backoff
				}
			}
		}
		if j.e.jobs--; j.e.jobs == 0 {
			done = append(done, j.e)
		}
		q.readyLocked(d, now)
		if len(done) > 0 {
			q.mu.Unlock()
			for _, e := range done {
				q.finish(e)
			}
			q.mu.Lock()
		}
	}
}

// slowText is what the replies of receivers that rate-limit us say.
var slowText = regexp.MustCompile(`(?i)\b(rate|too many|limit|throttl|slow down|busy|unusual|reduce)`)

// slowDown reports whether a reply asks us to send less: 421 (the server
// closes: often "too many connections"), Gmail's 4.7.28 and 421 4.7.0,
// Outlook's 4.7.500/4.7.650 "server busy"/"rate limited", and other 4.7.x
// replies that speak of rates and limits.
func slowDown(r nexthop.Reply) bool {
	switch {
	case r.Code == 421:
		return true
	case r.Code/100 != 4:
		return false
	case r.Enhanced == "4.7.28":
		return true
	}
	return strings.HasPrefix(r.Enhanced, "4.7.") && slowText.MatchString(r.Text)
}

// deliver runs one job and records each recipient's outcome in its
// envelope (in memory; finish persists it).
func (q *Scheduler) deliver(ctx context.Context, j *job) (outcome, string) {
	env := j.env
	log := q.Log.With("queue_id", env.ID)
	addrs := make([]string, len(j.rcpts))
	external := false
	for i, r := range j.rcpts {
		addrs[i] = r.Addr
		external = external || r.Forward
	}
	start := time.Now()
	replies, err := q.send(ctx, j.d.hop, env, j.from, addrs, external, j.rewrite)
	if err != nil && ctx.Err() != nil {
		return outcomeShutdown, "" // the recipients stay pending
	}
	out, errText := outcomeOK, ""
	if err != nil {
		out, errText = outcomeConnFail, err.Error()
		if rep, ok := nexthop.ReplyOf(err); ok && slowDown(rep) {
			out = outcomeSlow
		}
	}
	delay := q.now().Sub(env.Received).Round(time.Millisecond)
	for i, r := range j.rcpts {
		var reply nexthop.Reply
		if err != nil {
			reply = nexthop.Reply{Code: 451, Enhanced: "4.4.1", Text: err.Error()}
		} else {
			reply = replies[i]
			if slowDown(reply) {
				out, errText = outcomeSlow, reply.String()
			}
		}
		r.LastReply = reply.String()
		r.Attempts++
		status := "deferred"
		switch {
		case reply.OK():
			r.Status, status = envelope.Sent, "sent"
		case reply.Permanent():
			r.Status, status = envelope.Failed, "bounced"
		}
		q.observe("delivery", status)
		// One line per recipient and attempt, as Postfix's smtp(8) logs it,
		// so that admins' greps and log tools keep working.
		dsn := reply.Enhanced
		if dsn == "" {
			dsn = fmt.Sprintf("%d.0.0", reply.Code/100)
		}
		log.Info(fmt.Sprintf("to=<%s>, orig_to=<%s>, relay=%s, delay=%.2f, delays=%.2f, dsn=%s, status=%s (%s)",
			r.Addr, r.OrigTo, j.d.hop.String(), delay.Seconds(), time.Since(start).Seconds(), dsn, status, oneLine(reply.String())),
			"from", j.from, "status", status)
	}
	return out, errText
}

func (q *Scheduler) send(ctx context.Context, hop nexthop.Hop, env *envelope.Envelope, from string, rcpts []string, external, rewrite bool) ([]nexthop.Reply, error) {
	f, err := q.Spool.OpenBody(env)
	if err != nil {
		return nil, fmt.Errorf("opening body: %w", err)
	}
	defer f.Close()
	prefix := env.AuthHeader
	if external {
		prefix = env.ForwardHeader + prefix
	}
	body := &prefixedBody{prefix: prefix, f: f}
	if rw := env.FromRewrite; rewrite && rw != nil && rw.Offset >= 0 && rw.Offset+rw.Length <= env.Size {
		body.prefix = rw.ForwardHeader + env.AuthHeader
		body.cut, body.with = rw, rw.Fields
	}
	sized := *env // SIZE= and size checks must count what we add
	sized.Size += body.added()
	body.Seek(0, io.SeekStart)
	replies, err := hop.Send(ctx, &sized, from, rcpts, body)
	if err == nil && len(replies) != len(rcpts) {
		err = fmt.Errorf("next hop returned %d replies for %d recipients", len(replies), len(rcpts))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", hop, err)
	}
	return replies, nil
}

// prefixedBody is the message as delivered: our headers, then the spooled
// body file, in which a From field may be replaced (cut). It can be
// rewound (MX delivery tries the next host).
type prefixedBody struct {
	prefix string
	f      io.ReadSeeker
	r      io.Reader
	cut    *envelope.FromRewrite
	with   string
}

// added is how many bytes the delivered message has beyond the file.
func (p *prefixedBody) added() int64 {
	n := int64(len(p.prefix))
	if p.cut != nil {
		n += int64(len(p.with)) - p.cut.Length
	}
	return n
}

func (p *prefixedBody) Read(b []byte) (int, error) { return p.r.Read(b) }

func (p *prefixedBody) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, fmt.Errorf("prefixedBody: only rewinding is supported")
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if p.cut == nil {
		p.r = io.MultiReader(strings.NewReader(p.prefix), p.f)
		return 0, nil
	}
	// the file up to the From field, its replacement, the rest after it
	p.r = io.MultiReader(strings.NewReader(p.prefix), io.LimitReader(p.f, p.cut.Offset),
		strings.NewReader(p.with), &skipReader{r: p.f, skip: p.cut.Length})
	return 0, nil
}

// skipReader drops the first skip bytes of r.
type skipReader struct {
	r    io.Reader
	skip int64
}

func (s *skipReader) Read(b []byte) (int, error) {
	if s.skip > 0 {
		if _, err := io.CopyN(io.Discard, s.r, s.skip); err != nil {
			return 0, err
		}
		s.skip = 0
	}
	return s.r.Read(b)
}
