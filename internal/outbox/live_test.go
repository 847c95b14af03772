package outbox

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/slack"
	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

const (
	botToken = "xoxb-1111-2222-SECRETxTOKENx"
	channel  = "C0123456789"
)

// liveFixture is a worker with one channel destination ("live") on a
// fake Web API, and a webhook destination ("hook") on a fake webhook.
type liveFixture struct {
	dir     string
	store   *sqlite.Store
	api     *slacktest.API
	hook    *slacktest.Server
	metrics *metrics.Metrics
	logs    *syncBuffer
	worker  *Worker
	stop    func()
}

func newLiveFixture(t *testing.T) *liveFixture {
	t.Helper()
	f := &liveFixture{dir: t.TempDir(), api: slacktest.NewAPI(t, botToken), hook: slacktest.New(t), logs: &syncBuffer{}}
	f.open(t)
	t.Cleanup(func() {
		if f.stop != nil {
			f.stop()
		}
		f.store.Close()
		if strings.Contains(f.logs.String(), "SECRETx") {
			t.Errorf("a token or webhook URL reached a log line:\n%s", f.logs)
		}
	})
	return f
}

// open opens the ledger and makes a worker: again after close, a restart.
func (f *liveFixture) open(t *testing.T) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(f.dir, "ledger.db"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	f.store, f.metrics = st, metrics.New(prometheus.NewRegistry())
	dests := []Destination{
		{},
		{Name: "live", Chat: slack.NewAPI(f.api.URL(), botToken, &http.Client{}), Channel: channel},
		{Name: "hook", Webhook: slack.NewWebhook(f.hook.URL(), &http.Client{})},
	}
	f.worker = New(st, dests, f.metrics, slog.New(slog.NewJSONHandler(f.logs, nil)), fast)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.worker.Run(ctx); close(done) }()
	f.stop = func() { cancel(); <-done; f.stop = nil }
}

// restart stops the worker and closes the ledger, then opens both again.
func (f *liveFixture) restart(t *testing.T) {
	t.Helper()
	f.stop()
	f.store.Close()
	f.open(t)
}

// send records a row owed to dest and waits until it is finished.
func (f *liveFixture) send(t *testing.T, guid, dest string, n event.Notification) ledger.Delivery {
	t.Helper()
	msg, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	d := &ledger.Delivery{GUID: guid, Event: n.Kind, ReceivedAt: time.Now(), State: ledger.Pending, Message: msg, Destination: dest}
	if _, err := f.store.Record(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	f.worker.Wake()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := f.store.Get(context.Background(), guid)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != ledger.Pending {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still pending after 10 s: %+v", guid, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func run(o event.Outcome, interim bool) event.Notification {
	return event.Notification{
		Kind: "workflow_run", Outcome: o, Interim: interim, Title: "CI", Repo: "octo-org/octo-repo", Branch: "main",
		Number: 7, Live: "suite:octo-org/octo-repo:118578147",
	}
}

func methods(calls []slacktest.Call) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Method)
	}
	return out
}

func delivered(t *testing.T, d ledger.Delivery) {
	t.Helper()
	if d.State != ledger.Delivered {
		t.Fatalf("%s: state %s (%s), want delivered", d.GUID, d.State, d.LastError)
	}
}

// A run that goes queued → in progress → failed is one message that
// changes, not three.
func TestLiveCreateUpdateUpdate(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	delivered(t, f.send(t, "queued", "live", run(event.Queued, true)))
	delivered(t, f.send(t, "running", "live", run(event.InProgress, true)))
	delivered(t, f.send(t, "failed", "live", run(event.Failure, false)))

	if got := methods(f.api.Calls()); strings.Join(got, " ") != "chat.postMessage chat.update chat.update" {
		t.Fatalf("calls %v, want one post and two updates", got)
	}
	msgs := f.api.Messages(channel)
	if len(msgs) != 1 || msgs[0].Updates != 2 || !strings.Contains(msgs[0].Text, "failed") {
		t.Fatalf("channel holds %+v, want one message, updated twice, saying failed", msgs)
	}
	for _, c := range f.api.Calls()[1:] {
		if c.TS != msgs[0].TS {
			t.Errorf("%s of ts %s, want the first message's %s", c.Method, c.TS, msgs[0].TS)
		}
	}
	if got := testutil.ToFloat64(f.metrics.For("live").Posts); got != 3 {
		t.Errorf("slack_posts{destination=live} = %v, want 3", got)
	}
}

