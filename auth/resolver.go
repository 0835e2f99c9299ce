package auth

import (
	"context"
	"errors"
	"net"
	"time"
)

// Resolver is the DNS used for SPF, DKIM keys, DMARC records and ARC keys.
// *net.Resolver implements it. Errors should be *net.DNSError (IsNotFound
// for NXDOMAIN/no such record); any other error counts as temporary.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// guard wraps a Resolver: every lookup is bounded by timeout (also when
// the resolver ignores its context), and errors are normalised into
// *net.DNSError so that the SPF, DKIM and DMARC libraries classify them:
// not-found stays not-found, everything else is temporary.
type guard struct {
	r       Resolver
	timeout time.Duration
}

func (g guard) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return call(ctx, g, name, func(ctx context.Context) ([]string, error) { return g.r.LookupTXT(ctx, name) })
}

func (g guard) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	return call(ctx, g, name, func(ctx context.Context) ([]*net.MX, error) { return g.r.LookupMX(ctx, name) })
}

func (g guard) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	return call(ctx, g, host, func(ctx context.Context) ([]net.IPAddr, error) { return g.r.LookupIPAddr(ctx, host) })
}

func (g guard) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	return call(ctx, g, addr, func(ctx context.Context) ([]string, error) { return g.r.LookupAddr(ctx, addr) })
}

func call[T any](ctx context.Context, g guard, name string, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				var zero T
				ch <- res{zero, errors.New("resolver panic")}
			}
		}()
		v, err := f(ctx)
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, normalize(name, r.err)
	case <-ctx.Done():
		var zero T
		return zero, &net.DNSError{Err: "lookup timed out", Name: name, IsTimeout: true, IsTemporary: true}
	}
}

func normalize(name string, err error) error {
	if err == nil {
		return nil
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsNotFound {
			return &net.DNSError{Err: de.Err, Name: name, IsNotFound: true}
		}
		return &net.DNSError{Err: de.Err, Name: name, IsTimeout: de.IsTimeout, IsTemporary: true}
	}
	return &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true,
		IsTimeout: errors.Is(err, context.DeadlineExceeded)}
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// lookupTXT is a context-bound TXT lookup for the libraries that take a
// func(name) ([]string, error).
func (g guard) txtFunc(ctx context.Context) func(string) ([]string, error) {
	return func(name string) ([]string, error) { return g.LookupTXT(ctx, name) }
}
