package relay

import (
	"sync"
	"time"
)

// failureLimiter counts failures per client in a fixed window; past the
// limit the client is refused until its window ends. It holds at most
// maxClients entries, so a flood of addresses cannot grow it without bound.
type failureLimiter struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	clients map[string]*failWindow
}

type failWindow struct {
	start time.Time
	n     int
}

const maxClients = 100000

func newFailureLimiter(limit int, window time.Duration) *failureLimiter {
	return &failureLimiter{limit: limit, window: window, now: time.Now, clients: map[string]*failWindow{}}
}

func (l *failureLimiter) allow(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.clients[client]
	if w == nil {
		return true
	}
	if l.now().Sub(w.start) >= l.window {
		delete(l.clients, client)
		return true
	}
	return w.n < l.limit
}

func (l *failureLimiter) fail(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	w := l.clients[client]
	if w == nil || now.Sub(w.start) >= l.window {
		if len(l.clients) >= maxClients {
			for k, v := range l.clients { // drop expired windows
				if now.Sub(v.start) >= l.window {
					delete(l.clients, k)
				}
			}
		}
		w = &failWindow{start: now}
		l.clients[client] = w
	}
	w.n++
}
