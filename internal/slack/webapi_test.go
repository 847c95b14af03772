package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const (
	testToken  = "xoxb-1111111111-2222222222-TOKENxSECRETxTOKENxSECRET"
	tokenTail  = "TOKENxSECRETxTOKENxSECRET"
	testAPIDir = "/api"
)

// assertNoTokenLeak fails when any rendering of err, or of an error it
// wraps, shows the token or its secret part.
func assertNoTokenLeak(t *testing.T, err error) {
	t.Helper()
	for e := err; e != nil; e = errors.Unwrap(e) {
		for _, text := range []string{e.Error(), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e)} {
			if strings.Contains(text, tokenTail) {
				t.Errorf("error leaks the token: %s", text)
			}
		}
	}
}

// fakeAPI answers every request with h and hands what it received to the
// test through the returned channel.
func fakeAPI(t *testing.T, h http.HandlerFunc) (*API, <-chan *http.Request, <-chan []byte) {
	t.Helper()
	reqs := make(chan *http.Request, 10)
	bodies := make(chan []byte, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		reqs <- r
		bodies <- body
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return NewAPI(srv.URL+testAPIDir, testToken, nil), reqs, bodies
}

var apiMessage = Message{
	Text:   "CI failed on main & <b>",
	Blocks: []Block{{Type: "section", Text: mrkdwn("*CI* failed &amp; more")}},
}

func TestAPIPostMessageRequest(t *testing.T) {
	t.Parallel()
	for _, threadTS := range []string{"", "1700000000.000100"} {
		t.Run("thread_ts="+threadTS, func(t *testing.T) {
			t.Parallel()
			api, reqs, bodies := fakeAPI(t, answer(200, `{"ok":true,"channel":"C1","ts":"1700000001.000200","message":{"text":"x"}}`))
			ts, err := api.PostMessage(context.Background(), "C1", apiMessage, threadTS)
			if err != nil || ts != "1700000001.000200" {
				t.Fatalf("PostMessage = %q, %v; want the answer's ts", ts, err)
			}
			r, body := <-reqs, <-bodies
			checkAPIRequest(t, r, "/api/chat.postMessage")
			if bytes.Contains(body, []byte(`\u0026`)) || !bytes.Contains(body, []byte("main & <b>")) {
				t.Errorf("body is HTML-escaped: %s", body)
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body is not JSON: %v\n%s", err, body)
			}
			want := map[string]any{"channel": "C1", "text": apiMessage.Text, "unfurl_links": false, "unfurl_media": false}
			if threadTS != "" {
				want["thread_ts"] = threadTS
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("body[%q] = %#v, want %#v", k, got[k], v)
				}
			}
			if _, ok := got["thread_ts"]; ok != (threadTS != "") {
				t.Errorf("thread_ts present = %v with threadTS %q: %s", ok, threadTS, body)
			}
			if blocks, _ := got["blocks"].([]any); len(blocks) != 1 {
				t.Errorf("blocks = %#v, want the message's one block", got["blocks"])
			}
			if len(got) != len(want)+1 {
				t.Errorf("body has fields beyond the expected ones: %s", body)
			}
		})
	}
}

func TestAPIUpdateRequest(t *testing.T) {
	t.Parallel()
	for _, m := range []Message{apiMessage, {Text: "text only"}} {
		api, reqs, bodies := fakeAPI(t, answer(200, `{"ok":true,"channel":"C1","ts":"1700000001.000200","text":"x"}`))
		if err := api.Update(context.Background(), "C1", "1700000001.000200", m); err != nil {
			t.Fatalf("Update: %v", err)
		}
		r, body := <-reqs, <-bodies
		checkAPIRequest(t, r, "/api/chat.update")
		var got struct {
			Channel, TS, Text string
			Blocks            *[]Block
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("body is not JSON: %v\n%s", err, body)
		}
		if got.Channel != "C1" || got.TS != "1700000001.000200" || got.Text != m.Text {
			t.Errorf("body = %s, want channel C1, the ts and the text", body)
		}
		// Without blocks chat.update would keep the old ones under the new text.
		if got.Blocks == nil || len(*got.Blocks) != len(m.Blocks) {
			t.Errorf("blocks = %v, want %d blocks, [] when there are none: %s", got.Blocks, len(m.Blocks), body)
		}
		var fields map[string]any
		json.Unmarshal(body, &fields)
		if len(fields) != 4 {
			t.Errorf("body has %d fields, want channel, ts, text, blocks: %s", len(fields), body)
		}
	}
}

