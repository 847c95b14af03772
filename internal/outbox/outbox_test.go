package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/slack"
	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

type fixture struct {
	store   *sqlite.Store
	slack   *slacktest.Server
	metrics *metrics.Metrics
	logs    *syncBuffer
	worker  *Worker
	stop    func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var fast = Options{MaxAttempts: 3, RetryBase: 50 * time.Millisecond, Rate: 1000, Burst: 5, PollInterval: 20 * time.Millisecond}

func newFixture(t *testing.T, dir string, opts Options, logOnly bool) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "ledger.db"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: st, slack: slacktest.New(t), metrics: metrics.New(prometheus.NewRegistry()), logs: &syncBuffer{}}
	var poster Poster
	if !logOnly {
		poster = slack.NewWebhook(f.slack.URL(), &http.Client{})
	}
	f.worker = New(st, []Destination{{Webhook: poster}}, f.metrics, slog.New(slog.NewJSONHandler(f.logs, nil)), opts)
	t.Cleanup(func() {
		if f.stop != nil {
			f.stop()
		}
		st.Close()
		if strings.Contains(f.logs.String(), "SECRETx") {
			t.Errorf("the webhook URL reached a log line:\n%s", f.logs)
		}
	})
	return f
}

// start runs the worker until the test ends or stop is called.
func (f *fixture) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.worker.Run(ctx); close(done) }()
	f.stop = func() { cancel(); <-done; f.stop = nil }
}

func (f *fixture) queue(t *testing.T, guid, title string) {
	t.Helper()
	msg, _ := json.Marshal(event.Notification{Kind: "workflow_run", Outcome: event.Failure, Title: title, Repo: "o/r", Branch: "main"})
	d := &ledger.Delivery{GUID: guid, Event: "workflow_run", ReceivedAt: time.Now(), State: ledger.Pending, Message: msg}
	if _, err := f.store.Record(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	f.worker.Wake()
}

// wait polls until the row leaves Pending (or the deadline passes).
func (f *fixture) wait(t *testing.T, guid string) ledger.Delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := f.store.Get(context.Background(), guid)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != ledger.Pending || time.Now().After(deadline) {
			return d
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDelivered(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir(), fast, false)
	f.start()
	f.queue(t, "a", "CI")
	d := f.wait(t, "a")
	if d.State != ledger.Delivered || d.Attempts != 1 || d.LastError != "" || !d.Delivered() {
		t.Fatalf("row %+v, want delivered after 1 attempt", d)
	}
	posts := f.slack.Posts()
	if len(posts) != 1 || !strings.Contains(posts[0].Text, "CI") || !bytes.Contains(posts[0].Body, []byte(`"blocks"`)) {
		t.Fatalf("posts %+v, want one Block Kit message about CI", posts)
	}
	if got := testutil.ToFloat64(f.metrics.For("").Posts); got != 1 {
		t.Errorf("slack_posts = %v, want 1", got)
	}
}

func TestPermanentErrorGivesUpAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir(), fast, false)
	f.slack.Script(func(int) slacktest.Reply { return slacktest.Reply{Status: 400, Body: "invalid_payload"} })
	f.start()
	f.queue(t, "a", "CI")
	d := f.wait(t, "a")
	if d.State != ledger.Failed || d.Attempts != 1 || !strings.Contains(d.LastError, "invalid_payload") {
		t.Fatalf("row %+v, want failed after 1 attempt with Slack's reason", d)
	}
	time.Sleep(100 * time.Millisecond) // no retry is coming
	if n := len(f.slack.Posts()); n != 1 {
		t.Errorf("%d posts, want 1: a 400 is not retried", n)
	}
	if got := testutil.ToFloat64(f.metrics.For("").Failures); got != 1 {
		t.Errorf("slack_failures = %v, want 1", got)
	}
}

func TestRetriesWithBackoffThenGivesUp(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir(), fast, false)
	f.slack.Script(func(int) slacktest.Reply { return slacktest.Reply{Status: 500, Body: "oops"} })
	f.start()
	f.queue(t, "a", "CI")
	d := f.wait(t, "a")
	if d.State != ledger.Failed || d.Attempts != 3 || !strings.Contains(d.LastError, "3 attempts") {
		t.Fatalf("row %+v, want failed after 3 attempts", d)
	}
	posts := f.slack.Posts()
	if len(posts) != 3 {
		t.Fatalf("%d posts, want 3", len(posts))
	}
	// Backoff doubles from RetryBase (50 ms, then 100 ms), jittered ±20%.
	for i, min := range []time.Duration{40 * time.Millisecond, 80 * time.Millisecond} {
		if gap := posts[i+1].At.Sub(posts[i].At); gap < min {
			t.Errorf("gap before attempt %d: %v, want at least %v", i+2, gap, min)
		}
	}
	if got := testutil.ToFloat64(f.metrics.For("").Retries); got != 2 {
		t.Errorf("retries = %v, want 2", got)
	}
}

func TestRecoversAfterServerErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir(), fast, false)
	f.slack.Script(func(n int) slacktest.Reply {
		if n < 3 {
			return slacktest.Reply{Status: 503, Body: "down"}
		}
		return slacktest.Reply{Status: 200, Body: "ok"}
	})
	f.start()
	f.queue(t, "a", "CI")
	if d := f.wait(t, "a"); d.State != ledger.Delivered || d.Attempts != 3 {
		t.Fatalf("row %+v, want delivered on attempt 3", d)
	}
}

func TestRateLimitedWaitsAndCostsNoAttempt(t *testing.T) {
	t.Parallel()
	opts := fast
	opts.MaxAttempts = 1 // a 429 that used up an attempt would fail the row
	f := newFixture(t, t.TempDir(), opts, false)
	f.slack.Script(func(n int) slacktest.Reply {
		if n == 1 {
			return slacktest.Reply{Status: 429, Body: "rate_limited", RetryAfter: 1}
		}
		return slacktest.Reply{Status: 200, Body: "ok"}
	})
	f.start()
	f.queue(t, "a", "CI")
	d := f.wait(t, "a")
	if d.State != ledger.Delivered || d.Attempts != 1 {
		t.Fatalf("row %+v, want delivered, the 429 costing no attempt", d)
	}
	posts := f.slack.Posts()
	if len(posts) != 2 || posts[1].At.Sub(posts[0].At) < 900*time.Millisecond {
		t.Fatalf("posts at %v, want a second one after Retry-After (1 s)", posts)
	}
}

// A row that keeps failing does not hold up the rows behind it, and rows go
// out in order of arrival.
func TestFailingRowDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	opts := fast
	opts.RetryBase = time.Second
	f := newFixture(t, t.TempDir(), opts, false)
	f.slack.Script(func(n int) slacktest.Reply {
		if n == 1 {
			return slacktest.Reply{Status: 500, Body: "oops"}
		}
		return slacktest.Reply{Status: 200, Body: "ok"}
	})
	for i := range 5 {
		f.queue(t, fmt.Sprint("r", i), fmt.Sprint("run-", i))
	}
	f.start()
	for i := 1; i < 5; i++ {
		if d := f.wait(t, fmt.Sprint("r", i)); d.State != ledger.Delivered {
			t.Fatalf("r%d: %+v", i, d)
		}
	}
	posts := f.slack.Posts()
	for i, p := range posts[:5] {
		if !strings.Contains(p.Text, fmt.Sprint("run-", i)) {
			t.Errorf("post %d is %q, want run-%d: out of order", i, p.Text, i)
		}
	}
	if d := f.wait(t, "r0"); d.State != ledger.Delivered || d.Attempts != 2 {
		t.Errorf("r0 %+v, want delivered on its retry", d)
	}
}

func TestPacing(t *testing.T) {
	t.Parallel()
	opts := fast
	opts.Rate, opts.Burst = 20, 5
	f := newFixture(t, t.TempDir(), opts, false)
	for i := range 15 {
		f.queue(t, fmt.Sprint("p", i), "CI")
	}
	f.start()
	f.wait(t, "p14")
	posts := f.slack.Posts()
	if len(posts) != 15 {
		t.Fatalf("%d posts, want 15", len(posts))
	}
	// A burst of 5, then one every 50 ms: the 15th cannot come before
	// 10 × 50 ms after the first.
	if span := posts[14].At.Sub(posts[0].At); span < 450*time.Millisecond {
		t.Errorf("15 posts within %v, want at least 450ms at 20/s with bursts of 5", span)
	}
}

func TestLogOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir(), fast, true)
	f.start()
	f.queue(t, "a", "Nightly <!channel>")
	if d := f.wait(t, "a"); d.State != ledger.Delivered {
		t.Fatalf("row %+v, want finished in log-only mode", d)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, `"message":{"text":`) || !strings.Contains(logs, `"delivery":"a"`) {
		t.Errorf("log-only line should carry the message as JSON and the delivery:\n%s", logs)
	}
	if len(f.slack.Posts()) != 0 {
		t.Error("log-only mode posted to Slack")
	}
}

// Rows owed when the process stopped are retried at once on start, whatever
// backoff they were waiting out.
func TestResumesOwedRowsAtOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := newFixture(t, dir, fast, false)
	f.queue(t, "a", "CI")
	if err := f.store.Reschedule(context.Background(), "a", 1, "slack was down", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.start()
	d := f.wait(t, "a")
	if d.State != ledger.Delivered || d.Attempts != 2 {
		t.Fatalf("row %+v, want delivered on its second attempt", d)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("took %v: the hour of backoff was honoured after a restart", waited)
	}
}

