// Package deploy ships the files an admin starts from; the default config
// and the seed directory are also built into the binary, so that `mailfwd
// serve` runs with nothing else installed.
package deploy

import _ "embed"

// DefaultConfig is mailfwd.yaml: the relay on 127.0.0.1:2525 with the
// seed directory, handing mail to 127.0.0.1:2526 (`mailfwd sink`).
//
//go:embed mailfwd.yaml
var DefaultConfig []byte

// SeedLDIF is the seed directory: the three scenarios of the README.
//
//go:embed seed.ldif
var SeedLDIF []byte
