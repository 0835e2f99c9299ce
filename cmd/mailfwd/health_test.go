package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHealthCommand(t *testing.T) {
	healthy := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy {
			http.Error(w, "spool: no space left on device", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	var out bytes.Buffer
	if err := health([]string{"-url", srv.URL}, &out); err != nil || out.String() != "ok\n" {
		t.Fatalf("healthy: %v %q", err, out.String())
	}
	healthy = false
	if err := health([]string{"-url", srv.URL}, &out); err == nil {
		t.Fatal("unhealthy relay reported healthy")
	}
	if err := health([]string{"-url", "http://127.0.0.1:1/healthz"}, &out); err == nil {
		t.Fatal("no relay reported healthy")
	}
}