// GitHub may deliver "in progress" after "completed": the result stays.
func TestLiveInterimAfterResultIsSkipped(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	delivered(t, f.send(t, "done", "live", run(event.Success, false)))
	delivered(t, f.send(t, "late", "live", run(event.InProgress, true)))
	if got := methods(f.api.Calls()); len(got) != 1 {
		t.Fatalf("calls %v, want the post only", got)
	}
	if msgs := f.api.Messages(channel); len(msgs) != 1 || !strings.Contains(msgs[0].Text, "passed") {
		t.Fatalf("channel holds %+v, want the result", msgs)
	}
}

// A pull request's first message starts a thread; its later activity and
// the CI results on it reply there (a run's own updates included).
func TestLivePullRequestThread(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	const parent = "pr:octo-org/octo-repo#42"
	pr := func(o event.Outcome) event.Notification {
		return event.Notification{Kind: "pull_request", Outcome: o, Title: "Add routes", Repo: "octo-org/octo-repo", Number: 42, Parent: parent}
	}
	delivered(t, f.send(t, "opened", "live", pr(event.Opened)))
	ci := run(event.InProgress, true)
	ci.Parent = parent
	delivered(t, f.send(t, "ci-running", "live", ci))
	ci.Outcome, ci.Interim = event.Success, false
	delivered(t, f.send(t, "ci-passed", "live", ci))
	delivered(t, f.send(t, "pushed", "live", pr(event.Synchronized)))
	delivered(t, f.send(t, "merged", "live", pr(event.Merged)))

	msgs := f.api.Messages(channel)
	if len(msgs) != 4 {
		t.Fatalf("channel holds %d messages, want the PR, its run and two replies: %+v", len(msgs), msgs)
	}
	root := msgs[0]
	if root.ThreadTS != "" || !strings.Contains(root.Text, "opened") {
		t.Fatalf("first message %+v, want the opened PR at the top level", root)
	}
	for _, m := range msgs[1:] {
		if m.ThreadTS != root.TS {
			t.Errorf("message %q has thread_ts %q, want the PR's %q", m.Text, m.ThreadTS, root.TS)
		}
	}
	if msgs[1].Updates != 1 || !strings.Contains(msgs[1].Text, "passed") {
		t.Errorf("run reply %+v, want updated once to passed", msgs[1])
	}
}

// A message someone deleted is posted anew, and later events update the
// new one.
func TestLiveDeletedMessageIsPostedAnew(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	delivered(t, f.send(t, "queued", "live", run(event.Queued, true)))
	first := f.api.Messages(channel)[0]
	f.api.Delete(channel, first.TS)
	delivered(t, f.send(t, "running", "live", run(event.InProgress, true)))
	delivered(t, f.send(t, "passed", "live", run(event.Success, false)))

	if got := strings.Join(methods(f.api.Calls()), " "); got != "chat.postMessage chat.update chat.postMessage chat.update" {
		t.Fatalf("calls %s, want post, update (not found), post anew, update", got)
	}
	msgs := f.api.Messages(channel)
	if len(msgs) != 1 || msgs[0].TS == first.TS || !strings.Contains(msgs[0].Text, "passed") {
		t.Fatalf("channel holds %+v, want one new message saying passed", msgs)
	}
}

// The ts lives in the ledger: after a restart the next event still updates.
func TestLiveRestartKeepsTheMessage(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	delivered(t, f.send(t, "running", "live", run(event.InProgress, true)))
	f.restart(t)
	delivered(t, f.send(t, "failed", "live", run(event.Failure, false)))
	msgs := f.api.Messages(channel)
	if len(msgs) != 1 || msgs[0].Updates != 1 || !strings.Contains(msgs[0].Text, "failed") {
		t.Fatalf("channel holds %+v, want the one message updated after the restart", msgs)
	}
}