func checkAPIRequest(t *testing.T, r *http.Request, path string) {
	t.Helper()
	if r.Method != http.MethodPost || r.URL.Path != path {
		t.Errorf("request = %s %s, want POST %s", r.Method, r.URL.Path, path)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+testToken {
		t.Errorf("Authorization = %q, want the bearer token", got)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := r.Header.Get("User-Agent"); got != "ciwebhook" {
		t.Errorf("User-Agent = %q", got)
	}
	if r.URL.RawQuery != "" {
		t.Errorf("query = %q, want none", r.URL.RawQuery)
	}
}

func TestAPIBaseURLWithTrailingSlash(t *testing.T) {
	t.Parallel()
	reqs := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs <- r.URL.Path
		io.WriteString(w, `{"ok":true,"ts":"1.2"}`)
	}))
	t.Cleanup(srv.Close)
	if _, err := NewAPI(srv.URL+"/api/", testToken, nil).PostMessage(context.Background(), "C1", apiMessage, ""); err != nil {
		t.Fatal(err)
	}
	if p := <-reqs; p != "/api/chat.postMessage" {
		t.Errorf("path = %q", p)
	}
}

func TestAPISuccessAnswers(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 2*maxAPIResponse)
	for _, tt := range []struct {
		name, body, wantTS string
	}{
		{"plain", `{"ok":true,"channel":"C1","ts":"1700000000.000100"}`, "1700000000.000100"},
		// Posted, but nothing to update it by: an error would post it twice.
		{"no ts", `{"ok":true,"channel":"C1"}`, ""},
		{"ts not a string", `{"ok":true,"ts":17}`, ""},
		// The echo of a long message outgrows the bound on the answer.
		{"long echo", `{"ok":true,"channel":"C1","ts":"1700000000.000100","message":{"text":"` + huge + `"}}`, "1700000000.000100"},
		{"cut after ts", `{"ok":true,"ts":"1700000000.000100","message":{"te`, "1700000000.000100"},
		{"cut before ts", `{"ok":true,"message":{"te`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			api, _, _ := fakeAPI(t, answer(200, tt.body))
			ts, err := api.PostMessage(context.Background(), "C1", apiMessage, "")
			if err != nil || ts != tt.wantTS {
				t.Errorf("PostMessage = %q, %v; want %q, nil", ts, err, tt.wantTS)
			}
			if err := api.Update(context.Background(), "C1", "1700000000.000100", apiMessage); err != nil {
				t.Errorf("Update: %v", err)
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	type kind int
	const (
		permanent kind = iota
		temporary
		limited
	)
	okFalse := func(code string) string { return `{"ok":false,"error":"` + code + `"}` }
	tests := []struct {
		name    string
		handler http.HandlerFunc
		timeout time.Duration
		kind    kind
		status  int           // of the error, when not 0
		reason  string        // of the error, when not ""
		wait    time.Duration // of a RateLimitedError
	}{
		{name: "429 with Retry-After", handler: answer(429, okFalse("ratelimited"), "Retry-After", "3"), kind: limited, wait: 3 * time.Second},
		{name: "429 without Retry-After", handler: answer(429, ""), kind: limited, wait: time.Second},
		{name: "ok:false ratelimited with Retry-After", handler: answer(200, okFalse("ratelimited"), "Retry-After", "7"), kind: limited, wait: 7 * time.Second},
		{name: "ok:false rate_limited", handler: answer(200, okFalse("rate_limited")), kind: limited, wait: time.Second},

		{name: "internal_error", handler: answer(200, okFalse("internal_error")), kind: temporary, status: 200, reason: "internal_error"},
		{name: "fatal_error", handler: answer(200, okFalse("fatal_error")), kind: temporary, status: 200, reason: "fatal_error"},
		{name: "service_unavailable", handler: answer(200, okFalse("service_unavailable")), kind: temporary, status: 200, reason: "service_unavailable"},
		{name: "request_timeout", handler: answer(200, okFalse("request_timeout")), kind: temporary, status: 200, reason: "request_timeout"},
		{name: "team_added_to_org", handler: answer(200, okFalse("team_added_to_org")), kind: temporary, status: 200, reason: "team_added_to_org"},

		{name: "invalid_auth", handler: answer(200, okFalse("invalid_auth")), status: 200, reason: "invalid_auth"},
		{name: "not_authed", handler: answer(200, okFalse("not_authed")), status: 200, reason: "not_authed"},
		{name: "account_inactive", handler: answer(200, okFalse("account_inactive")), status: 200, reason: "account_inactive"},
		{name: "token_revoked", handler: answer(200, okFalse("token_revoked")), status: 200, reason: "token_revoked"},
		{name: "channel_not_found", handler: answer(200, okFalse("channel_not_found")), status: 200, reason: "channel_not_found"},
		{name: "not_in_channel", handler: answer(200, okFalse("not_in_channel")), status: 200, reason: "not_in_channel"},
		{name: "is_archived", handler: answer(200, okFalse("is_archived")), status: 200, reason: "is_archived"},
		{name: "msg_too_long", handler: answer(200, okFalse("msg_too_long")), status: 200, reason: "msg_too_long"},
		{name: "no_text", handler: answer(200, okFalse("no_text")), status: 200, reason: "no_text"},
		{name: "invalid_blocks", handler: answer(200, okFalse("invalid_blocks")), status: 200, reason: "invalid_blocks"},
		{name: "message_not_found", handler: answer(200, okFalse("message_not_found")), status: 200, reason: "message_not_found"},
		{name: "cant_update_message", handler: answer(200, okFalse("cant_update_message")), status: 200, reason: "cant_update_message"},
		{name: "missing_scope", handler: answer(200, okFalse("missing_scope")), status: 200, reason: "missing_scope"},
		{name: "a code Slack adds later", handler: answer(200, okFalse("brand_new_error")), status: 200, reason: "brand_new_error"},
		{name: "ok:false without a code", handler: answer(200, `{"ok":false}`), status: 200, reason: "ok:false without an error code"},
		{name: "error code echoing the token", handler: answer(200, okFalse("bad token "+testToken+" and "+tokenTail)), status: 200, reason: "bad token [token] and [token]"},
		{name: "huge error code", handler: answer(200, okFalse(strings.Repeat("e", 10000))), status: 200},

		{name: "500 text", handler: answer(500, "internal_error"), kind: temporary, status: 500, reason: "internal_error"},
		{name: "503 JSON", handler: answer(503, okFalse("service_unavailable")), kind: temporary, status: 503, reason: "service_unavailable"},
		{name: "502 empty", handler: answer(502, ""), kind: temporary, status: 502, reason: "Bad Gateway"},
		{name: "400 JSON", handler: answer(400, okFalse("invalid_arguments")), status: 400, reason: "invalid_arguments"},
		{name: "404 page", handler: answer(404, "<html>no such thing</html>"), status: 404, reason: "<html>no such thing</html>"},
		{
			name: "403 echoing the Authorization header",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "forbidden: "+r.Header.Get("Authorization"), 403)
			},
			status: 403, reason: "forbidden: Bearer [token]",
		},
		{name: "redirect", handler: answer(302, "", "Location", "https://elsewhere.example/"), status: 302},

		{name: "200 not JSON", handler: answer(200, "<html>proxy</html>"), kind: temporary, status: 200, reason: "answer is not a JSON object"},
		{name: "200 JSON array", handler: answer(200, "[]"), kind: temporary, status: 200, reason: "answer is not a JSON object"},
		{name: "200 without ok", handler: answer(200, `{"ts":"1.2"}`), kind: temporary, status: 200},
		{name: "200 cut short", handler: answer(200, `{"ok":`), kind: temporary, status: 200, reason: "answer cut short"},
		{name: "200 empty", handler: answer(200, ""), kind: temporary, status: 200, reason: "answer cut short"},
		{
			name: "slower than the deadline",
			handler: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			},
			timeout: 100 * time.Millisecond,
			kind:    temporary, reason: "context deadline exceeded",
		},
		{
			name: "connection dropped",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
					conn.Close()
				}
			},
			kind: temporary,
		},
	}
	calls := []struct {
		op   string
		call func(t *testing.T, ctx context.Context, api *API) error
	}{
		{opPostMessage, func(t *testing.T, ctx context.Context, api *API) error {
			ts, err := api.PostMessage(ctx, "C1", apiMessage, "")
			if ts != "" {
				t.Errorf("PostMessage returned ts %q with error %v", ts, err)
			}
			return err
		}},
		{opUpdate, func(_ *testing.T, ctx context.Context, api *API) error {
			return api.Update(ctx, "C1", "1700000000.000100", apiMessage)
		}},
	}
	for _, tt := range tests {
		for _, c := range calls {
			t.Run(tt.name+"/"+c.op, func(t *testing.T) {
				t.Parallel()
				api, _, _ := fakeAPI(t, tt.handler)
				ctx := context.Background()
				if tt.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.timeout)
					defer cancel()
				}
				err := c.call(t, ctx, api)
				if err == nil {
					t.Fatal("succeeded, want an error")
				}
				assertNoTokenLeak(t, err)
				if !strings.HasPrefix(err.Error(), c.op+": ") {
					t.Errorf("err = %q, want it to start with %q", err, c.op+": ")
				}
				if got := Retryable(err); got != (tt.kind != permanent) {
					t.Errorf("Retryable(%v) = %v", err, got)
				}
				var status int
				var reason string
				switch tt.kind {
				case permanent:
					pe, ok := errors.AsType[*PermanentError](err)
					if !ok {
						t.Fatalf("err = %#v, want a PermanentError", err)
					}
					status, reason = pe.Status, pe.Reason
				case temporary:
					te, ok := errors.AsType[*TemporaryError](err)
					if !ok {
						t.Fatalf("err = %#v, want a TemporaryError", err)
					}
					status, reason = te.Status, te.Reason
				case limited:
					rl, ok := errors.AsType[*RateLimitedError](err)
					if !ok || rl.RetryAfter != tt.wait {
						t.Fatalf("err = %#v, want a RateLimitedError of %v", err, tt.wait)
					}
					return
				}
				if tt.status != 0 && status != tt.status {
					t.Errorf("status = %d, want %d (%v)", status, tt.status, err)
				}
				if tt.reason != "" && reason != tt.reason {
					t.Errorf("reason = %q, want %q", reason, tt.reason)
				}
				if n := len([]rune(reason)); n == 0 || n > maxReason {
					t.Errorf("reason has %d characters, want 1 to %d", n, maxReason)
				}
				if tt.timeout > 0 && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err = %v, want it to wrap the deadline", err)
				}
				if got := errors.Is(err, ErrMessageNotFound); got != (tt.reason == "message_not_found") {
					t.Errorf("errors.Is(%v, ErrMessageNotFound) = %v", err, got)
				}
			})
		}
	}
}

