package config

import (
	"strings"
	"testing"

	"mailfwd/deploy"
)

func TestAdminListen(t *testing.T) {
	c, err := Parse([]byte(minimal), "/work/dir")
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminListen != "" {
		t.Fatalf("admin_listen defaults to %q, want none", c.AdminListen)
	}
	if c, err = Parse([]byte("admin_listen: 127.0.0.1:9925\n"+minimal), "/work/dir"); err != nil || c.AdminListen != "127.0.0.1:9925" {
		t.Fatalf("admin_listen: %v, %v", c, err)
	}
	// The embedded default serves metrics on loopback.
	if c, err = Parse(deploy.DefaultConfig, "/work/dir"); err != nil || c.AdminListen != "127.0.0.1:2580" {
		t.Fatalf("embedded default: %v", err)
	}
	for _, tt := range []struct{ yaml, want string }{
		{"admin_listen: localhost\n", `admin_listen: "localhost" is not host:port`},
		{"listen: [127.0.0.1:2525]\nadmin_listen: 127.0.0.1:2525\n", "admin_listen: 127.0.0.1:2525 is also an SMTP listener"},
	} {
		_, err := Parse([]byte(tt.yaml+minimal), "/work/dir")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.yaml, err, tt.want)
		}
	}
}
