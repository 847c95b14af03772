package ledgertest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

func testRecordNew(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	var last int64
	for i, g := range []string{"new-a", "new-b", "new-c"} {
		d := row(g, i)
		record(t, h.s, d, ledger.Recorded)
		// Zero is what an unset Seq looks like, so a backend never assigns it.
		if d.Seq <= last {
			t.Errorf("Record(%s) set Seq = %d, want > %d (rows must be ordered by arrival, from 1)", g, d.Seq, last)
		}
		if got := get(t, h.s, g); got.Seq != d.Seq || got.State != ledger.Pending {
			t.Errorf("Get(%s) = Seq %d, State %q; Record said Seq %d, State %q", g, got.Seq, got.State, d.Seq, ledger.Pending)
		}
		last = d.Seq
	}
	if st := stats(t, h.s); st.Size != 3 || st.Pending != 3 {
		t.Errorf("Stats after 3 new rows = %+v, want Size 3, Pending 3", st)
	}
}

func testDuplicateGUID(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	first := row("dup", 0)
	first.Key, first.Subject = "key-first", "subject-first"
	record(t, h.s, first, ledger.Recorded)
	before := get(t, h.s, "dup")

	// Everything but the GUID differs, so that any field the duplicate
	// overwrote shows up.
	second := &ledger.Delivery{
		GUID: "dup", Event: "check_suite", Action: "requested", ReceivedAt: at(50),
		Repo: "other/repo", Ref: "refs/heads/x", Workflow: "w", Status: "s", Conclusion: "c",
		URL: "https://example.com/", State: ledger.Delivered, Key: "key-second",
		Subject: "subject-second", Message: []byte(`{"other":true}`), Attempts: 7,
		LastError: "boom", NextAttemptAt: at(60),
	}
	record(t, h.s, second, ledger.Duplicate)
	assertSame(t, "after a duplicate Record", before, get(t, h.s, "dup"))
	record(t, h.s, row("dup", 1), ledger.Duplicate)
	assertSame(t, "after a second duplicate Record", before, get(t, h.s, "dup"))

	if st := stats(t, h.s); st.Size != 1 || st.Pending != 1 || !st.LastDeliveryAt.Equal(at(0)) {
		t.Errorf("Stats after duplicates = %+v, want Size 1, Pending 1, LastDeliveryAt %v", st, at(0))
	}
	// The duplicate was not stored, so neither was its key.
	other := row("dup-other", 2)
	other.Key = "key-second"
	record(t, h.s, other, ledger.Recorded)
}

func testConcurrentSameGUID(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	const n = 50
	res, ds := countResults(t, h.s, n, func(i int) *ledger.Delivery {
		d := row("same", i)
		d.Repo = fmt.Sprintf("octo-org/copy-%d", i) // tells which copy was stored
		return d
	})
	counts := tally(res)
	if counts[ledger.Recorded] != 1 || counts[ledger.Duplicate] != n-1 {
		t.Fatalf("%d concurrent Records of one GUID: %d Recorded, %d Duplicate, %d KeyTaken; want 1, %d, 0",
			n, counts[ledger.Recorded], counts[ledger.Duplicate], counts[ledger.KeyTaken], n-1)
	}
	winner := ds[slices.Index(res, ledger.Recorded)]
	if got := get(t, h.s, "same"); got.Repo != winner.Repo || got.Seq != winner.Seq {
		t.Errorf("stored row is %s (Seq %d), but the copy that got Recorded is %s (Seq %d)",
			got.Repo, got.Seq, winner.Repo, winner.Seq)
	}
	if st := stats(t, h.s); st.Size != 1 {
		t.Errorf("Stats.Size = %d after %d Records of one GUID, want 1", st.Size, n)
	}
}

func testConcurrentDistinctGUIDs(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	const n = 50
	res, ds := countResults(t, h.s, n, func(i int) *ledger.Delivery { return row(fmt.Sprintf("distinct-%02d", i), i) })
	if c := tally(res); c[ledger.Recorded] != n {
		t.Fatalf("%d concurrent Records of distinct GUIDs: %d Recorded, want all", n, c[ledger.Recorded])
	}
	seqs := map[int64]string{}
	for _, d := range ds {
		if d.Seq <= 0 {
			t.Errorf("Record(%s) set Seq = %d, want > 0", d.GUID, d.Seq)
		}
		if g, ok := seqs[d.Seq]; ok {
			t.Errorf("rows %s and %s were both given Seq %d", g, d.GUID, d.Seq)
		}
		seqs[d.Seq] = d.GUID
	}
	if st := stats(t, h.s); st.Size != n || st.Pending != n {
		t.Errorf("Stats = %+v, want Size %d, Pending %d", st, n, n)
	}
	got, err := h.s.Due(t.Context(), "", at(10_000), 0, 2*n)
	if err != nil {
		t.Fatalf("Due: %v", err)
	}
	if len(got) != n {
		t.Fatalf("Due returned %d rows, want %d", len(got), n)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("Due is not in order of arrival: %s (Seq %d) after %s (Seq %d)",
				got[i].GUID, got[i].Seq, got[i-1].GUID, got[i-1].Seq)
		}
	}
}

