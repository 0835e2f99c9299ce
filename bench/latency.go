package main

// Accept latency: the time from the end of a message's DATA to the relay's
// reply, which is when the sender may forget the message. smtp-source does
// not report it, so a probe client sends messages of the scenario's size,
// one connection each and one after another, while smtp-source keeps the
// relay under the scenario's load, and times each of them.

import (
	"bufio"
	"fmt"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"time"
)

// latency is what the probe measured during one run.
type latency struct {
	relay    string
	n        int
	p50, p99 float64 // milliseconds
	max      float64
	err      string
}

type probe struct {
	addr, rcpt string
	body       []byte // header, body lines, without the final ".\r\n"
	stop       chan struct{}
	done       chan struct{}
	samples    []time.Duration
	err        error
}

// startProbe starts sending until stopped.
func startProbe(addr, rcpt string, size int) *probe {
	var b strings.Builder
	b.WriteString("From: <sender@example.org>\r\nTo: <" + rcpt + ">\r\nSubject: latency probe\r\n\r\n")
	for b.Len() < size {
		b.WriteString(strings.Repeat("x", 78) + "\r\n")
	}
	p := &probe{addr: addr, rcpt: rcpt, body: []byte(b.String()), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			d, err := p.one()
			if err != nil {
				p.err = err
				return
			}
			p.samples = append(p.samples, d)
		}
	}()
	return p
}

// one sends one message and returns the time from the end of its data
// (".\r\n" written) to the reply.
func (p *probe) one() (time.Duration, error) {
	c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	tp := textproto.NewConn(c)
	step := func(cmd string, code int) error {
		if cmd != "" {
			if err := tp.PrintfLine("%s", cmd); err != nil {
				return err
			}
		}
		if _, msg, err := tp.ReadResponse(code); err != nil {
			return fmt.Errorf("%q: %v %s", cmd, err, msg)
		}
		return nil
	}
	for _, s := range []struct {
		cmd  string
		code int
	}{{"", 220}, {"EHLO probe.bench.test", 250}, {"MAIL FROM:<sender@example.org>", 250}, {"RCPT TO:<" + p.rcpt + ">", 250}, {"DATA", 354}} {
		if err := step(s.cmd, s.code); err != nil {
			return 0, err
		}
	}
	w := bufio.NewWriterSize(c, 64<<10)
	w.Write(p.body)
	if err := w.Flush(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if _, err := c.Write([]byte(".\r\n")); err != nil {
		return 0, err
	}
	if _, msg, err := tp.ReadResponse(250); err != nil {
		return 0, fmt.Errorf("end of data: %v %s", err, msg)
	}
	d := time.Since(t0)
	step("QUIT", 221)
	return d, nil
}

// finish stops the probe and summarises its samples.
func (p *probe) finish(relay string) latency {
	close(p.stop)
	<-p.done
	l := latency{relay: relay, n: len(p.samples)}
	if p.err != nil {
		l.err = p.err.Error()
	}
	if len(p.samples) == 0 {
		return l
	}
	s := slices.Clone(p.samples)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	l.p50, l.p99, l.max = ms(percentile(s, 0.50)), ms(percentile(s, 0.99)), ms(s[len(s)-1])
	return l
}

// percentile of sorted samples, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// measureLatency runs scenario s through relay r with the probe alongside:
// the same start, warm-up and load as measure, only the probe is timed.
func (e *env) measureLatency(r relay, s scenario) latency {
	fail := func(err error) latency { return latency{relay: r.name(), err: err.Error()} }
	_, done, err := e.prepare(r, s)
	if err != nil {
		return fail(err)
	}
	defer done()
	p := startProbe(r.addr(), rcptRewrite, s.size)
	_, srcErr := runSources(r.addr(), s.size, loads(s, s.msgs, e.o.conc))
	l := p.finish(r.name())
	if srcErr != nil {
		l.err += " " + srcErr.Error()
	}
	return l
}
