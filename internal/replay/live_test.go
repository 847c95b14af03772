package replay

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ciwebhook/ciwebhook/internal/githook"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/notify"
	"github.com/ciwebhook/ciwebhook/internal/outbox"
	"github.com/ciwebhook/ciwebhook/internal/route"
	"github.com/ciwebhook/ciwebhook/internal/slack"
	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

// The whole stream through a channel route with a bot token: one message
// per run attempt (its queued state updated to its result), one per commit
// and status context, and the pull request's thread holding its activity
// and its runs. No message is left saying a run is queued or running.
func TestReplayLive(t *testing.T) {
	const token, channel = "xoxb-1-2-replay", "C0REPLAY00"
	s := build(t)
	all := replay(t, s, notify.ModeAll)

	routes, err := route.Parse("routes.yaml", []byte("routes:\n  - name: live\n    channel: "+channel+"\n"), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), 100_000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m := metrics.New(prometheus.NewRegistry())
	clock := t0
	h := githook.New(githook.Options{
		Secrets: [][]byte{[]byte(secret)}, MaxBodyBytes: 1 << 20,
		Filters: notify.Filters{Routes: routes}, Backend: "sqlite", SlackMode: "routes",
		Now: func() time.Time { clock = clock.Add(time.Second); return clock },
	}, store, m, slog.New(slog.DiscardHandler))
	for _, d := range s.deliveries {
		post(t, h, d)
	}

	api := slacktest.NewAPI(t, token)
	w := outbox.New(store, []outbox.Destination{{}, {Name: "live", Chat: slack.NewAPI(api.URL(), token, nil), Channel: channel}},
		m, slog.New(slog.DiscardHandler), outbox.Options{MaxAttempts: 3, RetryBase: 10 * time.Millisecond, Rate: 1e6, Burst: 1000, PollInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := store.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending == 0 {
			if st.Failed != 0 {
				t.Errorf("%d rows failed", st.Failed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows still owed after 60 s", st.Pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done

	// What the stream holds, counted from its payloads.
	runs, queued, statuses := 0, 0, map[string]bool{}
	seen := map[string]bool{}
	for _, d := range s.deliveries {
		if seen[d.guid] {
			continue // a redelivery
		}
		seen[d.guid] = true
		var p struct {
			Action     string
			State      string
			SHA        string
			Context    string
			Repository struct {
				FullName string `json:"full_name"`
			}
		}
		json.Unmarshal(d.body, &p)
		switch {
		case d.event == "workflow_run" && p.Action == "completed":
			runs++
		case d.event == "workflow_run" && p.Action == "requested":
			queued++
		case d.event == "status" && p.State != "pending":
			statuses[p.Repository.FullName+" "+p.SHA+" "+p.Context] = true
		}
	}
	msgs := api.Messages(channel)
	want := runs + len(statuses) + 3 // and the PR: opened, then synchronize and merged in its thread
	if len(msgs) != want {
		t.Errorf("channel holds %d messages, want %d (%d run attempts, %d statuses, 3 of the PR)", len(msgs), want, runs, len(statuses))
	}
	posts, updates := 0, 0
	for _, c := range api.Calls() {
		switch {
		case c.Error != "":
			t.Errorf("Slack refused %s: %s", c.Method, c.Error)
		case c.Method == "chat.postMessage":
			posts++
		case c.Method == "chat.update":
			updates++
		}
	}
	// Each queued run is updated to its result (a re-run attempt in the
	// stream starts at its result); a status set again changes its message.
	if posts != len(msgs) || updates < queued {
		t.Errorf("%d posts and %d updates, want one post per message and an update per queued run (%d) at least", posts, updates, queued)
	}
	t.Logf("%d deliveries: a webhook gets %d messages; the live channel %d messages (%d posts, %d updates)",
		len(s.deliveries), len(all.posted), len(msgs), posts, updates)

	var root string
	replies := 0
	for _, msg := range msgs {
		if strings.Contains(msg.Text, " queued ") || strings.Contains(msg.Text, " running ") {
			t.Errorf("left on its way: %q", msg.Text)
		}
		if strings.Contains(msg.Text, "Change 42") && strings.Contains(msg.Text, "opened") {
			root = msg.TS
		}
	}
	for _, msg := range msgs {
		if msg.ThreadTS == "" {
			continue
		}
		replies++
		if msg.ThreadTS != root {
			t.Errorf("%q replies under %s, want the pull request's message %s", msg.Text, msg.ThreadTS, root)
		}
	}
	// synchronize, merged, and the PR's three runs (f f p).
	if root == "" || replies != 5 {
		t.Errorf("pull request thread: root %q, %d replies, want 5", root, replies)
	}
}