func testKey(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	a := row("key-a", 0)
	a.Key = "status:octo-org/octo-repo:3484a3f:ci:failure"
	record(t, h.s, a, ledger.Recorded)
	if a.State != ledger.Pending {
		t.Errorf("Recorded row's State was changed to %q, want it left %q", a.State, ledger.Pending)
	}

	b := row("key-b", 1)
	b.Key = a.Key
	record(t, h.s, b, ledger.KeyTaken)
	if b.State != ledger.Ignored {
		t.Errorf("KeyTaken: d.State = %q, want %q", b.State, ledger.Ignored)
	}
	if b.Seq <= a.Seq {
		t.Errorf("KeyTaken row got Seq %d, want > %d: it is a new row all the same", b.Seq, a.Seq)
	}
	if got := get(t, h.s, "key-b"); got.State != ledger.Ignored || got.Seq != b.Seq || got.Event != b.Event {
		t.Errorf("KeyTaken row stored as State %q Seq %d Event %q, want %q, %d, %q",
			got.State, got.Seq, got.Event, ledger.Ignored, b.Seq, b.Event)
	}
	if b.Key != "" || get(t, h.s, "key-b").Key != "" {
		t.Errorf("KeyTaken row kept its key: a row that says nothing claims nothing")
	}
	if got := get(t, h.s, "key-a"); got.State != ledger.Pending {
		t.Errorf("key holder is %q after a KeyTaken, want still %q", got.State, ledger.Pending)
	}
	if got := due(t, h.s, at(100), 0, 10); !slices.Equal(got, []string{"key-a"}) {
		t.Errorf("Due = %v, want only the key holder [key-a]", got)
	}

	// No key is nobody's key.
	record(t, h.s, row("nokey-c", 2), ledger.Recorded)
	record(t, h.s, row("nokey-d", 3), ledger.Recorded)

	// The GUID check comes first: a redelivery is a Duplicate, not a KeyTaken.
	redelivered := row("key-a", 4)
	redelivered.Key = a.Key
	record(t, h.s, redelivered, ledger.Duplicate)
	redeliveredB := row("key-b", 5)
	redeliveredB.Key = a.Key
	record(t, h.s, redeliveredB, ledger.Duplicate)

	// The key stays taken once its holder is finished: it was said.
	finish(t, h.s, "key-a", ledger.Delivered, 1, "")
	e := withState(row("key-e", 6), ledger.Filtered)
	e.Key = a.Key
	record(t, h.s, e, ledger.KeyTaken)
	if got := get(t, h.s, "key-e"); got.State != ledger.Ignored {
		t.Errorf("KeyTaken row given as %q stored as %q, want %q", ledger.Filtered, got.State, ledger.Ignored)
	}

	f := row("key-f", 7)
	f.Key = "another key"
	record(t, h.s, f, ledger.Recorded)
	if got := due(t, h.s, at(100), 0, 10); !slices.Equal(got, []string{"nokey-c", "nokey-d", "key-f"}) {
		t.Errorf("Due = %v, want [nokey-c nokey-d key-f]", got)
	}
}

func testKeyConcurrent(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	const n = 20
	res, ds := countResults(t, h.s, n, func(i int) *ledger.Delivery {
		d := row(fmt.Sprintf("ck-%02d", i), i)
		d.Key = "check_suite:118578147"
		return d
	})
	c := tally(res)
	if c[ledger.Recorded] != 1 || c[ledger.KeyTaken] != n-1 {
		t.Fatalf("%d concurrent Records with one Key: %d Recorded, %d KeyTaken, %d Duplicate; want 1, %d, 0",
			n, c[ledger.Recorded], c[ledger.KeyTaken], c[ledger.Duplicate], n-1)
	}
	winner := ds[slices.Index(res, ledger.Recorded)].GUID
	for i, d := range ds {
		if res[i] == ledger.KeyTaken && d.State != ledger.Ignored {
			t.Errorf("KeyTaken %s: d.State = %q, want %q", d.GUID, d.State, ledger.Ignored)
		}
	}
	if got := due(t, h.s, at(100), 0, 2*n); !slices.Equal(got, []string{winner}) {
		t.Errorf("Due = %v, want only the row that took the key, [%s]", got, winner)
	}
	if st := stats(t, h.s); st.Size != n || st.Pending != 1 {
		t.Errorf("Stats = %+v, want Size %d, Pending 1", st, n)
	}
}

