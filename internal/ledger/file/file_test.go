package file

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/ledgertest"
)

func TestConformance(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T, dir string, limit int) ledger.Store {
		s, err := Open(filepath.Join(dir, "ledger.jsonl"), limit)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func open(t *testing.T, path string, limit int) *Store {
	t.Helper()
	s, err := Open(path, limit)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pending(guid string, i int) *ledger.Delivery {
	return &ledger.Delivery{
		GUID:       guid,
		Event:      "workflow_run",
		ReceivedAt: time.Date(2024, 5, 17, 9, 30, i, 0, time.UTC),
		State:      ledger.Pending,
		Message:    []byte(`{"title":"<b> & co"}`),
	}
}

func mustRecord(t *testing.T, s *Store, d *ledger.Delivery, want ledger.Result) {
	t.Helper()
	got, err := s.Record(t.Context(), d)
	if err != nil || got != want {
		t.Fatalf("Record(%s) = %v, %v; want %v", d.GUID, got, err, want)
	}
}

func has(t *testing.T, s *Store, guid string) bool {
	t.Helper()
	_, err := s.Get(t.Context(), guid)
	return err == nil
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func appendTo(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func lineCount(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

func TestOpenRejectsLimitBelowOne(t *testing.T) {
	for _, limit := range []int{0, -3} {
		if s, err := Open(filepath.Join(t.TempDir(), "l.jsonl"), limit); err == nil {
			s.Close()
			t.Errorf("Open with limit %d succeeded, want an error", limit)
		}
	}
}

func TestOpenCreatesFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "ledger")
	path := filepath.Join(dir, "ledger.jsonl")
	open(t, path, 10)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("folder not created: %v", err)
	}
	// The umask may take bits away, never add them.
	if perm := fi.Mode().Perm(); perm&^0o750 != 0 {
		t.Errorf("folder mode %v, want at most 0750", perm)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("ledger file not created: %v", err)
	}
}

func TestTornLastLineIsDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	s := open(t, path, 10)
	mustRecord(t, s, pending("a", 0), ledger.Recorded)
	mustRecord(t, s, pending("b", 1), ledger.Recorded)
	s.Close()
	good := fileSize(t, path)

	// A crash in the middle of writing c's line.
	appendTo(t, path, `{"put":{"guid":"c","event":"status","recei`)
	s = open(t, path, 10)
	if !has(t, s, "a") || !has(t, s, "b") || has(t, s, "c") {
		t.Fatalf("after a torn last line: a %v, b %v, c %v; want a and b only", has(t, s, "a"), has(t, s, "b"), has(t, s, "c"))
	}
	if got := fileSize(t, path); got != good {
		t.Errorf("file is %d bytes after Open, want it cut back to %d", got, good)
	}
	// The next line lands where the torn one was, not after it.
	mustRecord(t, s, pending("c", 2), ledger.Recorded)
	s.Close()
	s = open(t, path, 10)
	if !has(t, s, "c") {
		t.Errorf("row written after a torn line was lost")
	}
}

func TestPowerLossZerosAreDropped(t *testing.T) {
	// On power loss a file can come back longer than what was written,
	// the tail filled with zeros.
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	s := open(t, path, 10)
	mustRecord(t, s, pending("a", 0), ledger.Recorded)
	s.Close()
	appendTo(t, path, string(make([]byte, 4096)))
	s = open(t, path, 10)
	if !has(t, s, "a") {
		t.Fatalf("row a lost")
	}
}

func TestBadLastCompleteLineIsDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	s := open(t, path, 10)
	mustRecord(t, s, pending("a", 0), ledger.Recorded)
	s.Close()
	appendTo(t, path, "{\"put\":{\"guid\":\"b\",\x00\x00\x00\n")
	s = open(t, path, 10)
	if !has(t, s, "a") {
		t.Fatalf("row a lost")
	}
	if st, _ := s.Stats(t.Context()); st.Size != 1 {
		t.Errorf("Stats.Size = %d, want 1", st.Size)
	}
}

func TestCorruptMiddleLineNamesTheLine(t *testing.T) {
	for name, tail := range map[string]string{
		"followed by good lines": "",
		"followed by a torn one": `{"put":{"gu`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.jsonl")
			s := open(t, path, 10)
			for i, g := range []string{"a", "b", "c"} {
				mustRecord(t, s, pending(g, i), ledger.Recorded)
			}
			s.Close()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitAfter(string(b), "\n")
			if tail == "" {
				lines[1] = "{\"put\": garbage}\n"
			} else {
				lines = append(lines[:2], "{\"put\": garbage}\n", tail)
			}
			if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err = Open(path, 10)
			if err == nil {
				s.Close()
				t.Fatalf("Open of a file with a corrupt line in the middle succeeded")
			}
			wantLine := map[bool]int{true: 2, false: 3}[tail == ""]
			if want := fmt.Sprintf("%s:%d:", path, wantLine); !strings.Contains(err.Error(), want) {
				t.Errorf("Open error %q does not name %q", err, want)
			}
		})
	}
}

