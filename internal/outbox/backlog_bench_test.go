package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/slack"
)

// heapProbe is the worker's Store with a probe on Due: at each page it
// collects garbage and reads the live heap, so the largest value seen is
// what walking the backlog holds at once.
type heapProbe struct {
	Store
	pages   int
	maxLive uint64
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func (p *heapProbe) Due(ctx context.Context, destination string, now time.Time, after int64, limit int) ([]ledger.Delivery, error) {
	p.pages++
	p.maxLive = max(p.maxLive, liveHeap())
	return p.Store.Due(ctx, destination, now, after, limit)
}

// BenchmarkBacklog walks a Slack backlog of owed rows once (one op) with
// Slack answering 500 to every post, as in an outage: each row is rendered,
// posted through the real webhook client, and rescheduled. It reports the
// live heap before the walk and the most it reached during it (measured at
// every page of 64 rows, after a GC). Flat memory means the growth does not
// depend on the backlog's size. Run it with -benchtime=1x.
func BenchmarkBacklog(b *testing.B) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "internal_error", http.StatusInternalServerError)
	}))
	defer down.Close()
	msg, err := json.Marshal(event.Notification{
		Kind: "workflow_run", Outcome: event.Failure, Title: "CI", Repo: "octo-org/octo-repo", Branch: "main",
		Actor: "octocat", SHA: "3484a3f0c6f3a3ab7b4e0e6c3f8b8d1b8e5a1c2d", Number: 163,
		Detail: "Fix flaky ledger test", URL: "https://github.com/octo-org/octo-repo/actions/runs/30433642",
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			ctx := context.Background()
			for range b.N {
				b.StopTimer()
				st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "ledger.db"), 1000)
				if err != nil {
					b.Fatal(err)
				}
				// 32 writers, as a burst of deliveries would fill it.
				var wg sync.WaitGroup
				for w := range 32 {
					wg.Go(func() {
						for i := w; i < n; i += 32 {
							d := &ledger.Delivery{GUID: fmt.Sprintf("owed-%06d", i), Event: "workflow_run",
								ReceivedAt: time.Now(), State: ledger.Pending, Message: msg}
							if _, err := st.Record(ctx, d); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				probe := &heapProbe{Store: st}
				w := New(probe, []Destination{{Webhook: slack.NewWebhook(down.URL, &http.Client{})}}, metrics.New(prometheus.NewRegistry()),
					slog.New(slog.DiscardHandler), Options{MaxAttempts: 3, RetryBase: time.Hour, Rate: 1e6, Burst: 1000})
				before := liveHeap()
				b.StartTimer()
				w.lanes[0].pass(ctx, time.Now().Add(time.Minute))
				b.StopTimer()
				after := liveHeap()
				if s, err := st.Stats(ctx); err != nil || s.Pending != n {
					b.Fatalf("Stats = %+v, %v; want %d still pending", s, err, n)
				}
				if probe.pages != n/batch+1 {
					b.Fatalf("the walk read %d pages, want %d", probe.pages, n/batch+1)
				}
				st.Close()
				b.ReportMetric(float64(before)/1024, "live-KiB-before")
				b.ReportMetric(float64(probe.maxLive)/1024, "live-KiB-max")
				b.ReportMetric(float64(int64(probe.maxLive)-int64(before))/1024, "live-KiB-growth")
				b.ReportMetric(float64(after)/1024, "live-KiB-after")
				b.StartTimer()
			}
		})
	}
}