// fullRow sets every field a caller sets (all but Seq), with text that
// trips up careless quoting: quotes, newlines, <, &, non-ASCII.
func fullRow() ledger.Delivery {
	return ledger.Delivery{
		GUID:          "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		Event:         "workflow_run",
		ReceivedAt:    base.Add(1500 * time.Millisecond),
		Repo:          "Octo-Org/octo-repo",
		Ref:           "refs/heads/feature/ünïcode-'quote'",
		Workflow:      ".github/workflows/ci.yml",
		Status:        "completed",
		Conclusion:    "failure",
		URL:           "https://github.com/octo-org/octo-repo/actions/runs/30433642?a=1&b=<2>",
		Attempts:      2,
		LastError:     "slack: 500 Internal Server Error: \"oops\"\nsecond line",
		Action:        "completed",
		State:         ledger.Pending,
		Key:           "workflow_run:octo-org/octo-repo:30433642",
		Subject:       "check_suite:118578147",
		Message:       []byte(`{"kind":"workflow_run","title":"Fix \"flaky\" <ledger> test ✅","number":163}`),
		NextAttemptAt: base.Add(90*time.Second + 250*time.Millisecond),
		Destination:   "platform-live",
	}
}

func testRoundTrip(t *testing.T, open Opener) {
	full := fullRow()
	v := reflect.ValueOf(full)
	for i := range v.NumField() {
		if name := v.Type().Field(i).Name; name != "Seq" && v.Field(i).IsZero() {
			t.Fatalf("the fixture leaves Delivery.%s zero; give it a value so that it is round-tripped", name)
		}
	}
	h := newHarness(t, open, bigLimit)

	d := full
	d.Message = slices.Clone(full.Message)
	record(t, h.s, &d, ledger.Recorded)
	want := full
	want.Seq = d.Seq
	if diffs := diff(want, d); len(diffs) > 0 {
		t.Errorf("Record changed the caller's row beyond Seq: %v", diffs)
	}
	// The store keeps its own copy of the message, not the caller's slice.
	d.Message[0] = 'X'
	got := get(t, h.s, full.GUID)
	assertSame(t, "Get after Record", want, got)
	got.Message[0] = 'Y'
	assertSame(t, "Get after changing a returned message", want, get(t, h.s, full.GUID))

	// A row with nothing but the required fields keeps its zero values; an
	// instant given in another zone is the same instant when read back.
	minimal := ledger.Delivery{
		GUID:       "minimal",
		Event:      "ping",
		ReceivedAt: time.Date(2024, time.May, 17, 11, 30, 1, 456_000_000, time.FixedZone("CEST", 2*60*60)),
		State:      ledger.Ignored,
	}
	m := minimal
	record(t, h.s, &m, ledger.Recorded)
	minimal.Seq = m.Seq
	assertSame(t, "Get of a minimal row", minimal, get(t, h.s, "minimal"))

	ds, err := h.s.Due(t.Context(), full.Destination, at(10_000), 0, 10)
	if err != nil {
		t.Fatalf("Due: %v", err)
	}
	if len(ds) != 1 {
		t.Fatalf("Due returned %v, want [%s]", guids(ds), full.GUID)
	}
	assertSame(t, "Due", want, ds[0])
	ds, err = h.s.Subject(t.Context(), full.Subject)
	if err != nil {
		t.Fatalf("Subject: %v", err)
	}
	if len(ds) != 1 {
		t.Fatalf("Subject returned %v, want [%s]", guids(ds), full.GUID)
	}
	assertSame(t, "Subject", want, ds[0])

	h.reopen()
	assertSame(t, "Get after a restart", want, get(t, h.s, full.GUID))
	assertSame(t, "Get of a minimal row after a restart", minimal, get(t, h.s, "minimal"))
}

func testStatesRoundTrip(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	states := []ledger.State{ledger.Pending, ledger.Delivered, ledger.Failed, ledger.Filtered, ledger.Ignored}
	for i, s := range states {
		record(t, h.s, withState(row("state-"+string(s), i), s), ledger.Recorded)
	}
	h.reopen()
	for _, s := range states {
		if got := get(t, h.s, "state-"+string(s)); got.State != s {
			t.Errorf("row recorded as %q reads back as %q", s, got.State)
		}
	}
	if st := stats(t, h.s); st.Size != 5 || st.Pending != 1 || st.Failed != 1 {
		t.Errorf("Stats = %+v, want Size 5, Pending 1, Failed 1", st)
	}
}

func testGetUnknown(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	for _, g := range []string{"nope", ""} {
		if _, err := h.s.Get(t.Context(), g); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("Get(%q) on an empty store: error %v, want ErrNotFound", g, err)
		}
	}
	record(t, h.s, row("known", 0), ledger.Recorded)
	if _, err := h.s.Get(t.Context(), "nope"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("Get(nope): error %v, want ErrNotFound", err)
	}
}

