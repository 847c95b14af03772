package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// Tests of what group commit adds to the conformance suite: which rows a
// group stores when one of them fails, what a caller that gives up is
// told, and the bookkeeping (row count, WAL size) behind pruning.

func openT(t *testing.T, path string, limit int) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, limit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newRow(guid string) *ledger.Delivery {
	return &ledger.Delivery{GUID: guid, Event: "workflow_run", ReceivedAt: time.Now(), State: ledger.Pending,
		Message: []byte(`{"kind":"workflow_run"}`)}
}

func stored(t *testing.T, s *Store, guid string) bool {
	t.Helper()
	_, err := s.Get(context.Background(), guid)
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// holdWriter takes the writer's only connection, so that Record calls queue
// up and then go in as one group; release hands it back.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	tx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return func() { tx.Rollback() }
}

// waitFor polls cond; it fails the test after a generous deadline (only a
// hang takes that long).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

type outcome struct {
	res ledger.Result
	err error
}

// recordGroup records the first row alone (the writer takes it and waits for
// the connection) and the others as one group behind it.
func recordGroup(t *testing.T, s *Store, rows []*ledger.Delivery) []outcome {
	t.Helper()
	release := holdWriter(t, s)
	out := make([]outcome, len(rows))
	var wg sync.WaitGroup
	for i, d := range rows {
		wg.Go(func() { out[i].res, out[i].err = s.Record(context.Background(), d) })
		if i == 0 {
			waitFor(t, "the writer to take the first row", func() bool { return len(s.records) == 0 && s.w.Stats().WaitCount > 0 })
		}
	}
	waitFor(t, "the group to queue", func() bool { return len(s.records) == len(rows)-1 })
	release()
	wg.Wait()
	return out
}

func TestGroupOneBadRowFailsAlone(t *testing.T) {
	t.Parallel()
	for _, raise := range []string{"ABORT", "ROLLBACK", "FAIL"} {
		t.Run(raise, func(t *testing.T) {
			t.Parallel()
			s := openT(t, filepath.Join(t.TempDir(), "ledger.db"), 1000)
			// A fault injected in SQLite itself: ABORT undoes the statement,
			// ROLLBACK the whole transaction, FAIL keeps what it did so far.
			_, err := s.w.Exec(`CREATE TRIGGER inject BEFORE INSERT ON deliveries WHEN NEW.guid = 'bad'
				BEGIN SELECT RAISE(` + raise + `, 'injected fault'); END`)
			if err != nil {
				t.Fatal(err)
			}
			rows := []*ledger.Delivery{newRow("first")}
			for i := range 9 {
				if i == 4 {
					rows = append(rows, newRow("bad"))
				}
				rows = append(rows, newRow(fmt.Sprintf("good-%d", i)))
			}
			bad := rows[5]
			bad.Key = "key-of-bad"
			out := recordGroup(t, s, rows)
			seqs := map[int64]bool{}
			for i, d := range rows {
				o := out[i]
				if d == bad {
					if o.err == nil || !strings.Contains(o.err.Error(), "injected fault") {
						t.Errorf("bad row: Record = %v, %v; want the injected fault", o.res, o.err)
					}
					if d.Seq != 0 || d.State != ledger.Pending || d.Key != "key-of-bad" {
						t.Errorf("bad row's Delivery was changed: Seq %d State %q Key %q", d.Seq, d.State, d.Key)
					}
					if stored(t, s, d.GUID) {
						t.Errorf("bad row was stored")
					}
					continue
				}
				if o.err != nil || o.res != ledger.Recorded {
					t.Errorf("%s: Record = %v, %v; want Recorded: one bad row must not fail the others", d.GUID, o.res, o.err)
				}
				if !stored(t, s, d.GUID) {
					t.Errorf("%s was answered Recorded but is not stored", d.GUID)
				}
				if seqs[d.Seq] {
					t.Errorf("Seq %d given twice", d.Seq)
				}
				seqs[d.Seq] = true
			}
			// The bad row's key was not taken.
			other := newRow("other")
			other.Key = "key-of-bad"
			if res, err := s.Record(context.Background(), other); err != nil || res != ledger.Recorded {
				t.Errorf("a row with the failed row's key: %v, %v; want Recorded", res, err)
			}
		})
	}
}

