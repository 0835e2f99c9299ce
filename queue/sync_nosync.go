//go:build powercut_nosync

package queue

import "os"

// Built only with -tags powercut_nosync, for the power-loss test
// (e2e/powercut_test.go): a control relay that answers 250 before anything
// reached stable storage, which that test must catch losing mail. Never
// ship it: serve logs an error at every start of such a binary.

// SyncsDisabled is true only in the power-loss test's control build.
const SyncsDisabled = true

func fdatasync(*os.File) error { return nil }

func syncDir(*os.File) error { return nil }
