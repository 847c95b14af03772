package ledgertest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// testDueByDestination: each destination's worker sees its own rows only,
// in order of arrival, so that a destination that is down holds up no other.
func testDueByDestination(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	dests := []string{"", "api-team", "", "platform-live", "api-team"}
	for i, dest := range dests {
		d := row(fmt.Sprint("dest-", i), i)
		d.Destination = dest
		record(t, h.s, d, ledger.Recorded)
	}
	for dest, want := range map[string][]string{
		"":              {"dest-0", "dest-2"},
		"api-team":      {"dest-1", "dest-4"},
		"platform-live": {"dest-3"},
		"nobody":        nil,
	} {
		ds, err := h.s.Due(t.Context(), dest, at(10_000), 0, 10)
		if err != nil {
			t.Fatalf("Due(%q): %v", dest, err)
		}
		if got := guids(ds); !slices.Equal(got, want) {
			t.Errorf("Due(%q) = %v, want %v", dest, got, want)
		}
		for _, d := range ds {
			if d.Destination != dest {
				t.Errorf("Due(%q) returned %s with Destination %q", dest, d.GUID, d.Destination)
			}
		}
	}
	// The cursor works within a destination: after dest-1, api-team owes dest-4.
	first := get(t, h.s, "dest-1")
	ds, err := h.s.Due(t.Context(), "api-team", at(10_000), first.Seq, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := guids(ds); !slices.Equal(got, []string{"dest-4"}) {
		t.Errorf("Due(api-team, after dest-1) = %v, want [dest-4]", got)
	}
}

func testLive(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	const key = "api-team|run:octo-org/octo-repo:30433642"
	if _, err := h.s.Live(t.Context(), key); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Live of an unknown key: err = %v, want ErrNotFound", err)
	}
	first := ledger.Live{Channel: "C0123456789", TS: "1700000000.000100", UpdatedAt: at(1)}
	if err := h.s.SetLive(t.Context(), key, first); err != nil {
		t.Fatalf("SetLive: %v", err)
	}
	if got := live(t, h.s, key); got != first {
		t.Errorf("Live = %+v, want %+v", got, first)
	}
	// Replaced whole: a message posted anew has a new ts.
	second := ledger.Live{Channel: "C0123456789", TS: "1700000000.000200", Final: true, UpdatedAt: at(2)}
	if err := h.s.SetLive(t.Context(), key, second); err != nil {
		t.Fatalf("SetLive: %v", err)
	}
	if got := live(t, h.s, key); got != second {
		t.Errorf("Live after a second SetLive = %+v, want %+v", got, second)
	}
	// Keys are independent.
	if _, err := h.s.Live(t.Context(), key+"x"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("Live of another key: err = %v, want ErrNotFound", err)
	}
}

// testLiveRestart: a live message outlives a restart and the pruning of the
// deliveries that made it, so the next event of its subject still updates it.
func testLiveRestart(t *testing.T, open Opener) {
	h := newHarness(t, open, 1)
	const key = "platform-live|pr:octo-org/octo-repo:42"
	m := ledger.Live{Channel: "C0123456789", TS: "1700000000.000300", UpdatedAt: at(3)}
	if err := h.s.SetLive(t.Context(), key, m); err != nil {
		t.Fatalf("SetLive: %v", err)
	}
	for i := range 3 {
		record(t, h.s, withState(row(fmt.Sprint("r", i), i), ledger.Ignored), ledger.Recorded)
	}
	h.reopen()
	if got := live(t, h.s, key); got != m {
		t.Errorf("Live after a restart = %+v, want %+v", got, m)
	}
}

func live(t *testing.T, s ledger.Store, key string) ledger.Live {
	t.Helper()
	m, err := s.Live(t.Context(), key)
	if err != nil {
		t.Fatalf("Live(%s): %v", key, err)
	}
	return m
}

// testLiveForgets: SetLive forgets live messages not set for LiveTTL, so
// the table holds about a month of subjects; a forgotten one stays
// forgotten after a restart.
func testLiveForgets(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	set := func(key string, at time.Time) {
		t.Helper()
		if err := h.s.SetLive(t.Context(), key, ledger.Live{Channel: "C0123456789", TS: "1700000000.000100", UpdatedAt: at}); err != nil {
			t.Fatalf("SetLive(%s): %v", key, err)
		}
	}
	t0 := at(0)
	set("old", t0)
	set("recent", t0.Add(ledger.LiveTTL/2))
	set("new", t0.Add(ledger.LiveTTL+time.Hour))
	check := func(when string) {
		t.Helper()
		if _, err := h.s.Live(t.Context(), "old"); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("%s: Live(old) err = %v, want ErrNotFound: not set for longer than LiveTTL", when, err)
		}
		live(t, h.s, "recent")
		live(t, h.s, "new")
	}
	check("after SetLive")
	h.reopen()
	check("after a restart")
}
