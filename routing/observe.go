package routing

import (
	"context"
	"errors"
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

// SRSResult names the outcome of an SRS Forward or Reverse, as SRS.Observe
// hears it: "ok" (rewritten or decoded), "database" (Forward: the database
// form; Reverse: a database-form address found in the store), "legacy"
// (Reverse: decoded with a legacy hash, inside the cut-over window),
// "unchanged" (Forward: nothing to rewrite, e.g. the null sender or an
// address already ours), "not_srs", "bad_hash", "expired", "malformed",
// "too_long", "unknown_key", "store_error", or "error" (the SRS settings
// themselves are unusable).
func SRSResult(changed bool, err error) string {
	switch {
	case err == nil && changed:
		return "ok"
	case err == nil:
		return "unchanged"
	case errors.Is(err, ErrNotSRS):
		return "not_srs"
	case errors.Is(err, ErrSRSBadHash):
		return "bad_hash"
	case errors.Is(err, ErrSRSExpired):
		return "expired"
	case errors.Is(err, ErrSRSMalformed):
		return "malformed"
	case errors.Is(err, ErrSRSTooLong):
		return "too_long"
	case errors.Is(err, ErrSRSUnknownKey):
		return "unknown_key"
	case errors.Is(err, ErrSRSStore):
		return "store_error"
	}
	return "error"
}

// observe reports op's outcome; how, when not "", replaces an "ok".
func (s *SRS) observe(op string, changed bool, err error, how string) {
	if s.Observe != nil {
		r := SRSResult(changed, err)
		if r == "ok" && how != "" {
			r = how
		}
		s.Observe(op, r)
	}
}