func TestFileStaysBounded(t *testing.T) {
	const limit, n = 100, 5000
	fsync = func(*os.File) error { return nil }
	t.Cleanup(func() { fsync = (*os.File).Sync })
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.jsonl")
	s := open(t, path, limit)
	var maxLines int
	for i := range n {
		d := pending(fmt.Sprintf("row-%04d", i), i)
		d.State = ledger.Delivered
		if i%10 == 0 {
			d.State = ledger.Pending // some rows finish later, through Finish
		}
		mustRecord(t, s, d, ledger.Recorded)
		if i%10 == 5 {
			if err := s.Finish(t.Context(), fmt.Sprintf("row-%04d", i-5), ledger.Delivered, 1, ""); err != nil {
				t.Fatalf("Finish: %v", err)
			}
		}
		maxLines = max(maxLines, lineCount(t, path))
	}
	if bound := 2*(limit+1) + compactSlack + 1; maxLines > bound {
		t.Errorf("the log reached %d lines, want at most %d for %d live rows", maxLines, bound, limit)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Size > limit+st.Pending {
		t.Errorf("Stats = %+v, want Size at most %d + pending", st, limit)
	}
	s.Close()

	s = open(t, path, limit)
	after, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after.Size != st.Size || after.Pending != st.Pending || after.Failed != st.Failed || !after.LastDeliveryAt.Equal(st.LastDeliveryAt) {
		t.Errorf("Stats after reopen = %+v, want %+v", after, st)
	}
	if !has(t, s, fmt.Sprintf("row-%04d", n-1)) {
		t.Errorf("newest row missing after compactions")
	}
	d := pending("one-more", n)
	mustRecord(t, s, d, ledger.Recorded)
	if d.Seq != n+1 {
		t.Errorf("Seq after %d rows and compactions = %d, want %d", n, d.Seq, n+1)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("folder holds %v, want only the ledger", names)
	}
}

func TestSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	s := open(t, path, 10)
	mustRecord(t, s, pending("a", 0), ledger.Recorded)
	if s2, err := Open(path, 10); err == nil {
		s2.Close()
		t.Fatalf("second Open of %s succeeded while the first is open", path)
	} else if want := fmt.Sprintf("ledger file %s is in use by another process", path); err.Error() != want {
		t.Errorf("second Open: %q, want %q", err, want)
	}
	// The lock moves with the file when compaction replaces it.
	s.mu.Lock()
	err := s.compact()
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	if s2, err := Open(path, 10); err == nil {
		s2.Close()
		t.Fatalf("second Open succeeded after a compaction")
	}
	mustRecord(t, s, pending("b", 1), ledger.Recorded)
	s.Close()
	s = open(t, path, 10)
	if !has(t, s, "a") || !has(t, s, "b") {
		t.Errorf("rows lost across compaction: a %v, b %v", has(t, s, "a"), has(t, s, "b"))
	}
}

func TestOpenLocksTheCurrentFile(t *testing.T) {
	// Another process opens the ledger just before this one compacts it and
	// closes: its open found the old file, which it can then lock, though
	// the ledger is the new one by then.
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	s := open(t, path, 10)
	mustRecord(t, s, pending("a", 0), ledger.Recorded)
	var once bool
	beforeLock = func() {
		if once {
			return
		}
		once = true
		s.mu.Lock()
		err := s.compact()
		s.mu.Unlock()
		if err != nil {
			t.Errorf("compact: %v", err)
		}
		s.Close()
	}
	t.Cleanup(func() { beforeLock = func() {} })
	s2 := open(t, path, 10)
	if !once {
		t.Fatal("the hook did not run")
	}
	// A second process opening now must find s2's lock on the live file.
	if s3, err := Open(path, 10); err == nil {
		s3.Close()
		t.Fatalf("a third Open succeeded: the second one locked a file that was no longer the ledger")
	}
	if !has(t, s2, "a") {
		t.Errorf("row a missing")
	}
}

func TestSeqSurvivesCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	s := open(t, path, 1)
	mustRecord(t, s, pending("p1", 0), ledger.Recorded)
	mustRecord(t, s, pending("p2", 1), ledger.Recorded)
	// p1 is pending, so with limit 1 the finished p2, the newest row, goes.
	if err := s.Finish(t.Context(), "p2", ledger.Delivered, 1, ""); err != nil {
		t.Fatal(err)
	}
	if has(t, s, "p2") {
		t.Fatalf("p2 was not pruned; the test needs it gone")
	}
	s.mu.Lock()
	err := s.compact()
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	s.Close()
	s = open(t, path, 1)
	d := pending("p3", 2)
	mustRecord(t, s, d, ledger.Recorded)
	if d.Seq != 3 {
		t.Errorf("Seq after compaction and restart = %d, want 3 (2 was p2's)", d.Seq)
	}
}

