package slacktest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/slack"
	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

const token = "xoxb-1-2-fakefakefake"

func msg(text string) slack.Message {
	return slack.Message{Text: text, Blocks: []slack.Block{{Type: "section", Text: &slack.Text{Type: "mrkdwn", Text: text}}}}
}

var slackTS = regexp.MustCompile(`^\d{10}\.\d{6}$`)

func TestFakePostReplyUpdate(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewAPI(t, token)
	api := slack.NewAPI(fake.URL(), token, nil)
	ctx := context.Background()

	parent, err := api.PostMessage(ctx, "C1", msg("run started"), "")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := api.PostMessage(ctx, "C1", msg("job failed"), parent)
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Update(ctx, "C1", parent, msg("run failed")); err != nil {
		t.Fatal(err)
	}
	if !slackTS.MatchString(parent) || !slackTS.MatchString(reply) || reply <= parent {
		t.Errorf("ts %q then %q, want Slack-shaped and increasing", parent, reply)
	}

	got := fake.Messages("C1")
	if len(got) != 2 {
		t.Fatalf("C1 has %d messages, want 2: %+v", len(got), got)
	}
	if m := got[0]; m.TS != parent || m.Text != "run failed" || m.Updates != 1 || m.ThreadTS != "" || !strings.Contains(string(m.Blocks), "run failed") {
		t.Errorf("parent = %+v, want it updated once to \"run failed\"", m)
	}
	if m := got[1]; m.TS != reply || m.ThreadTS != parent || m.Text != "job failed" || m.Updates != 0 {
		t.Errorf("reply = %+v, want in the parent's thread", m)
	}
	if other := fake.Messages("C2"); len(other) != 0 {
		t.Errorf("C2 has messages: %+v", other)
	}

	calls := fake.Calls()
	want := []slacktest.Call{
		{Method: "chat.postMessage", Channel: "C1", TS: parent, Text: "run started"},
		{Method: "chat.postMessage", Channel: "C1", TS: reply, ThreadTS: parent, Text: "job failed"},
		{Method: "chat.update", Channel: "C1", TS: parent, Text: "run failed"},
	}
	if len(calls) != len(want) {
		t.Fatalf("%d calls, want %d", len(calls), len(want))
	}
	for i, c := range calls {
		if c.At.IsZero() || len(c.Body) == 0 {
			t.Errorf("call %d has no time or body: %+v", i, c)
		}
		w := want[i]
		if c.Method != w.Method || c.Channel != w.Channel || c.TS != w.TS || c.ThreadTS != w.ThreadTS || c.Text != w.Text || c.Error != "" {
			t.Errorf("call %d = %+v, want %+v", i, c, w)
		}
	}
}