func testDue(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	now := at(100)
	if got := due(t, h.s, now, 0, 10); len(got) != 0 {
		t.Fatalf("Due on an empty store = %v", got)
	}
	next := func(d *ledger.Delivery, n time.Time) *ledger.Delivery { d.NextAttemptAt = n; return d }
	for _, d := range []*ledger.Delivery{
		row("p1", 0), // zero NextAttemptAt: due at once
		next(row("p2", 1), now.Add(-time.Second)),
		withState(row("delivered", 2), ledger.Delivered),
		next(row("p3-later", 3), now.Add(time.Hour)),
		withState(row("filtered", 4), ledger.Filtered),
		withState(row("ignored", 5), ledger.Ignored),
		withState(row("failed", 6), ledger.Failed),
		next(row("p4-now", 7), now), // "not after now"
		row("p5", 8),
	} {
		record(t, h.s, d, ledger.Recorded)
	}
	for _, c := range []struct {
		now   time.Time
		limit int
		want  []string
	}{
		{now, 100, []string{"p1", "p2", "p4-now", "p5"}},
		{now, 2, []string{"p1", "p2"}},
		{now, 1, []string{"p1"}},
		{now.Add(2 * time.Hour), 100, []string{"p1", "p2", "p3-later", "p4-now", "p5"}},
		{now.Add(-time.Millisecond), 100, []string{"p1", "p2", "p5"}},
		{base.Add(-24 * time.Hour), 100, []string{"p1", "p5"}},
	} {
		if got := due(t, h.s, c.now, 0, c.limit); !slices.Equal(got, c.want) {
			t.Errorf("Due(now%+v, 0, %d) = %v, want %v", c.now.Sub(now), c.limit, got, c.want)
		}
	}
	ds, err := h.s.Due(t.Context(), "", now, 0, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Due(now, 1) = %v, %v", guids(ds), err)
	}
	assertSame(t, "row returned by Due", get(t, h.s, "p1"), ds[0])
}

func testDueSkipsRescheduled(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	now := at(100)
	for i := range 5 {
		record(t, h.s, row(fmt.Sprintf("r%d", i), i), ledger.Recorded)
	}
	if err := h.s.Reschedule(t.Context(), "r0", 1, "slack: 500", now.Add(time.Minute)); err != nil {
		t.Fatalf("Reschedule(r0): %v", err)
	}
	if got := due(t, h.s, now, 0, 2); !slices.Equal(got, []string{"r1", "r2"}) {
		t.Errorf("Due(now, 2) with r0 waiting = %v, want [r1 r2]: a failing row must not hold up the others", got)
	}
	if err := h.s.Reschedule(t.Context(), "r1", 1, "slack: 500", now.Add(time.Minute)); err != nil {
		t.Fatalf("Reschedule(r1): %v", err)
	}
	if got := due(t, h.s, now, 0, 2); !slices.Equal(got, []string{"r2", "r3"}) {
		t.Errorf("Due(now, 2) with r0, r1 waiting = %v, want [r2 r3]", got)
	}
	if got := due(t, h.s, now.Add(time.Minute), 0, 10); !slices.Equal(got, []string{"r0", "r1", "r2", "r3", "r4"}) {
		t.Errorf("Due once the wait is over = %v, want every row in order of arrival", got)
	}
}

func testDueCursor(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	now := at(100)
	seq := map[string]int64{}
	for _, d := range []*ledger.Delivery{
		row("c0", 0), row("c1", 1),
		withState(row("c2-done", 2), ledger.Delivered),
		row("c3", 3), row("c4", 4), row("c5", 5), row("c6", 6),
	} {
		record(t, h.s, d, ledger.Recorded)
		seq[d.GUID] = d.Seq
	}
	if got := due(t, h.s, now, seq["c1"], 10); !slices.Equal(got, []string{"c3", "c4", "c5", "c6"}) {
		t.Errorf("Due(after c1's Seq) = %v, want [c3 c4 c5 c6]", got)
	}
	if got := due(t, h.s, now, seq["c6"], 10); len(got) != 0 {
		t.Errorf("Due(after the last Seq) = %v, want none", got)
	}
	// A cursor on a row that is no longer pending works all the same.
	if got := due(t, h.s, now, seq["c2-done"], 10); !slices.Equal(got, []string{"c3", "c4", "c5", "c6"}) {
		t.Errorf("Due(after c2-done's Seq) = %v, want [c3 c4 c5 c6]", got)
	}

	// The worker's walk: page by page, rescheduling what fails; a row it
	// rescheduled to now is not seen again in the same pass, and every due
	// row is seen exactly once.
	if err := h.s.Reschedule(t.Context(), "c4", 1, "slack: 500", now.Add(time.Hour)); err != nil {
		t.Fatalf("Reschedule(c4): %v", err)
	}
	var seen []string
	var after int64
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatalf("the walk does not end: seen %v", seen)
		}
		ds, err := h.s.Due(t.Context(), "", now, after, 2)
		if err != nil {
			t.Fatalf("Due(after %d): %v", after, err)
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			seen = append(seen, d.GUID)
			if err := h.s.Reschedule(t.Context(), d.GUID, d.Attempts+1, "slack: 500", time.Time{}); err != nil {
				t.Fatalf("Reschedule(%s): %v", d.GUID, err)
			}
		}
		after = ds[len(ds)-1].Seq
	}
	if want := []string{"c0", "c1", "c3", "c5", "c6"}; !slices.Equal(seen, want) {
		t.Errorf("walking Due page by page saw %v, want %v", seen, want)
	}
}

