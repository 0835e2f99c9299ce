package routing

import (
	"context"
	"time"
)

// Observed returns src with each Lookup reported to obs: how long it took
// and its error (nil for found and not found alike). Put it between a
// directory and its Cache, so that only real directory queries are timed.
func Observed(src Source, obs func(d time.Duration, err error)) Source {
	if obs == nil {
		return src
	}
	return observed{src, obs}
}

type observed struct {
	src Source
	obs func(time.Duration, error)
}

// Lookup implements Source.
func (o observed) Lookup(ctx context.Context, key string) ([]Match, error) {
	start := time.Now()
	ms, err := o.src.Lookup(ctx, key)
	o.obs(time.Since(start), err)
	return ms, err
}
