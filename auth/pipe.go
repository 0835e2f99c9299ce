package auth

import (
	"io"
	"sync"
)

// bufPipe connects the message stream to the DKIM verifier without making
// the sender wait while the verifier looks its keys up: writes are
// buffered up to max bytes (beyond, a write waits for the reader). After
// the reader is closed, writes are discarded.
type bufPipe struct {
	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	max     int
	closed  bool
	err     error
	rclosed bool
}

func newBufPipe(max int) *bufPipe {
	p := &bufPipe{max: max}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *bufPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) > 0 && len(p.buf)+len(b) > p.max && !p.rclosed && !p.closed {
		p.cond.Wait()
	}
	if !p.rclosed && !p.closed {
		p.buf = append(p.buf, b...)
		p.cond.Broadcast()
	}
	return len(b), nil
}

func (p *bufPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && !p.closed {
		p.cond.Wait()
	}
	if len(p.buf) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	if len(p.buf) == 0 {
		p.buf = nil
	}
	p.cond.Broadcast()
	return n, nil
}

// CloseWrite ends the stream (err nil: EOF).
func (p *bufPipe) CloseWrite(err error) {
	p.mu.Lock()
	p.closed, p.err = true, err
	p.cond.Broadcast()
	p.mu.Unlock()
}

// CloseRead discards what is buffered and everything written later.
func (p *bufPipe) CloseRead() {
	p.mu.Lock()
	p.rclosed, p.buf = true, nil
	p.cond.Broadcast()
	p.mu.Unlock()
}