func testFinish(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	ctx := t.Context()
	for i, g := range []string{"p", "q", "r"} {
		d := row(g, i)
		d.NextAttemptAt = at(50)
		record(t, h.s, d, ledger.Recorded)
	}
	record(t, h.s, withState(row("ig", 3), ledger.Ignored), ledger.Recorded)

	before := get(t, h.s, "p")
	finish(t, h.s, "p", ledger.Delivered, 1, "")
	got := get(t, h.s, "p")
	want := before
	want.State, want.Attempts, want.LastError = ledger.Delivered, 1, ""
	want.NextAttemptAt = got.NextAttemptAt // the contract leaves it to the backend
	assertSame(t, "Get after Finish(Delivered)", want, got)
	if !got.Delivered() {
		t.Errorf("Delivered() = false after Finish(Delivered)")
	}

	finish(t, h.s, "q", ledger.Failed, 3, "slack: 404 channel_not_found")
	if got := get(t, h.s, "q"); got.State != ledger.Failed || got.Attempts != 3 || got.LastError != "slack: 404 channel_not_found" {
		t.Errorf("after Finish(Failed, 3, ...): State %q Attempts %d LastError %q", got.State, got.Attempts, got.LastError)
	}
	if got := due(t, h.s, at(1000), 0, 10); !slices.Equal(got, []string{"r"}) {
		t.Errorf("Due = %v, want [r]: finished rows are not due", got)
	}
	if st := stats(t, h.s); st.Pending != 1 || st.Failed != 1 || st.Size != 4 {
		t.Errorf("Stats = %+v, want Size 4, Pending 1, Failed 1", st)
	}

	if err := h.s.Finish(ctx, "unknown", ledger.Delivered, 1, ""); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("Finish(unknown): error %v, want ErrNotFound", err)
	}
	p := get(t, h.s, "p")
	if err := h.s.Finish(ctx, "p", ledger.Failed, 9, "again"); !errors.Is(err, ledger.ErrNotPending) {
		t.Errorf("Finish of a finished row: error %v, want ErrNotPending", err)
	}
	assertSame(t, "finished row after a second Finish", p, get(t, h.s, "p"))
	if err := h.s.Finish(ctx, "ig", ledger.Delivered, 1, ""); !errors.Is(err, ledger.ErrNotPending) {
		t.Errorf("Finish of a row recorded as ignored: error %v, want ErrNotPending", err)
	}

	// Finish ends a row as Delivered or Failed and nothing else.
	r := get(t, h.s, "r")
	for _, s := range []ledger.State{ledger.Pending, ledger.Filtered, ledger.Ignored, "bogus"} {
		if err := h.s.Finish(ctx, "r", s, 1, ""); err == nil {
			t.Errorf("Finish(r, %q) succeeded, want an error", s)
		}
	}
	assertSame(t, "row after refused Finishes", r, get(t, h.s, "r"))
}

func testReschedule(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	ctx := t.Context()
	now := at(100)
	record(t, h.s, row("p", 0), ledger.Recorded)
	record(t, h.s, row("q", 1), ledger.Recorded)
	record(t, h.s, withState(row("ig", 2), ledger.Ignored), ledger.Recorded)

	before := get(t, h.s, "p")
	next := now.Add(30 * time.Second)
	if err := h.s.Reschedule(ctx, "p", 1, "slack: 503", next); err != nil {
		t.Fatalf("Reschedule: %v", err)
	}
	want := before
	want.Attempts, want.LastError, want.NextAttemptAt = 1, "slack: 503", next
	assertSame(t, "Get after Reschedule", want, get(t, h.s, "p"))
	if got := due(t, h.s, now, 0, 10); !slices.Equal(got, []string{"q"}) {
		t.Errorf("Due(now) = %v, want [q]: p waits until %v", got, next)
	}
	if got := due(t, h.s, next, 0, 10); !slices.Equal(got, []string{"p", "q"}) {
		t.Errorf("Due(next) = %v, want [p q]", got)
	}

	// A zero time means "at once", as it does for a new row.
	if err := h.s.Reschedule(ctx, "p", 2, "timeout", time.Time{}); err != nil {
		t.Fatalf("Reschedule(zero time): %v", err)
	}
	if got := get(t, h.s, "p"); !got.NextAttemptAt.IsZero() || got.Attempts != 2 || got.LastError != "timeout" || got.State != ledger.Pending {
		t.Errorf("after Reschedule(2, timeout, zero): %+v", got)
	}
	if got := due(t, h.s, now, 0, 10); !slices.Equal(got, []string{"p", "q"}) {
		t.Errorf("Due(now) = %v, want [p q]", got)
	}

	if err := h.s.Reschedule(ctx, "unknown", 1, "", next); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("Reschedule(unknown): error %v, want ErrNotFound", err)
	}
	finish(t, h.s, "q", ledger.Delivered, 1, "")
	q := get(t, h.s, "q")
	if err := h.s.Reschedule(ctx, "q", 5, "late", next); !errors.Is(err, ledger.ErrNotPending) {
		t.Errorf("Reschedule of a finished row: error %v, want ErrNotPending", err)
	}
	assertSame(t, "finished row after a refused Reschedule", q, get(t, h.s, "q"))
	if err := h.s.Reschedule(ctx, "ig", 1, "", next); !errors.Is(err, ledger.ErrNotPending) {
		t.Errorf("Reschedule of a row recorded as ignored: error %v, want ErrNotPending", err)
	}
}

