package admin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// NewHandler serves /metrics (m) and /healthz (health), and with profiling
// Go's /debug/pprof/ (CPU, heap, goroutine and other profiles of the live
// relay: what `go tool pprof` reads).
func NewHandler(m *Metrics, health func() error, profiling bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /healthz", HealthHandler(health, m.healthDetail))
	if profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// HealthHandler answers 200 "ok" when health returns nil, else 503 with
// the error; detail (if any) follows on lines of its own: what works but
// degraded, such as a directory replica out of sync (mail still flows).
// Nothing is cached: each request checks again.
func HealthHandler(health func() error, detail func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		more := ""
		if detail != nil {
			if d := detail(); d != "" {
				more = d + "\n"
			}
		}
		if health != nil {
			if err := health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(err.Error() + "\n" + more))
				return
			}
		}
		w.Write([]byte("ok\n" + more))
	})
}

// ServeListener serves NewHandler on l until ctx ends. The caller opens
// the listener, so that an address in use is reported before anything
// else starts.
func ServeListener(ctx context.Context, l net.Listener, m *Metrics, health func() error, profiling bool, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	srv := &http.Server{
		Handler:           NewHandler(m, health, profiling),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second, // a CPU profile takes 30 s by default
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
			return
		}
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	log.Info("admin listening", "addr", l.Addr().String())
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
