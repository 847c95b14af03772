package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/ledgertest"
)

func benchOpen(b *testing.B, dir string, limit int) ledger.Store {
	s, err := Open(context.Background(), filepath.Join(dir, "ledger.db"), limit)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkRecord: the SQLite ledger as shipped (WAL, synchronous=FULL).
func BenchmarkRecord(b *testing.B) {
	ledgertest.BenchRecord(b, benchOpen)
}

// prefill bulk-inserts n finished rows (seq 1..n) in one transaction, as a
// ledger that has run for a long time under LEDGER_LIMIT=n holds them:
// every tenth row still holds a key, every fifth has a subject.
func prefill(b *testing.B, s *Store, n int) {
	b.Helper()
	ctx := context.Background()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO deliveries
		(guid, event, received_at, repo, ref, workflow, status, conclusion, url,
		 delivered, seq, action, state, dedup_key, subject, message)
		VALUES (?, 'workflow_run', ?, 'octo-org/octo-repo', 'main', 'CI', 'completed', 'success',
		 'https://github.com/octo-org/octo-repo/actions/runs/30433642', 1, ?, 'completed', 'delivered', ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	msg := ledgertest.BenchRow("x", 0).Message
	t0 := time.Date(2024, 5, 17, 9, 30, 0, 0, time.UTC)
	for i := 1; i <= n; i++ {
		guid := fmt.Sprintf("prefill-%09d", i)
		var key, subject any
		if i%10 == 0 {
			key = "suite:" + guid
		}
		if i%5 == 0 {
			subject = "check_suite:" + strconv.Itoa(i/50)
		}
		if _, err := stmt.ExecContext(ctx, guid, t0.Add(time.Duration(i)*time.Millisecond).Format(timeLayout), i, key, subject, msg); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_seq (id, seq) VALUES (1, ?)`, n); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRecordAtSize: how Record's cost grows with the ledger. The
// ledger is opened with a limit equal to its size (LEDGER_LIMIT=n) and
// prefilled to that size, so every new row also prunes the oldest one, as
// it does in a full ledger. insert is a new GUID (with a key); dedup is a
// redelivery of a GUID recorded long ago.
func BenchmarkRecordAtSize(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			s, err := Open(ctx, filepath.Join(b.TempDir(), "ledger.db"), n)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			start := time.Now()
			prefill(b, s, n)
			b.Logf("prefilled %d rows in %v", n, time.Since(start).Round(time.Millisecond))
			var i int64
			b.Run("insert", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					i++
					d := ledgertest.BenchRow("new-"+strconv.FormatInt(i, 10), i)
					d.State = ledger.Ignored
					if res, err := s.Record(ctx, d); err != nil || res != ledger.Recorded {
						b.Fatalf("Record = %v, %v", res, err)
					}
				}
			})
			b.Run("dedup", func(b *testing.B) {
				// Rows 1..n were prefilled, n+1..n+i inserted; the newest n/2 are there.
				b.ReportAllocs()
				var j int64
				for b.Loop() {
					j++
					r := int64(n) + i - j%int64(n/2)
					guid := fmt.Sprintf("prefill-%09d", r)
					if r > int64(n) {
						guid = "new-" + strconv.FormatInt(r-int64(n), 10)
					}
					d := ledgertest.BenchRow(guid, 0)
					if res, err := s.Record(ctx, d); err != nil || res != ledger.Duplicate {
						b.Fatalf("Record = %v, %v", res, err)
					}
				}
			})
			if st, err := s.Stats(ctx); err != nil || st.Size != n {
				b.Fatalf("Stats = %+v, %v; want Size %d", st, err, n)
			}
		})
	}
}