func testSubject(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	const a, b = "check_suite:1", "check_suite:2"
	subj := func(d *ledger.Delivery, s string) *ledger.Delivery { d.Subject = s; return d }
	for _, d := range []*ledger.Delivery{
		subj(row("s1", 0), a),
		subj(row("x", 1), b),
		subj(row("s2", 2), a),
		row("none", 3),
		subj(withState(row("s3", 4), ledger.Delivered), a),
		subj(withState(row("s4", 5), ledger.Ignored), a),
	} {
		record(t, h.s, d, ledger.Recorded)
	}
	finish(t, h.s, "s1", ledger.Delivered, 1, "")
	for _, c := range []struct {
		subject string
		want    []string
	}{
		{a, []string{"s1", "s2", "s3", "s4"}},
		{b, []string{"x"}},
		{"check_suite:3", nil},
	} {
		ds, err := h.s.Subject(t.Context(), c.subject)
		if err != nil {
			t.Fatalf("Subject(%s): %v", c.subject, err)
		}
		if got := guids(ds); !slices.Equal(got, c.want) {
			t.Errorf("Subject(%s) = %v, want %v", c.subject, got, c.want)
		}
		for _, d := range ds {
			assertSame(t, "row returned by Subject", get(t, h.s, d.GUID), d)
		}
	}
}

func testStats(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	if st := stats(t, h.s); st.Size != 0 || st.Pending != 0 || st.Failed != 0 || !st.LastDeliveryAt.IsZero() {
		t.Errorf("Stats of an empty store = %+v, want all zero", st)
	}
	for i, d := range []*ledger.Delivery{
		row("p1", 0), row("p2", 1), row("p3", 2),
		withState(row("d", 3), ledger.Delivered),
		withState(row("f", 4), ledger.Failed),
		withState(row("i", 5), ledger.Ignored),
		withState(row("last", 6), ledger.Filtered),
	} {
		record(t, h.s, d, ledger.Recorded)
		if st := stats(t, h.s); st.Size != i+1 || !st.LastDeliveryAt.Equal(at(i)) {
			t.Errorf("after %d rows: Stats = %+v, want Size %d, LastDeliveryAt %v", i+1, st, i+1, at(i))
		}
	}
	check := func(when string, size, pending, failed int) {
		t.Helper()
		st := stats(t, h.s)
		if st.Size != size || st.Pending != pending || st.Failed != failed || !st.LastDeliveryAt.Equal(at(6)) {
			t.Errorf("%s: Stats = %+v, want Size %d, Pending %d, Failed %d, LastDeliveryAt %v",
				when, st, size, pending, failed, at(6))
		}
	}
	check("after recording", 7, 3, 1)
	finish(t, h.s, "p1", ledger.Failed, 3, "slack: 500")
	check("after Finish(p1, Failed)", 7, 2, 2)
	finish(t, h.s, "p2", ledger.Delivered, 1, "")
	check("after Finish(p2, Delivered)", 7, 1, 2)
	record(t, h.s, withState(row("p3", 60), ledger.Failed), ledger.Duplicate)
	check("after a duplicate", 7, 1, 2)
}

// checkPruned checks the size bound of DESIGN.md and that no pending row was
// pruned; it returns which of the GUIDs are still stored.
func checkPruned(t *testing.T, s ledger.Store, limit int, pending []string, all []string) map[string]bool {
	t.Helper()
	st := stats(t, s)
	if st.Pending != len(pending) {
		t.Errorf("Stats.Pending = %d, want %d: a row still owed to Slack is never pruned", st.Pending, len(pending))
	}
	if st.Size > limit+st.Pending {
		t.Errorf("Stats.Size = %d, want at most LEDGER_LIMIT %d + %d pending", st.Size, limit, st.Pending)
	}
	kept := map[string]bool{}
	for _, g := range all {
		if exists(t, s, g) {
			kept[g] = true
		}
	}
	for _, g := range pending {
		if !kept[g] {
			t.Errorf("pending row %s was pruned", g)
		}
	}
	if len(kept) != st.Size {
		t.Errorf("Stats.Size = %d, but %d of the recorded rows can be read", st.Size, len(kept))
	}
	return kept
}