// An attempt under way at shutdown is finished and recorded, so it is not
// posted again by the next start.
func TestShutdownFinishesAttemptUnderWay(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir(), fast, false)
	f.slack.Script(func(int) slacktest.Reply {
		return slacktest.Reply{Status: 200, Body: "ok", Delay: 300 * time.Millisecond}
	})
	f.start()
	f.queue(t, "a", "CI")
	for len(f.slack.Posts()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	f.stop()
	d, err := f.store.Get(context.Background(), "a")
	if err != nil || d.State != ledger.Delivered {
		t.Fatalf("after shutdown mid-attempt: %+v, %v; want delivered", d, err)
	}
}

// A burst of a hundred deliveries drains at the configured pace, without a
// storm of 429s from a Slack that enforces that same pace.
func TestBurstDrainsWithoutRateLimits(t *testing.T) {
	t.Parallel()
	opts := fast
	opts.Rate, opts.Burst = 20, 5
	f := newFixture(t, t.TempDir(), opts, false)
	// Slack's side of the bargain, with one message of slack for network jitter.
	slackBucket := rate.NewLimiter(20, 6)
	f.slack.Script(func(int) slacktest.Reply {
		if !slackBucket.Allow() {
			return slacktest.Reply{Status: 429, Body: "rate_limited", RetryAfter: 1}
		}
		return slacktest.Reply{Status: 200, Body: "ok"}
	})
	for i := range 100 {
		f.queue(t, fmt.Sprint("b", i), "CI")
	}
	f.start()
	f.wait(t, "b99")
	for i := range 100 {
		if d := f.wait(t, fmt.Sprint("b", i)); d.State != ledger.Delivered {
			t.Fatalf("b%d: %+v", i, d)
		}
	}
	if limited := testutil.ToFloat64(f.metrics.For("").RateLimited); limited != 0 {
		t.Errorf("%v answers of 429 while draining a burst, want none", limited)
	}
	if n := len(f.slack.Posts()); n != 100 {
		t.Errorf("%d posts for 100 messages", n)
	}
}

// A queued row is posted when the handler wakes the worker, not at its next
// poll: with an hour between polls, the message still goes out.
func TestWakePostsWithoutWaitingForPoll(t *testing.T) {
	t.Parallel()
	opts := fast
	opts.PollInterval = time.Hour
	f := newFixture(t, t.TempDir(), opts, false)
	f.start()
	time.Sleep(50 * time.Millisecond) // let the first pass find nothing and sleep
	f.queue(t, "a", "CI")             // queue wakes the worker, as the handler does
	if d := f.wait(t, "a"); d.State != ledger.Delivered {
		t.Fatalf("row %+v: a woken worker did not post it", d)
	}
}

// Every Slack attempt logs one "slack attempt" line that operators can
// search: the delivery GUID, the attempt number, the result and the latency,
// whatever the outcome.
func TestSlackAttemptLogLines(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		replies []slacktest.Reply // the n-th answer; the last one repeats
		want    []string          // results, in order
	}{
		{"ok", []slacktest.Reply{{Status: 200, Body: "ok"}}, []string{"ok"}},
		{"permanent", []slacktest.Reply{{Status: 400, Body: "invalid_payload"}}, []string{"permanent_error"}},
		{"retry then give up", []slacktest.Reply{{Status: 500, Body: "oops"}}, []string{"retry", "retry", "gave_up"}},
		{"rate limited then ok", []slacktest.Reply{{Status: 429, Body: "rate_limited", RetryAfter: 1}, {Status: 200, Body: "ok"}},
			[]string{"rate_limited", "ok"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, t.TempDir(), fast, false)
			f.slack.Script(func(n int) slacktest.Reply { return tc.replies[min(n, len(tc.replies))-1] })
			f.start()
			f.queue(t, "logged", "CI")
			f.wait(t, "logged")
			f.stop()

			var results []string
			for _, line := range strings.Split(strings.TrimSpace(f.logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("log line %q is not JSON: %v", line, err)
				}
				if m["msg"] != "slack attempt" {
					continue
				}
				result, _ := m["result"].(string)
				results = append(results, result)
				if m["delivery"] != "logged" {
					t.Errorf("delivery = %v, want logged, in %v", m["delivery"], m)
				}
				if n, ok := m["attempt"].(float64); !ok || n < 1 {
					t.Errorf("attempt = %v, want a number from 1, in %v", m["attempt"], m)
				}
				if _, ok := m["latency"].(float64); !ok {
					t.Errorf("latency = %v, want a duration, in %v", m["latency"], m)
				}
			}
			if fmt.Sprint(results) != fmt.Sprint(tc.want) {
				t.Errorf("slack attempt results %v, want %v; log:\n%s", results, tc.want, f.logs)
			}
		})
	}
}
