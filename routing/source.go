package routing

import (
	"context"
	"errors"
)

// ErrUnavailable marks a temporary failure of a directory source (down,
// timing out, refusing us). Callers answer 4xx for it, never 5xx.
var ErrUnavailable = errors.New("directory unavailable")

// Source is one directory. Lookup returns what addr rewrites to; an empty
// result with a nil error means addr is not in the directory. A Source that
// cannot answer returns an error wrapping ErrUnavailable.
type Source interface {
	Lookup(ctx context.Context, addr string) ([]string, error)
}