func testPruneFinished(t *testing.T, open Opener) {
	const limit = 5
	h := newHarness(t, open, limit)
	finishedStates := []ledger.State{ledger.Delivered, ledger.Ignored, ledger.Filtered}
	var all, pending, finished []string
	for i := range 13 {
		g := fmt.Sprintf("row-%02d", i)
		d := row(g, i)
		if i%4 == 1 { // rows 1, 5, 9: interleaved, so that pruning must skip them
			pending = append(pending, g)
		} else {
			d.State = finishedStates[len(finished)%len(finishedStates)]
			finished = append(finished, g)
		}
		all = append(all, g)
		record(t, h.s, d, ledger.Recorded)
		checkPruned(t, h.s, limit, pending, all)
	}
	kept := checkPruned(t, h.s, limit, pending, all)
	if len(kept) < limit {
		t.Errorf("%d rows kept, want at least LEDGER_LIMIT %d: only rows beyond the limit are pruned", len(kept), limit)
	}
	// Pruning goes oldest first: the finished rows kept are the newest ones.
	for i, g := range finished {
		if kept[g] {
			for _, later := range finished[i+1:] {
				if !kept[later] {
					t.Errorf("finished row %s was pruned while the older %s was kept", later, g)
				}
			}
			break
		}
	}
	if newest := finished[len(finished)-1]; !kept[newest] {
		t.Errorf("the newest finished row %s was pruned", newest)
	}
	if got := due(t, h.s, at(1000), 0, 100); !slices.Equal(got, pending) {
		t.Errorf("Due = %v, want every pending row %v", got, pending)
	}
	// A pruned GUID is forgotten: its redelivery is new.
	if kept[finished[0]] {
		t.Fatalf("the oldest finished row %s was not pruned", finished[0])
	}
	record(t, h.s, row(finished[0], 20), ledger.Recorded)
	if got := get(t, h.s, finished[0]); got.State != ledger.Pending {
		t.Errorf("re-recorded %s has State %q, want %q", finished[0], got.State, ledger.Pending)
	}
}

func testPrunePendingKept(t *testing.T, open Opener) {
	const limit = 5
	h := newHarness(t, open, limit)
	var all, pending []string
	for i := range 8 {
		g := fmt.Sprintf("p%d", i)
		record(t, h.s, row(g, i), ledger.Recorded)
		all, pending = append(all, g), append(pending, g)
		checkPruned(t, h.s, limit, pending, all)
	}
	if got := due(t, h.s, at(1000), 0, 100); !slices.Equal(got, pending) {
		t.Fatalf("Due = %v, want all 8 pending rows beyond LEDGER_LIMIT %d", got, limit)
	}
	for i := range 2 {
		g := fmt.Sprintf("done%d", i)
		record(t, h.s, withState(row(g, 10+i), ledger.Delivered), ledger.Recorded)
		all = append(all, g)
		checkPruned(t, h.s, limit, pending, all)
	}
	// Finish prunes too: as rows stop being owed, the ledger shrinks back.
	for len(pending) > 0 {
		finish(t, h.s, pending[0], ledger.Delivered, 1, "")
		pending = pending[1:]
		checkPruned(t, h.s, limit, pending, all)
	}
	if st := stats(t, h.s); st.Size != limit {
		t.Errorf("Stats.Size = %d once nothing is pending, want exactly LEDGER_LIMIT %d", st.Size, limit)
	}
}

func testSeqNeverReused(t *testing.T, open Opener) {
	// With limit 1, the newest row is the one pruned when it is finished
	// while an older row is still pending. A Seq computed as MAX(seq)+1 would
	// then hand the pruned row's Seq to the next one, and a consumer that
	// remembers how far it has read would skip that row.
	h := newHarness(t, open, 1)
	record(t, h.s, row("p1", 0), ledger.Recorded)
	p2 := row("p2", 1)
	record(t, h.s, p2, ledger.Recorded)
	finish(t, h.s, "p2", ledger.Delivered, 1, "")
	p3 := row("p3", 2)
	record(t, h.s, p3, ledger.Recorded)
	if p3.Seq <= p2.Seq {
		t.Errorf("Seq %d given to p3 after p2 had %d: Seq must keep growing even when rows are pruned", p3.Seq, p2.Seq)
	}
	finish(t, h.s, "p3", ledger.Delivered, 1, "")
	h.reopen()
	p4 := row("p4", 3)
	record(t, h.s, p4, ledger.Recorded)
	if p4.Seq <= p3.Seq {
		t.Errorf("Seq %d given to p4 after a restart, after p3 had %d: Seq must keep growing across restarts", p4.Seq, p3.Seq)
	}
}