func TestGroupDuplicatesWithin(t *testing.T) {
	t.Parallel()
	s := openT(t, filepath.Join(t.TempDir(), "ledger.db"), 1000)
	rows := []*ledger.Delivery{newRow("first"), newRow("same"), newRow("same"), newRow("k1"), newRow("k2")}
	rows[3].Key, rows[4].Key = "one-key", "one-key"
	out := recordGroup(t, s, rows)
	for i, o := range out {
		if o.err != nil {
			t.Fatalf("row %d (%s): %v", i, rows[i].GUID, o.err)
		}
	}
	// The group's order is the order the calls reached the writer: either
	// copy may come first.
	if out[0].res != ledger.Recorded {
		t.Errorf("first: %v, want Recorded", out[0].res)
	}
	if a, b := out[1].res, out[2].res; !(a == ledger.Recorded && b == ledger.Duplicate || a == ledger.Duplicate && b == ledger.Recorded) {
		t.Errorf("one GUID twice in a group: %v and %v, want one Recorded and one Duplicate", a, b)
	}
	holder, taker := rows[3], rows[4]
	if out[3].res == ledger.KeyTaken {
		holder, taker = taker, holder
	}
	if r := []ledger.Result{out[3].res, out[4].res}; !(r[0] == ledger.Recorded && r[1] == ledger.KeyTaken || r[0] == ledger.KeyTaken && r[1] == ledger.Recorded) {
		t.Errorf("one key twice in a group: %v and %v, want one Recorded and one KeyTaken", out[3].res, out[4].res)
	}
	if taker.State != ledger.Ignored || taker.Key != "" || holder.State != ledger.Pending || holder.Key != "one-key" {
		t.Errorf("key holder %s (%q, %q), taker %s (%q, %q); want the holder pending with the key, the taker ignored without",
			holder.GUID, holder.State, holder.Key, taker.GUID, taker.State, taker.Key)
	}
}

// A caller that gives up while its row waits for the writer is told so at
// once, and the row is not stored.
func TestGroupCallerGivesUpBeforeItsRowStarts(t *testing.T) {
	t.Parallel()
	s := openT(t, filepath.Join(t.TempDir(), "ledger.db"), 1000)
	release := holdWriter(t, s)
	first := make(chan error, 1)
	go func() { _, err := s.Record(context.Background(), newRow("first")); first <- err }()
	waitFor(t, "the writer to take the first row", func() bool { return len(s.records) == 0 && s.w.Stats().WaitCount > 0 })
	ctx, cancel := context.WithCancel(context.Background())
	late := make(chan error, 1)
	go func() { _, err := s.Record(ctx, newRow("late")); late <- err }()
	waitFor(t, "the second row to queue", func() bool { return len(s.records) == 1 })
	cancel()
	// Answered while the writer is still held: it never had the row.
	if err := <-late; !errors.Is(err, context.Canceled) {
		t.Errorf("Record whose caller gave up before its row started: %v, want context.Canceled", err)
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if stored(t, s, "late") {
		t.Errorf("the row of a caller who was told context.Canceled was stored")
	}
}

// Once the writer has started a row, the caller waits for the commit even if
// it gives up meanwhile: the answer says what happened to the row.
func TestGroupCallerGivesUpAfterItsRowStarted(t *testing.T) {
	t.Parallel()
	s := openT(t, filepath.Join(t.TempDir(), "ledger.db"), 1000)
	release := holdWriter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan outcome, 1)
	go func() { res, err := s.Record(ctx, newRow("started")); done <- outcome{res, err} }()
	// The writer has taken the row and waits for its connection.
	waitFor(t, "the writer to take the row", func() bool { return len(s.records) == 0 && s.w.Stats().WaitCount > 0 })
	cancel()
	release()
	o := <-done
	if o.err != nil || o.res != ledger.Recorded {
		t.Errorf("Record = %v, %v; want Recorded (the row was started before the caller gave up)", o.res, o.err)
	}
	if !stored(t, s, "started") {
		t.Errorf("answered Recorded but not stored")
	}
}

