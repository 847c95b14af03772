package ledgertest

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// BenchOpener opens an empty store in dir, as Opener does for tests.
type BenchOpener func(b *testing.B, dir string, limit int) ledger.Store

// BenchRow is a row as the handler records a notifying workflow_run: the
// seed columns, a key, and a summarized message of realistic size.
func BenchRow(guid string, i int64) *ledger.Delivery {
	return &ledger.Delivery{
		GUID: guid, Event: "workflow_run", Action: "completed",
		ReceivedAt: base.Add(time.Duration(i) * time.Millisecond),
		Repo:       "octo-org/octo-repo", Ref: "main", Workflow: "CI", Status: "completed", Conclusion: "failure",
		URL:   "https://github.com/octo-org/octo-repo/actions/runs/30433642",
		State: ledger.Pending, Key: "suite:" + guid,
		Message: []byte(`{"kind":"workflow_run","outcome":"failure","title":"CI","repo":"octo-org/octo-repo",` +
			`"branch":"main","actor":"octocat","sha":"3484a3f0c6f3a3ab7b4e0e6c3f8b8d1b8e5a1c2d",` +
			`"url":"https://github.com/octo-org/octo-repo/actions/runs/30433642","number":163,` +
			`"detail":"Fix flaky ledger test","duration":252000000000}`),
	}
}

// BenchRecord measures Record on the store open opens, at the default
// LEDGER_LIMIT of 1000 (so pruning runs once the ledger is full):
//
//   - new: one caller, a new GUID each time;
//   - duplicate: one caller, a GUID already recorded;
//   - parallel: 32 callers at once, each with new GUIDs, as 32 connections
//     would call it (a backend may share one commit between them).
func BenchRecord(b *testing.B, open BenchOpener) {
	ctx := context.Background()
	var n atomic.Int64
	next := func() *ledger.Delivery {
		i := n.Add(1)
		return BenchRow("bench-"+strconv.FormatInt(i, 10), i)
	}
	b.Run("new", func(b *testing.B) {
		s := open(b, b.TempDir(), 1000)
		defer s.Close()
		b.ReportAllocs()
		for b.Loop() {
			if res, err := s.Record(ctx, next()); err != nil || res != ledger.Recorded {
				b.Fatalf("Record = %v, %v", res, err)
			}
		}
	})
	b.Run("duplicate", func(b *testing.B) {
		s := open(b, b.TempDir(), 1000)
		defer s.Close()
		d := next()
		if _, err := s.Record(ctx, d); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if res, err := s.Record(ctx, BenchRow(d.GUID, 0)); err != nil || res != ledger.Duplicate {
				b.Fatalf("Record = %v, %v", res, err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := open(b, b.TempDir(), 1000)
		defer s.Close()
		b.ReportAllocs()
		b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if res, err := s.Record(ctx, next()); err != nil || res != ledger.Recorded {
					b.Errorf("Record = %v, %v", res, err)
					return
				}
			}
		})
	})
}
