// Package replay holds the replay test: a labelled stream of GitHub
// deliveries, built from the real payloads in ../shared/github-payloads,
// run through the real handler, ledger and renderer, to check that
// NOTIFY_MODE=changes says exactly what a careful engineer would want.
package replay
