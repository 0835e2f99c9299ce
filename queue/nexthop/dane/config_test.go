package dane

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	p := newPKI(t, "mx1.example.net", []string{"mx1.example.net"}, false)
	old := newPKI(t, "mx1.example.net", []string{"mx1.example.net"}, true)
	names := []string{"mx1.example.net", "example.net"}
	ee := []Record{rec(3, 1, 1, p.leaf)}

	t.Run("SNI is the MX host", func(t *testing.T) {
		for _, tt := range []struct {
			base *tls.Config
			want string
		}{
			{nil, "mx1.example.net"},
			{&tls.Config{}, "mx1.example.net"},
			{&tls.Config{ServerName: "mx1.example.net"}, "mx1.example.net"},
		} {
			cfg := Config(tt.base, ee, []string{"mx1.example.net.", "example.net"})
			if cfg.ServerName != tt.want || !cfg.InsecureSkipVerify || cfg.VerifyConnection == nil {
				t.Errorf("Config(%v): ServerName %q, InsecureSkipVerify %v", tt.base, cfg.ServerName, cfg.InsecureSkipVerify)
			}
			if sni, err := handshake(t, p.leafKey, p.chain(), cfg); err != nil || sni != tt.want {
				t.Errorf("handshake: SNI %q, %v", sni, err)
			}
		}
	})

	t.Run("base untouched, records copied", func(t *testing.T) {
		base := &tls.Config{MinVersion: tls.VersionTLS12}
		recs := []Record{rec(3, 1, 1, p.leaf)}
		cfg := Config(base, recs, names)
		recs[0].Data[0] ^= 0xff
		if base.InsecureSkipVerify || base.VerifyConnection != nil || base.ServerName != "" {
			t.Errorf("base changed: %+v", base)
		}
		if _, err := handshake(t, p.leafKey, p.chain(), cfg); err != nil {
			t.Errorf("handshake after the caller changed its records: %v", err)
		}
	})

	t.Run("base VerifyConnection runs after DANE", func(t *testing.T) {
		calls := 0
		errBase := errors.New("base says no")
		base := &tls.Config{VerifyConnection: func(tls.ConnectionState) error { calls++; return errBase }}
		if _, err := handshake(t, p.leafKey, p.chain(), Config(base, ee, names)); !errors.Is(err, errBase) || calls != 1 {
			t.Errorf("DANE passed: %v after %d calls, want base's error after 1", err, calls)
		}
		calls = 0
		if _, err := handshake(t, p.leafKey, p.chain(), Config(base, []Record{rec(3, 1, 1, old.leaf)}, names)); !errors.Is(err, ErrNoMatch) || calls != 0 {
			t.Errorf("DANE failed: %v after %d calls, want ErrNoMatch and no call", err, calls)
		}
	})

	t.Run("DANE-TA at base.Time", func(t *testing.T) {
		base := &tls.Config{Time: func() time.Time { return time.Now().Add(-36 * time.Hour) }}
		if _, err := handshake(t, old.leafKey, old.chain(), Config(base, []Record{rec(2, 0, 1, old.root)}, names)); err != nil {
			t.Errorf("leaf valid at base.Time: %v", err)
		}
	})
}