func TestAcknowledgedRowIsInTheFile(t *testing.T) {
	// Copying the file while the store is open is what a kill -9 right
	// after Record leaves behind.
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.jsonl")
	s := open(t, path, 10)
	mustRecord(t, s, pending("a", 0), ledger.Recorded)
	if err := s.Reschedule(t.Context(), "a", 1, "slack: 500", time.Date(2024, 5, 17, 10, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(dir, "crashed.jsonl")
	if err := os.WriteFile(crashed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c := open(t, crashed, 10)
	got, err := c.Get(t.Context(), "a")
	if err != nil {
		t.Fatalf("acknowledged row missing from the file: %v", err)
	}
	if got.Attempts != 1 || got.State != ledger.Pending {
		t.Errorf("row from the file: Attempts %d State %q, want 1, pending", got.Attempts, got.State)
	}
}

func TestStaleCompactionFileIsRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.jsonl")
	stale := filepath.Join(dir, "ledger.jsonl.compact-123")
	if err := os.WriteFile(stale, []byte("half a compaction"), 0o600); err != nil {
		t.Fatal(err)
	}
	open(t, path, 10)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale compaction file still there: %v", err)
	}
}

func TestRecordRejectsBadRows(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ledger.jsonl"), 10)
	for _, d := range []*ledger.Delivery{
		nil,
		{Event: "ping", State: ledger.Ignored},
		{GUID: "x", Event: "ping"},
		{GUID: "y", Event: "ping", State: "bogus"},
	} {
		if _, err := s.Record(t.Context(), d); err == nil {
			t.Errorf("Record(%+v) succeeded, want an error", d)
		}
	}
}

// Streaks are not rows: a compaction keeps them (pruning would forget a
// broken branch), and a redelivery writes no line.
func TestStreaksSurviveCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	s := open(t, path, 2)
	ctx := t.Context()
	fail := ledger.StreakRun{ID: "1", Attempt: 1, Number: 1, Result: ledger.Fail, At: time.Unix(100, 0).UTC()}
	if v, err := s.Streak(ctx, "wf:o/r:ci.yml:main", fail); err != nil || v.Verdict != ledger.VerdictFailed {
		t.Fatalf("Streak: %+v, %v", v, err)
	}
	s.mu.Lock()
	lines := s.lines
	s.mu.Unlock()
	if _, err := s.Streak(ctx, "wf:o/r:ci.yml:main", fail); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	if s.lines != lines {
		t.Errorf("a redelivered run wrote %d more lines", s.lines-lines)
	}
	s.mu.Unlock()
	// Enough finished rows to prune and compact several times over.
	for i := range 3 * compactSlack {
		mustRecord(t, s, &ledger.Delivery{GUID: fmt.Sprint("r", i), Event: "push", ReceivedAt: time.Unix(int64(i), 0), State: ledger.Ignored}, ledger.Recorded)
	}
	s.Close()
	s = open(t, path, 2)
	pass := ledger.StreakRun{ID: "2", Attempt: 1, Number: 2, Result: ledger.Pass, At: time.Unix(400, 0).UTC()}
	if v, err := s.Streak(ctx, "wf:o/r:ci.yml:main", pass); err != nil || v.Verdict != ledger.VerdictFixed || v.BrokenRuns != 1 {
		t.Errorf("after compactions and a restart: %+v, %v; want fixed after 1 run", v, err)
	}
}

// A snapshot reads a ledger another Store holds, changes nothing, and
// leaves a line being written alone.
func TestSnapshot(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	s, err := Open(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := &ledger.Delivery{GUID: "a", Event: "ping", ReceivedAt: time.Now(), State: ledger.Ignored}
	if _, err := s.Record(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	// A write under way: half a line at the end.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"put":{"guid":"b"`)
	f.Close()
	before, _ := os.ReadFile(path)

	snap, err := Snapshot(path)
	if err != nil {
		t.Fatalf("Snapshot of a held ledger: %v", err)
	}
	defer snap.Close()
	if got, err := snap.Get(t.Context(), "a"); err != nil || got.GUID != "a" {
		t.Errorf("snapshot Get(a) = %+v, %v", got, err)
	}
	if _, err := snap.Record(t.Context(), &ledger.Delivery{GUID: "c", Event: "ping", ReceivedAt: time.Now(), State: ledger.Ignored}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Record on a snapshot = %v, want ErrReadOnly", err)
	}
	if err := snap.Requeue(t.Context(), "a"); err == nil {
		t.Error("Requeue on a snapshot succeeded")
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("a snapshot changed the file (it must not cut the line being written)")
	}
}
