// Package ledgertest is the conformance suite every ledger backend passes.
// It is an ordinary package so that each backend's tests can import it:
//
//	func TestConformance(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T, dir string, limit int) ledger.Store {
//			s, err := mybackend.Open(filepath.Join(dir, "ledger"), limit)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
package ledgertest

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// Opener opens the store that lives in dir, keeping limit rows as
// LEDGER_LIMIT does. dir identifies the store: Run calls Opener again with
// the same dir, after closing the first store, and expects the same rows
// back (a restart); a new dir must give an empty store. A backend that does
// not live in files (PostgreSQL) maps dir to a schema or database of its own.
//
// Opener fails t (t.Fatal) when the store cannot be opened. Run closes every
// store it opens, so Opener need not; if it registers a cleanup that closes
// the store too, that second Close must not panic.
type Opener func(t *testing.T, dir string, limit int) ledger.Store

// bigLimit is the limit of subtests that are not about pruning: high enough
// that nothing they record is ever pruned.
const bigLimit = 1000

// Run runs the whole ledger.Store contract against the backend that open
// opens, one subtest per part of it.
func Run(t *testing.T, open Opener) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"RecordNew", testRecordNew},
		{"DuplicateGUID", testDuplicateGUID},
		{"ConcurrentSameGUID", testConcurrentSameGUID},
		{"ConcurrentDistinctGUIDs", testConcurrentDistinctGUIDs},
		{"Key", testKey},
		{"KeyConcurrent", testKeyConcurrent},
		{"RoundTrip", testRoundTrip},
		{"StatesRoundTrip", testStatesRoundTrip},
		{"GetUnknown", testGetUnknown},
		{"Due", testDue},
		{"DueSkipsRescheduled", testDueSkipsRescheduled},
		{"DueCursor", testDueCursor},
		{"DueByDestination", testDueByDestination},
		{"Finish", testFinish},
		{"Reschedule", testReschedule},
		{"Subject", testSubject},
		{"Stats", testStats},
		{"PruneFinished", testPruneFinished},
		{"PrunePendingKept", testPrunePendingKept},
		{"SeqNeverReused", testSeqNeverReused},
		{"Restart", testRestart},
		{"ConcurrentMixed", testConcurrentMixed},
		{"List", testList},
		{"Requeue", testRequeue},
		{"Streak", testStreak},
		{"StreakRestart", testStreakRestart},
		{"StreakConcurrent", testStreakConcurrent},
		{"Live", testLive},
		{"LiveRestart", testLiveRestart},
		{"LiveForgets", testLiveForgets},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// harness owns one store in one directory, so that a subtest can restart it.
type harness struct {
	t      *testing.T
	open   Opener
	dir    string
	limit  int
	s      ledger.Store
	closed bool
}