func TestAPIErrorMessages(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&PermanentError{op: opUpdate, Status: 200, Reason: "message_not_found"}, "slack api chat.update: HTTP 200: message_not_found"},
		{&PermanentError{op: opPostMessage, Reason: "no bot token"}, "slack api chat.postMessage: no bot token"},
		{&TemporaryError{op: opPostMessage, Reason: "connection refused"}, "slack api chat.postMessage: connection refused"},
		{&TemporaryError{op: opUpdate, Status: 503, Reason: "Service Unavailable"}, "slack api chat.update: HTTP 503: Service Unavailable"},
		{&RateLimitedError{op: opUpdate, RetryAfter: 2 * time.Second}, "slack api chat.update: rate limited, retry after 2s"},
		// The webhook's own messages stay as they were.
		{&PermanentError{Status: 400, Reason: "invalid_payload"}, "slack webhook: HTTP 400: invalid_payload"},
		{&TemporaryError{Reason: "timeout"}, "slack webhook: POST: timeout"},
		{&RateLimitedError{RetryAfter: time.Second}, "slack webhook: rate limited (HTTP 429), retry after 1s"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestErrMessageNotFound(t *testing.T) {
	api, _, _ := fakeAPI(t, answer(200, `{"ok":false,"error":"message_not_found"}`))
	err := api.Update(context.Background(), "C1", "1700000000.000100", apiMessage)
	wrapped := fmt.Errorf("updating: %w", err)
	if !errors.Is(wrapped, ErrMessageNotFound) {
		t.Errorf("errors.Is(%v, ErrMessageNotFound) = false", wrapped)
	}
	if pe, ok := errors.AsType[*PermanentError](wrapped); !ok || pe.Reason != "message_not_found" {
		t.Errorf("errors.As(%v, *PermanentError) = %v", wrapped, ok)
	}
	for _, other := range []error{
		&PermanentError{Status: 200, Reason: "channel_not_found"},
		&TemporaryError{Status: 200, Reason: "message_not_found"},
		errors.New("message_not_found"),
	} {
		if errors.Is(other, ErrMessageNotFound) {
			t.Errorf("errors.Is(%#v, ErrMessageNotFound) = true", other)
		}
	}
}

func TestAPIConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL + "/api"
	srv.Close()
	_, err := NewAPI(base, testToken, nil).PostMessage(context.Background(), "C1", apiMessage, "")
	if want := "slack api chat.postMessage: connection refused"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if !Retryable(err) {
		t.Errorf("Retryable(%v) = false", err)
	}
}

