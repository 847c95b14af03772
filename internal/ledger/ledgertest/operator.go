package ledgertest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// The operator's view: list rows, requeue one.

func testList(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	record(t, h.s, row("l-1", 1), ledger.Recorded)
	record(t, h.s, withState(row("l-2", 2), ledger.Ignored), ledger.Recorded)
	record(t, h.s, row("l-3", 3), ledger.Recorded)
	finish(t, h.s, "l-3", ledger.Failed, 3, "gave up")
	record(t, h.s, row("l-4", 4), ledger.Recorded)

	list := func(st ledger.State, limit int) []string {
		t.Helper()
		ds, err := h.s.List(t.Context(), st, limit)
		if err != nil {
			t.Fatalf("List(%q, %d): %v", st, limit, err)
		}
		return guids(ds)
	}
	if got, want := list("", 10), []string{"l-4", "l-3", "l-2", "l-1"}; !slices.Equal(got, want) {
		t.Errorf("List(any) = %v, want newest first %v", got, want)
	}
	// Each row keeps its own message (a backend must not hand out bytes
	// that the next row overwrites).
	all, _ := h.s.List(t.Context(), "", 10)
	for _, d := range all {
		if !strings.Contains(string(d.Message), d.GUID) {
			t.Errorf("row %s carries message %s", d.GUID, d.Message)
		}
	}
	if got, want := list("", 2), []string{"l-4", "l-3"}; !slices.Equal(got, want) {
		t.Errorf("List(any, 2) = %v, want %v", got, want)
	}
	if got, want := list(ledger.Pending, 10), []string{"l-4", "l-1"}; !slices.Equal(got, want) {
		t.Errorf("List(pending) = %v, want %v", got, want)
	}
	if got, want := list(ledger.Failed, 10), []string{"l-3"}; !slices.Equal(got, want) {
		t.Errorf("List(failed) = %v, want %v", got, want)
	}
	if got := list(ledger.Delivered, 10); len(got) != 0 {
		t.Errorf("List(delivered) = %v, want none", got)
	}
}

func testRequeue(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	record(t, h.s, row("q-failed", 1), ledger.Recorded)
	finish(t, h.s, "q-failed", ledger.Failed, 3, "HTTP 500")
	record(t, h.s, row("q-sent", 2), ledger.Recorded)
	finish(t, h.s, "q-sent", ledger.Delivered, 1, "")
	quiet := withState(row("q-quiet", 3), ledger.Filtered)
	quiet.Message = nil // a filtered delivery owes no message
	record(t, h.s, quiet, ledger.Recorded)
	if err := h.s.Requeue(t.Context(), "q-quiet"); !errors.Is(err, ledger.ErrNothingToPost) {
		t.Errorf("Requeue of a row without a message = %v, want ErrNothingToPost", err)
	}
	if d := get(t, h.s, "q-quiet"); d.State != ledger.Filtered {
		t.Errorf("a refused Requeue changed the row to %s", d.State)
	}

	for _, guid := range []string{"q-failed", "q-sent"} {
		if err := h.s.Requeue(t.Context(), guid); err != nil {
			t.Fatalf("Requeue(%s): %v", guid, err)
		}
		d := get(t, h.s, guid)
		if d.State != ledger.Pending || d.Attempts != 0 || d.LastError != "" || !d.NextAttemptAt.IsZero() {
			t.Errorf("after Requeue(%s): state %s attempts %d last error %q next %v; want pending, 0, empty, due now",
				guid, d.State, d.Attempts, d.LastError, d.NextAttemptAt)
		}
		if len(d.Message) == 0 {
			t.Errorf("Requeue(%s) lost the message", guid)
		}
	}
	if got := due(t, h.s, time.Now(), 0, 10); !slices.Equal(got, []string{"q-failed", "q-sent"}) {
		t.Errorf("Due after requeue = %v, want both requeued rows", got)
	}
	h.reopen()
	if d := get(t, h.s, "q-failed"); d.State != ledger.Pending {
		t.Errorf("a requeue did not survive a restart: %s", d.State)
	}
	if err := h.s.Requeue(t.Context(), "nope"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("Requeue(unknown) = %v, want ErrNotFound", err)
	}
}
