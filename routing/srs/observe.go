package srs

import "errors"

// Result names the outcome of an SRS Forward or Reverse, as Rewriter.Observe
// hears it: "ok" (rewritten or decoded), "database" (Forward: the database
// form; Reverse: a database-form address found in the store), "legacy"
// (Reverse: decoded with a legacy hash, inside the cut-over window),
// "unchanged" (Forward: nothing to rewrite, e.g. the null sender or an
// address already ours), "not_srs", "bad_hash", "expired", "malformed",
// "too_long", "unknown_key", "store_error", or "error" (the SRS settings
// themselves are unusable).
func Result(changed bool, err error) string {
	switch {
	case err == nil && changed:
		return "ok"
	case err == nil:
		return "unchanged"
	case errors.Is(err, ErrNotSRS):
		return "not_srs"
	case errors.Is(err, ErrBadHash):
		return "bad_hash"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrTooLong):
		return "too_long"
	case errors.Is(err, ErrUnknownKey):
		return "unknown_key"
	case errors.Is(err, ErrStore):
		return "store_error"
	}
	return "error"
}

// observe reports op's outcome; how, when not "", replaces an "ok".
func (s *Rewriter) observe(op string, changed bool, err error, how string) {
	if s.Observe != nil {
		r := Result(changed, err)
		if r == "ok" && how != "" {
			r = how
		}
		s.Observe(op, r)
	}
}
