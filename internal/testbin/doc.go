// Package testbin helps tests that build the synod binary with "go build"
// and run it as a process (test/e2e, the process-level chaos runs) keep go
// test's result cache honest.
//
// go test caches a package's result keyed on its test binary and on the
// files and environment variables the test consulted. A binary built by the
// test itself is neither, so a cached pass would outlive a change to any
// package the test does not import (cmd/synod, for one). ConsultSources,
// called from inside a test, makes every Go source of the module one of the
// files the test consulted.
//
// It also holds what those suites share to run against a store pre-split
// into many data ranges (SYNOD_TEST_PRESPLIT=1, presplit.go).
package testbin