func TestFakeRefusals(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewAPI(t, token)
	fake.Channels("C1")
	api := slack.NewAPI(fake.URL(), token, nil)
	ctx := context.Background()
	top, err := api.PostMessage(ctx, "C1", msg("top"), "")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := api.PostMessage(ctx, "C1", msg("reply"), top)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := api.PostMessage(ctx, "C1", msg("gone"), "")
	if err != nil {
		t.Fatal(err)
	}
	fake.Delete("C1", gone)

	for _, tt := range []struct {
		name string
		call func() error
		code string
	}{
		{"wrong token", func() error {
			_, err := slack.NewAPI(fake.URL(), "xoxb-wrong", nil).PostMessage(ctx, "C1", msg("x"), "")
			return err
		}, "invalid_auth"},
		{"unknown channel", func() error { _, err := api.PostMessage(ctx, "C2", msg("x"), ""); return err }, "channel_not_found"},
		{"update in an unknown channel", func() error { return api.Update(ctx, "C2", top, msg("x")) }, "channel_not_found"},
		{"no text", func() error { _, err := api.PostMessage(ctx, "C1", slack.Message{}, ""); return err }, "no_text"},
		{"unknown thread", func() error { _, err := api.PostMessage(ctx, "C1", msg("x"), "1600000000.000100"); return err }, "thread_not_found"},
		{"thread of a reply", func() error { _, err := api.PostMessage(ctx, "C1", msg("x"), reply); return err }, "thread_not_found"},
		{"thread of a deleted message", func() error { _, err := api.PostMessage(ctx, "C1", msg("x"), gone); return err }, "thread_not_found"},
		{"update of an unknown ts", func() error { return api.Update(ctx, "C1", "1600000000.000100", msg("x")) }, "message_not_found"},
		{"update of a deleted message", func() error { return api.Update(ctx, "C1", gone, msg("x")) }, "message_not_found"},
	} {
		before := len(fake.Calls())
		err := tt.call()
		pe, ok := errors.AsType[*slack.PermanentError](err)
		if !ok || pe.Reason != tt.code {
			t.Errorf("%s: err = %v, want PermanentError %s", tt.name, err, tt.code)
		}
		if got := errors.Is(err, slack.ErrMessageNotFound); got != (tt.code == "message_not_found") {
			t.Errorf("%s: errors.Is(ErrMessageNotFound) = %v", tt.name, got)
		}
		calls := fake.Calls()
		if len(calls) != before+1 || calls[before].Error != tt.code {
			t.Errorf("%s: calls grew from %d to %d, last %+v; want one recording %s", tt.name, before, len(calls), calls[len(calls)-1], tt.code)
		}
	}
	if got := fake.Messages("C1"); len(got) != 2 || got[0].TS != top || got[1].TS != reply || got[0].Updates != 0 {
		t.Errorf("C1 = %+v, want top and reply untouched", got)
	}
}