func TestAPIClientTimeout(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Until the body is read, the server does not notice the client
		// hanging up, and Close would wait out the ten seconds.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	hc := srv.Client()
	hc.Timeout = 100 * time.Millisecond
	err := NewAPI(srv.URL, testToken, hc).Update(context.Background(), "C1", "1.2", apiMessage)
	if _, ok := errors.AsType[*TemporaryError](err); !ok {
		t.Fatalf("err = %#v, want a TemporaryError", err)
	}
	assertNoTokenLeak(t, err)
}

// A misconfiguration fails at once, without a request, and says what is
// wrong without showing the token.
func TestAPIMisconfigured(t *testing.T) {
	t.Parallel()
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests++ }))
	t.Cleanup(srv.Close)
	for _, tt := range []struct{ base, token, reason string }{
		{srv.URL, "", "no bot token"},
		{srv.URL, testToken + "\n", "bot token holds a space, control or non-ASCII character"},
		{srv.URL, "xoxb-1 " + tokenTail, "bot token holds a space, control or non-ASCII character"},
		{"slack.com/api", testToken, "invalid API base URL: not an http or https URL"},
		{"", testToken, "invalid API base URL: not an http or https URL"},
	} {
		_, err := NewAPI(tt.base, tt.token, nil).PostMessage(context.Background(), "C1", apiMessage, "")
		pe, ok := errors.AsType[*PermanentError](err)
		if !ok || pe.Reason != tt.reason {
			t.Errorf("NewAPI(%q, %q): err = %v, want PermanentError %q", tt.base, tt.token, err, tt.reason)
		}
		assertNoTokenLeak(t, err)
	}
	if requests != 0 {
		t.Errorf("a misconfigured client sent %d requests", requests)
	}
}

// A redirect is not followed: it would carry the token elsewhere.
func TestAPIDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	followed := make(chan string, 1)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed <- r.Header.Get("Authorization")
	}))
	t.Cleanup(elsewhere.Close)
	api, _, _ := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/x", http.StatusTemporaryRedirect)
	})
	_, err := api.PostMessage(context.Background(), "C1", apiMessage, "")
	if err == nil || Retryable(err) {
		t.Errorf("err = %v, want a permanent error", err)
	}
	select {
	case <-followed:
		t.Error("the redirect was followed")
	default:
	}
}

func TestAPIDoesNotShowToken(t *testing.T) {
	api := NewAPI("https://slack.com/api", testToken, nil)
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	log.Info("posting", "api", api, "value", *api)
	fmt.Fprintf(&out, "%v %+v %#v %s %q %d %x %v", api, api, api, api, api, api, *api, []any{api})
	if s := out.String(); strings.Contains(s, tokenTail) || strings.Contains(s, "xoxb") {
		t.Errorf("formatted client shows the token: %s", s)
	}
	if !strings.Contains(out.String(), "slack api") {
		t.Errorf("formatted client does not say what it is: %s", out.String())
	}
}