// Close while Records are under way: every Record is answered, and its
// answer is the truth about the row.
func TestCloseWhileRecording(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := Open(context.Background(), path, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		ok, bad []string
		wg      sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				g := fmt.Sprintf("w%d-%d", w, i)
				_, err := s.Record(context.Background(), newRow(g))
				mu.Lock()
				if err != nil {
					bad = append(bad, g)
				} else {
					ok = append(ok, g)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	waitFor(t, "some rows", func() bool { mu.Lock(); defer mu.Unlock(); return len(ok) > 50 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s = openT(t, path, 100_000)
	for _, g := range ok {
		if !stored(t, s, g) {
			t.Errorf("%s was answered Recorded before Close but is not stored", g)
		}
	}
	for _, g := range bad {
		if stored(t, s, g) {
			t.Errorf("%s was answered an error at Close but is stored", g)
		}
	}
	if len(bad) != 8 {
		t.Errorf("%d Records failed, want exactly one per writer (the first after Close)", len(bad))
	}
}

func count(t *testing.T, s *Store) (kept, real int) {
	t.Helper()
	if err := s.w.QueryRow(`SELECT (SELECT n FROM ledger_count), (SELECT count(*) FROM deliveries)`).Scan(&kept, &real); err != nil {
		t.Fatal(err)
	}
	return kept, real
}

// Pruning reads a row count kept by triggers: it follows every writer,
// heals when a ledger is opened, and a ledger from before it gets one.
func TestRowCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := Open(ctx, path, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		d := newRow(fmt.Sprintf("r%d", i))
		d.State = ledger.Delivered
		if _, err := s.Record(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// Another writer (an operator with the sqlite3 shell) deletes a row.
	if _, err := s.w.Exec(`DELETE FROM deliveries WHERE guid = 'r0'`); err != nil {
		t.Fatal(err)
	}
	if kept, real := count(t, s); kept != real || real != 3 {
		t.Errorf("count after an outside delete: kept %d, real %d, want 3", kept, real)
	}
	// A count that drifted (a REPLACE fires no delete trigger) heals at Open.
	if _, err := s.w.Exec(`UPDATE ledger_count SET n = 1000`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path, 5)
	if err != nil {
		t.Fatal(err)
	}
	if kept, real := count(t, s); kept != real {
		t.Errorf("count after Open: kept %d, real %d", kept, real)
	}
	// A ledger written before the count existed.
	if _, err := s.w.Exec(`DROP TRIGGER deliveries_counted_in; DROP TRIGGER deliveries_counted_out; DROP TABLE ledger_count`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, path, 5)
	for i := 4; i < 10; i++ {
		d := newRow(fmt.Sprintf("r%d", i))
		d.State = ledger.Delivered
		if _, err := s.Record(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if kept, real := count(t, s); kept != real || real != 5 {
		t.Errorf("count of an upgraded ledger: kept %d, real %d, want LEDGER_LIMIT 5", kept, real)
	}
}

// The writer never checkpoints after its own commits; the checkpointer and
// the restarts between writes must keep the WAL from growing with every
// commit (without them it grows by about 50 KB per commit, for good), under
// Records and under the worker's Finish calls alike.
//
// How large the WAL gets within one burst depends on how fast the disk
// commits between two checkpoints, so the test does not bound that: it
// writes in rounds with a pause after each, long enough for a checkpoint,
// and checks that later rounds reuse the WAL instead of extending it.
func TestWALStaysSmall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s := openT(t, path, 100_000)
	walSize := func() int64 {
		t.Helper()
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	const rounds, writers, perWriter = 3, 4, 75
	inRounds := func(what string, write func(round, w, i int) error) {
		t.Helper()
		var sizes []int64
		for r := range rounds {
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range perWriter {
						if err := write(r, w, i); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			time.Sleep(3 * checkpointEvery) // a checkpoint covers the round
			sizes = append(sizes, walSize())
		}
		// Each round commits as much as the first; a WAL that is never
		// restarted ends at least rounds times the first round's size.
		if last := sizes[rounds-1]; last > 2*sizes[0] {
			t.Errorf("%s: WAL after each round %v bytes: it grows with every round, it is not being restarted", what, sizes)
		}
	}
	inRounds("Records", func(r, w, i int) error {
		_, err := s.Record(ctx, newRow(fmt.Sprintf("r%d-w%d-%d", r, w, i)))
		return err
	})
	inRounds("Finish calls", func(r, w, i int) error {
		return s.Finish(ctx, fmt.Sprintf("r%d-w%d-%d", r, w, i), ledger.Delivered, 1, "")
	})
}

// Callers giving up at random moments: whatever Record answered each one
// is the truth about its row.
func TestCancellationsAreTruthful(t *testing.T) {
	t.Parallel()
	s := openT(t, filepath.Join(t.TempDir(), "ledger.db"), 100_000)
	type answer struct {
		guid string
		err  error
	}
	var (
		mu      sync.Mutex
		answers []answer
		wg      sync.WaitGroup
	)
	for w := range 16 {
		wg.Go(func() {
			for i := range 30 {
				g := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration((w*31+i*17)%2000)*time.Microsecond)
				_, err := s.Record(ctx, newRow(g))
				cancel()
				mu.Lock()
				answers = append(answers, answer{g, err})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var ok, gaveUp int
	for _, a := range answers {
		switch {
		case a.err == nil:
			ok++
			if !stored(t, s, a.guid) {
				t.Errorf("%s was answered Recorded but is not stored", a.guid)
			}
		case errors.Is(a.err, context.DeadlineExceeded):
			gaveUp++
			if stored(t, s, a.guid) {
				t.Errorf("%s was answered %v but is stored", a.guid, a.err)
			}
		default:
			t.Errorf("%s: %v", a.guid, a.err)
		}
	}
	t.Logf("%d recorded, %d given up", ok, gaveUp)
}