// Slack's refusals inside HTTP 200 are permanent, kept, and shown per
// destination; one destination failing holds up no other.
func TestLivePermanentErrorShownPerDestination(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	f.api.Channels("C0000000000") // ours does not exist
	d := f.send(t, "lost", "live", run(event.Failure, false))
	if d.State != ledger.Failed || d.Attempts != 1 || !strings.Contains(d.LastError, "channel_not_found") {
		t.Fatalf("row %+v, want failed at once with channel_not_found", d)
	}
	delivered(t, f.send(t, "fine", "hook", run(event.Failure, false)))
	delivered(t, f.send(t, "default", "", run(event.Failure, false)))

	byName := map[string]Status{}
	for _, st := range f.worker.Statuses() {
		byName[st.Name] = st
	}
	if st := byName["live"]; st.Kind != "channel" || !st.Permanent || !strings.Contains(st.LastError, "channel_not_found") {
		t.Errorf("status of live: %+v, want its permanent channel_not_found", st)
	}
	if st := byName["hook"]; st.Kind != "webhook" || st.LastError != "" || st.LastSuccessAt.IsZero() {
		t.Errorf("status of hook: %+v, want a success and no error", st)
	}
	if st := byName["default"]; st.Kind != "log" {
		t.Errorf("status of the default destination: %+v, want kind log", st)
	}
	if got := testutil.ToFloat64(f.metrics.For("live").Failures); got != 1 {
		t.Errorf("slack_failures{destination=live} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.metrics.For("hook").Failures); got != 0 {
		t.Errorf("slack_failures{destination=hook} = %v, want 0", got)
	}
}

// While one destination waits out Slack's rate limit, another posts.
func TestDestinationsArePacedApart(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	f.api.Script(func(n int, c slacktest.Call) *slacktest.APIReply {
		return &slacktest.APIReply{Status: http.StatusTooManyRequests, RetryAfter: 30}
	})
	msg, _ := json.Marshal(run(event.Failure, false))
	stuck := &ledger.Delivery{GUID: "stuck", Event: "workflow_run", ReceivedAt: time.Now(), State: ledger.Pending, Message: msg, Destination: "live"}
	if _, err := f.store.Record(context.Background(), stuck); err != nil {
		t.Fatal(err)
	}
	f.worker.Wake()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.api.Calls()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	delivered(t, f.send(t, "other", "hook", run(event.Failure, false)))
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("the webhook destination waited %v behind the rate-limited channel", waited)
	}
	if got, _ := f.store.Get(context.Background(), "stuck"); got.State != ledger.Pending || got.Attempts != 0 {
		t.Errorf("rate-limited row %+v, want still owed, no attempt used", got)
	}
}

// A check run's early failure that arrives (or is retried) after the
// suite's result does not replace it; before it, the result replaces it.
func TestLiveEarlyFailureNeverOverwritesTheResult(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	early := event.Notification{Kind: "check_run", Outcome: event.Failure, Title: "lint", Repo: "octo-org/octo-repo",
		Live: "suite:octo-org/octo-repo:118578147"}
	suite := event.Notification{Kind: "check_suite", Outcome: event.Failure, Title: "Buildkite", Repo: "octo-org/octo-repo",
		Live: "suite:octo-org/octo-repo:118578147", Failed: []string{"lint", "test"}}
	delivered(t, f.send(t, "early", "live", early))
	delivered(t, f.send(t, "result", "live", suite))
	delivered(t, f.send(t, "late", "live", early))
	if got := strings.Join(methods(f.api.Calls()), " "); got != "chat.postMessage chat.update" {
		t.Fatalf("calls %s, want the early post and the result's update only", got)
	}
	if msgs := f.api.Messages(channel); len(msgs) != 1 || !strings.Contains(string(msgs[0].Blocks), "test") {
		t.Fatalf("channel holds %+v, want the suite's result with its failed checks", msgs)
	}
}

// Slack notifies nobody for a mention added by an edit: a failure that
// updates a message also replies in its thread to the people it mentions.
func TestLiveMentionsOnUpdateReplyInThread(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	delivered(t, f.send(t, "running", "live", run(event.InProgress, true)))
	failed := run(event.Failure, false)
	failed.Mentions = []string{"U0OCTOCAT"}
	delivered(t, f.send(t, "failed", "live", failed))

	msgs := f.api.Messages(channel)
	if len(msgs) != 2 {
		t.Fatalf("channel holds %+v, want the run's message and one reply", msgs)
	}
	reply := msgs[1]
	if reply.ThreadTS != msgs[0].TS || !strings.Contains(reply.Text, "<@U0OCTOCAT>") || !strings.Contains(reply.Text, "failed") {
		t.Errorf("reply %+v, want a mention of U0OCTOCAT about the failure, in the run's thread", reply)
	}
	// A success mentions nobody, so it replies nothing.
	delivered(t, f.send(t, "passed", "live", run(event.Success, false)))
	if n := len(f.api.Messages(channel)); n != 2 {
		t.Errorf("%d messages after the success, want still 2", n)
	}
}

// Health shows what is wrong now: a success clears the last error.
func TestLiveStatusClearsOnSuccess(t *testing.T) {
	t.Parallel()
	f := newLiveFixture(t)
	f.api.Channels("C0000000000")
	f.send(t, "lost", "live", run(event.Failure, false))
	f.api.Channels(channel)
	delivered(t, f.send(t, "fine", "live", run(event.Success, false)))
	for _, st := range f.worker.Statuses() {
		if st.Name == "live" && (st.LastError != "" || st.Permanent || st.LastSuccessAt.IsZero()) {
			t.Errorf("status %+v, want the error cleared by the success", st)
		}
	}
}