func newHarness(t *testing.T, open Opener, limit int) *harness {
	t.Helper()
	h := &harness{t: t, open: open, dir: t.TempDir(), limit: limit}
	h.s = h.mustOpen()
	// Registered after TempDir's own cleanup, so it runs first: the store is
	// closed before its directory is removed.
	t.Cleanup(func() {
		if !h.closed {
			if err := h.s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return h
}

func (h *harness) mustOpen() ledger.Store {
	h.t.Helper()
	s := h.open(h.t, h.dir, h.limit)
	if s == nil {
		h.t.Fatalf("Opener returned a nil store for %s", h.dir)
	}
	return s
}

// close closes the store for good (the subtest checks what happens next).
func (h *harness) close() {
	h.t.Helper()
	h.closed = true
	if err := h.s.Close(); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
}

// reopen is a restart: the store is closed and opened again on the same dir.
func (h *harness) reopen() {
	h.t.Helper()
	h.close()
	h.s = h.mustOpen()
	h.closed = false
}

// base is an arbitrary fixed instant, so that tests do not depend on the
// clock. It has milliseconds, the precision every backend must keep.
var base = time.Date(2024, time.May, 17, 9, 30, 0, 123_000_000, time.UTC)

// at is the i-th second after base.
func at(i int) time.Time { return base.Add(time.Duration(i) * time.Second) }

// row makes a Pending delivery received i seconds after base.
func row(guid string, i int) *ledger.Delivery {
	return &ledger.Delivery{
		GUID:       guid,
		Event:      "workflow_run",
		Action:     "completed",
		ReceivedAt: at(i),
		Repo:       "octo-org/octo-repo",
		State:      ledger.Pending,
		Message:    []byte(`{"kind":"workflow_run","title":"` + guid + `"}`),
	}
}

func withState(d *ledger.Delivery, s ledger.State) *ledger.Delivery {
	d.State = s
	return d
}

func record(t *testing.T, s ledger.Store, d *ledger.Delivery, want ledger.Result) {
	t.Helper()
	got, err := s.Record(t.Context(), d)
	if err != nil {
		t.Fatalf("Record(%s): %v", d.GUID, err)
	}
	if got != want {
		t.Fatalf("Record(%s) = %s, want %s", d.GUID, resultName(got), resultName(want))
	}
}

func get(t *testing.T, s ledger.Store, guid string) ledger.Delivery {
	t.Helper()
	d, err := s.Get(t.Context(), guid)
	if err != nil {
		t.Fatalf("Get(%s): %v", guid, err)
	}
	if d.GUID != guid {
		t.Fatalf("Get(%s) returned the row of %q", guid, d.GUID)
	}
	return d
}

// exists tells a present row from a pruned one, and fails on any other error.
func exists(t *testing.T, s ledger.Store, guid string) bool {
	t.Helper()
	_, err := s.Get(t.Context(), guid)
	switch {
	case err == nil:
		return true
	case errors.Is(err, ledger.ErrNotFound):
		return false
	}
	t.Fatalf("Get(%s): %v", guid, err)
	return false
}

func stats(t *testing.T, s ledger.Store) ledger.Stats {
	t.Helper()
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

func due(t *testing.T, s ledger.Store, now time.Time, after int64, limit int) []string {
	t.Helper()
	ds, err := s.Due(t.Context(), "", now, after, limit)
	if err != nil {
		t.Fatalf("Due(%v, %d, %d): %v", now, after, limit, err)
	}
	return guids(ds)
}

func finish(t *testing.T, s ledger.Store, guid string, st ledger.State, attempts int, lastErr string) {
	t.Helper()
	if err := s.Finish(t.Context(), guid, st, attempts, lastErr); err != nil {
		t.Fatalf("Finish(%s, %s): %v", guid, st, err)
	}
}

func guids(ds []ledger.Delivery) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.GUID)
	}
	return out
}

func resultName(r ledger.Result) string {
	switch r {
	case ledger.Recorded:
		return "Recorded"
	case ledger.Duplicate:
		return "Duplicate"
	case ledger.KeyTaken:
		return "KeyTaken"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// diff lists the fields in which two rows differ. It walks the struct by
// reflection so that a field added to Delivery later is compared too:
// instants with time.Equal (a backend may return another *time.Location),
// byte slices with bytes.Equal (nil and empty are the same message).
func diff(want, got ledger.Delivery) []string {
	var out []string
	wv, gv := reflect.ValueOf(want), reflect.ValueOf(got)
	for i := range wv.NumField() {
		name := wv.Type().Field(i).Name
		w, g := wv.Field(i).Interface(), gv.Field(i).Interface()
		var same bool
		switch w := w.(type) {
		case time.Time:
			same = w.Equal(g.(time.Time))
		case []byte:
			same = bytes.Equal(w, g.([]byte))
		default:
			same = reflect.DeepEqual(w, g)
		}
		if !same {
			out = append(out, fmt.Sprintf("%s: got %#v, want %#v", name, fmtField(g), fmtField(w)))
		}
	}
	return out
}

func fmtField(v any) any {
	switch v := v.(type) {
	case []byte:
		return string(v)
	case time.Time:
		return v.Format(time.RFC3339Nano)
	}
	return v
}

func assertSame(t *testing.T, what string, want, got ledger.Delivery) {
	t.Helper()
	if d := diff(want, got); len(d) > 0 {
		t.Errorf("%s: row %s differs:\n\t%s", what, want.GUID, strings.Join(d, "\n\t"))
	}
}

// noPanic runs f and turns a panic into a test failure.
func noPanic(t *testing.T, name string, f func() error) error {
	t.Helper()
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s panicked: %v", name, r)
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		err = f()
	}()
	return err
}

// countResults runs n goroutines that record mk(i) at the same moment and
// returns what Record answered each of them.
func countResults(t *testing.T, s ledger.Store, n int, mk func(i int) *ledger.Delivery) ([]ledger.Result, []*ledger.Delivery) {
	t.Helper()
	ctx := t.Context()
	ds := make([]*ledger.Delivery, n)
	for i := range ds {
		ds[i] = mk(i)
	}
	res := make([]ledger.Result, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var done sync.WaitGroup
	for i := range n {
		done.Go(func() {
			<-start
			res[i], errs[i] = s.Record(ctx, ds[i])
		})
	}
	close(start) // all at once, as far as the scheduler allows
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Record(%s): %v", ds[i].GUID, err)
		}
	}
	return res, ds
}