// Requests the real client never sends, checked on the wire.
func TestFakeRawRequests(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewAPI(t, token)
	for _, tt := range []struct {
		method, path, auth, body string
		status                   int
		code                     string
	}{
		{"POST", "/api/chat.delete", "Bearer " + token, `{}`, 404, "unknown_method"},
		{"POST", "/chat.postMessage", "Bearer " + token, `{}`, 404, "unknown_method"},
		{"GET", "/api/chat.postMessage", "Bearer " + token, ``, 405, "method_not_allowed"},
		{"POST", "/api/chat.postMessage", "", `{"channel":"C1","text":"x"}`, 200, "not_authed"},
		{"POST", "/api/chat.postMessage", "Bearer " + token, `{"channel":"C1","text":`, 200, "invalid_json"},
		{"POST", "/api/chat.postMessage", "Bearer " + token, `{"channel":"C1","text":"x","blocks":{"type":"section"}}`, 200, "invalid_blocks"},
	} {
		req, _ := http.NewRequest(tt.method, fake.Server.URL+tt.path, strings.NewReader(tt.body))
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := fake.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := `{"ok":false,"error":"` + tt.code + `"}`; resp.StatusCode != tt.status || strings.TrimSpace(string(body)) != want {
			t.Errorf("%s %s: HTTP %d %s, want %d %s", tt.method, tt.path, resp.StatusCode, body, tt.status, want)
		}
	}
	calls := fake.Calls()
	if len(calls) != 6 || calls[0].Method != "chat.delete" || calls[5].Error != "invalid_blocks" {
		t.Errorf("calls = %+v, want all six recorded", calls)
	}
	if got := fake.Messages("C1"); len(got) != 0 {
		t.Errorf("refused calls posted %+v", got)
	}

	// Slack's order, ok first and ts before the echo, is what lets a client
	// keep ts from an answer cut short.
	req, _ := http.NewRequest("POST", fake.URL()+"/chat.postMessage", strings.NewReader(`{"channel":"C1","text":"x"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := fake.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := regexp.MustCompile(`^\{"ok":true,"channel":"C1","ts":"\d{10}\.\d{6}","message":\{"type":"message","text":"x","ts":`); !want.Match(body) {
		t.Errorf("answer = %s, want it to match %s", body, want)
	}
}

func TestFakeScript(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewAPI(t, token)
	api := slack.NewAPI(fake.URL(), token, nil)
	ctx := context.Background()
	fake.Script(func(n int, c slacktest.Call) *slacktest.APIReply {
		switch n {
		case 1:
			return &slacktest.APIReply{Status: 429, Error: "ratelimited", RetryAfter: 2}
		case 2:
			return &slacktest.APIReply{Status: 503}
		case 3:
			return &slacktest.APIReply{Body: "<html>proxy</html>"}
		case 5:
			// A person deletes the message just before the update: the
			// script may use the fake.
			fake.Delete(c.Channel, c.TS)
		}
		return nil
	})

	_, err := api.PostMessage(ctx, "C1", msg("a"), "")
	if rl, ok := errors.AsType[*slack.RateLimitedError](err); !ok || rl.RetryAfter != 2*time.Second {
		t.Errorf("call 1: err = %v, want rate limited for 2s", err)
	}
	_, err = api.PostMessage(ctx, "C1", msg("a"), "")
	if te, ok := errors.AsType[*slack.TemporaryError](err); !ok || te.Status != 503 {
		t.Errorf("call 2: err = %v, want a temporary 503", err)
	}
	_, err = api.PostMessage(ctx, "C1", msg("a"), "")
	if _, ok := errors.AsType[*slack.TemporaryError](err); !ok {
		t.Errorf("call 3: err = %v, want a temporary error", err)
	}
	ts, err := api.PostMessage(ctx, "C1", msg("a"), "")
	if err != nil {
		t.Fatalf("call 4: %v", err)
	}
	if err := api.Update(ctx, "C1", ts, msg("b")); !errors.Is(err, slack.ErrMessageNotFound) {
		t.Errorf("call 5: err = %v, want message not found", err)
	}

	var codes []string
	for _, c := range fake.Calls() {
		codes = append(codes, c.Error)
	}
	if got, want := fmt.Sprint(codes), "[ratelimited HTTP 503 scripted answer  message_not_found]"; got != want {
		t.Errorf("call errors = %s, want %s", got, want)
	}
	if got := fake.Messages("C1"); len(got) != 0 {
		t.Errorf("C1 = %+v, want the one message posted, then deleted", got)
	}
}

// A delayed normal answer posts before the client gives up: the lost answer
// behind duplicate posts.
func TestFakeLostAnswer(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewAPI(t, token)
	fake.Script(func(n int, _ slacktest.Call) *slacktest.APIReply {
		if n == 1 {
			return &slacktest.APIReply{Delay: 10 * time.Second}
		}
		return nil
	})
	api := slack.NewAPI(fake.URL(), token, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := api.PostMessage(ctx, "C1", msg("a"), "")
	if !slack.Retryable(err) {
		t.Errorf("err = %v, want a retryable timeout", err)
	}
	if got := fake.Messages("C1"); len(got) != 1 {
		t.Errorf("C1 has %d messages, want the one posted before the answer was lost", len(got))
	}
	fake.Close() // must not wait out the delay
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestFakeConcurrentPosts(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewAPI(t, token)
	api := slack.NewAPI(fake.URL(), token, nil)
	const n = 20
	var wg sync.WaitGroup
	tss := make([]string, n)
	for i := range n {
		wg.Go(func() {
			var err error
			tss[i], err = api.PostMessage(context.Background(), fmt.Sprint("C", i%3), msg(fmt.Sprint(i)), "")
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, ts := range tss {
		if seen[ts] || !slackTS.MatchString(ts) {
			t.Errorf("ts %q repeated or not Slack-shaped", ts)
		}
		seen[ts] = true
	}
	total := 0
	for c := range 3 {
		msgs := fake.Messages(fmt.Sprint("C", c))
		for i := 1; i < len(msgs); i++ {
			if msgs[i].TS <= msgs[i-1].TS {
				t.Errorf("C%d messages out of order: %q after %q", c, msgs[i].TS, msgs[i-1].TS)
			}
		}
		total += len(msgs)
	}
	if total != n || len(fake.Calls()) != n {
		t.Errorf("%d messages and %d calls, want %d", total, len(fake.Calls()), n)
	}
}
