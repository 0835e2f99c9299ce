package main

import (
	"context"
	"fmt"
	"net"

	"mailfwd/auth"
	"mailfwd/config"
)

// newAuthenticator builds the edge checks and forward signing of a config.
func newAuthenticator(c *config.Config) (*auth.Authenticator, error) {
	a := c.Auth
	ac := auth.Config{AuthServID: a.AuthservID, LookupTimeout: a.LookupTimeout, Timeout: a.Timeout}
	if r := newResolver(c); r != nil {
		ac.Resolver = r
	}
	if ac.AuthServID == "" {
		ac.AuthServID = c.Hostname
	}
	var err error
	if a.SPFFail != "" {
		if ac.SPFFail, err = auth.ParseAction(a.SPFFail); err != nil {
			return nil, fmt.Errorf("auth.spf_fail: %w", err)
		}
	}
	if a.DMARCReject != "" {
		if ac.DMARCReject, err = auth.ParseAction(a.DMARCReject); err != nil {
			return nil, fmt.Errorf("auth.dmarc_reject: %w", err)
		}
	}
	if k := a.DKIM; k != nil {
		if ac.DKIMKey, err = auth.LoadKey(k.Domain, k.Selector, c.Path(k.KeyFile)); err != nil {
			return nil, fmt.Errorf("auth.dkim: %w", err)
		}
	}
	if k := a.ARC; k != nil {
		if ac.ARCKey, err = auth.LoadKey(k.Domain, k.Selector, c.Path(k.KeyFile)); err != nil {
			return nil, fmt.Errorf("auth.arc: %w", err)
		}
	}
	if f := a.DMARCForwarding; f.Mode == "rewrite" {
		ac.FromRewrite = &auth.FromRewriting{Address: f.From, Via: f.Via}
	}
	return auth.New(ac)
}

// newResolver is the DNS of a config: dns.servers in order, else the
// system's (nil).
func newResolver(c *config.Config) *net.Resolver {
	servers := c.DNS.Servers
	if len(servers) == 0 {
		return nil
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		var err error
		for _, s := range servers {
			var conn net.Conn
			if conn, err = d.DialContext(ctx, network, s); err == nil {
				return conn, nil
			}
		}
		return nil, err
	}}
}