func testRestart(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	ctx := t.Context()
	k := row("k1", 3)
	k.Key = "status:octo-org/octo-repo:3484a3f:ci:success"
	s1, s2 := row("s1", 4), row("s2", 5)
	s1.Subject, s2.Subject = "check_suite:9", "check_suite:9"
	rows := []*ledger.Delivery{
		row("p1", 0), row("p2", 1), row("d1", 2), k, s1, s2,
		withState(row("ig", 6), ledger.Ignored),
		withState(row("fl", 7), ledger.Failed),
	}
	for _, d := range rows {
		record(t, h.s, d, ledger.Recorded)
	}
	if err := h.s.Reschedule(ctx, "p2", 2, "slack: 503", at(200)); err != nil {
		t.Fatalf("Reschedule: %v", err)
	}
	finish(t, h.s, "d1", ledger.Delivered, 1, "")

	snapshot := map[string]ledger.Delivery{}
	var maxSeq int64
	for _, d := range rows {
		snapshot[d.GUID] = get(t, h.s, d.GUID)
		maxSeq = max(maxSeq, d.Seq)
	}
	before := stats(t, h.s)

	h.reopen()

	for _, d := range rows {
		assertSame(t, "Get after a restart", snapshot[d.GUID], get(t, h.s, d.GUID))
	}
	after := stats(t, h.s)
	if after.Size != before.Size || after.Pending != before.Pending || after.Failed != before.Failed ||
		!after.LastDeliveryAt.Equal(before.LastDeliveryAt) {
		t.Errorf("Stats after a restart = %+v, before = %+v", after, before)
	}
	for _, d := range rows {
		record(t, h.s, row(d.GUID, 100), ledger.Duplicate)
	}
	if got := due(t, h.s, at(100), 0, 10); !slices.Equal(got, []string{"p1", "k1", "s1", "s2"}) {
		t.Errorf("Due(before p2's retry) after a restart = %v, want [p1 k1 s1 s2]", got)
	}
	if got := due(t, h.s, at(200), 0, 10); !slices.Equal(got, []string{"p1", "p2", "k1", "s1", "s2"}) {
		t.Errorf("Due after a restart = %v, want [p1 p2 k1 s1 s2]", got)
	}
	ds, err := h.s.Subject(ctx, "check_suite:9")
	if err != nil || !slices.Equal(guids(ds), []string{"s1", "s2"}) {
		t.Errorf("Subject after a restart = %v, %v; want [s1 s2]", guids(ds), err)
	}
	taken := row("k2", 101)
	taken.Key = k.Key
	record(t, h.s, taken, ledger.KeyTaken)
	if taken.Seq <= maxSeq {
		t.Errorf("first row after a restart got Seq %d, want > %d", taken.Seq, maxSeq)
	}
	if err := h.s.Finish(ctx, "d1", ledger.Failed, 2, ""); !errors.Is(err, ledger.ErrNotPending) {
		t.Errorf("Finish of a row finished before the restart: error %v, want ErrNotPending", err)
	}
	finish(t, h.s, "p2", ledger.Delivered, 3, "")
}

func testConcurrentMixed(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	ctx := t.Context()
	const workers, each = 8, 25
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := h.s.Stats(ctx); err != nil {
				t.Errorf("Stats: %v", err)
				return
			}
			if _, err := h.s.Due(ctx, "", at(10_000), 0, 10); err != nil {
				t.Errorf("Due: %v", err)
				return
			}
			if _, err := h.s.Subject(ctx, "mixed"); err != nil {
				t.Errorf("Subject: %v", err)
				return
			}
		}
	})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				d := row(fmt.Sprintf("w%d-%02d", w, i), i)
				d.Subject = "mixed"
				if res, err := h.s.Record(ctx, d); err != nil || res != ledger.Recorded {
					t.Errorf("Record(%s) = %s, %v", d.GUID, resultName(res), err)
					return
				}
				if err := h.s.Reschedule(ctx, d.GUID, 1, "slack: 500", at(i)); err != nil {
					t.Errorf("Reschedule(%s): %v", d.GUID, err)
					return
				}
				if err := h.s.Finish(ctx, d.GUID, ledger.Delivered, 2, ""); err != nil {
					t.Errorf("Finish(%s): %v", d.GUID, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if st := stats(t, h.s); st.Size != workers*each || st.Pending != 0 {
		t.Errorf("Stats = %+v, want Size %d, Pending 0", st, workers*each)
	}
}

func testClosed(t *testing.T, open Opener) {
	h := newHarness(t, open, bigLimit)
	record(t, h.s, row("a", 0), ledger.Recorded)
	h.close()
	s, ctx := h.s, t.Context()
	for name, op := range map[string]func() error{
		"Record(new)": func() error { _, err := s.Record(ctx, row("b", 1)); return err },
		"Record(dup)": func() error { _, err := s.Record(ctx, row("a", 1)); return err },
		"Due":         func() error { _, err := s.Due(ctx, "", at(100), 0, 10); return err },
		"Finish":      func() error { return s.Finish(ctx, "a", ledger.Delivered, 1, "") },
		"Reschedule":  func() error { return s.Reschedule(ctx, "a", 1, "", at(100)) },
		"Subject":     func() error { _, err := s.Subject(ctx, "x"); return err },
		"Get":         func() error { _, err := s.Get(ctx, "a"); return err },
		"Stats":       func() error { _, err := s.Stats(ctx); return err },
	} {
		if err := noPanic(t, name+" after Close", op); err == nil {
			t.Errorf("%s after Close succeeded, want an error", name)
		}
	}
	noPanic(t, "second Close", s.Close)

	// Nothing attempted after Close reached the store.
	h.s, h.closed = h.mustOpen(), false
	if got := get(t, h.s, "a"); got.State != ledger.Pending || got.Attempts != 0 {
		t.Errorf("after Close and reopen, a = State %q Attempts %d, want untouched", got.State, got.Attempts)
	}
	if exists(t, h.s, "b") {
		t.Errorf("row b recorded after Close was stored")
	}
}

func tally(res []ledger.Result) map[ledger.Result]int {
	c := map[ledger.Result]int{}
	for _, r := range res {
		c[r]++
	}
	return c
}
