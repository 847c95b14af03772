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
	"sync"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/event"
)

const secretPath = "/services/T000/B000/XXXXSECRET"

// assertNoLeak fails when any rendering of err, or of an error it wraps,
// shows the webhook URL or a telling part of its path.
func assertNoLeak(t *testing.T, err error, webhookURL string) {
	t.Helper()
	secrets := []string{webhookURL, secretPath, "XXXXSECRET", "/services/"}
	for e := err; e != nil; e = errors.Unwrap(e) {
		for _, text := range []string{e.Error(), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e)} {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("error leaks %q: %s", s, text)
				}
			}
		}
	}
}

// received is what the fake Slack saw of one request.
type received struct {
	method, contentType, userAgent, path string
	body                                 []byte
}

func fakeSlack(t *testing.T, h http.HandlerFunc) (*httptest.Server, *[]received, *sync.Mutex) {
	t.Helper()
	var mu sync.Mutex
	var got []received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, received{r.Method, r.Header.Get("Content-Type"), r.Header.Get("User-Agent"), r.URL.Path, body})
		mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &got, &mu
}

func answer(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

var testMessage = Render(event.Notification{
	Kind: "workflow_run", Outcome: event.Failure, Title: "CI", Repo: "o/r", Branch: "main", Number: 1,
	URL: "https://github.com/o/r/actions/runs/1",
})

func TestPostSuccess(t *testing.T) {
	t.Parallel()
	srv, got, mu := fakeSlack(t, answer(200, "ok"))
	c := NewWebhook(srv.URL+secretPath, srv.Client())
	if err := c.Post(context.Background(), testMessage); err != nil {
		t.Fatalf("Post: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(*got) != 1 {
		t.Fatalf("Slack got %d requests, want 1", len(*got))
	}
	r := (*got)[0]
	if r.method != http.MethodPost || r.contentType != "application/json" || r.userAgent != "ciwebhook" || r.path != secretPath {
		t.Errorf("request = %s %s, Content-Type %q, User-Agent %q", r.method, r.path, r.contentType, r.userAgent)
	}
	var m Message
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	if m.Text != testMessage.Text || len(m.Blocks) != len(testMessage.Blocks) {
		t.Errorf("Slack got %+v, want %+v", m, testMessage)
	}
}

func TestPostErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		timeout   time.Duration
		retryable bool
		check     func(t *testing.T, err error)
	}{
		{
			name:    "200 with another body",
			handler: answer(200, "  no_text \n"),
			check: func(t *testing.T, err error) {
				var pe *PermanentError
				if !errors.As(err, &pe) || pe.Status != 200 || pe.Reason != "no_text" {
					t.Errorf("err = %#v, want PermanentError 200 no_text", err)
				}
			},
		},
		{
			name:      "429 with Retry-After",
			handler:   answer(429, "rate_limited", "Retry-After", "3"),
			retryable: true,
			check: func(t *testing.T, err error) {
				var rl *RateLimitedError
				if !errors.As(err, &rl) || rl.RetryAfter != 3*time.Second {
					t.Errorf("err = %#v, want RateLimitedError 3s", err)
				}
			},
		},
		{
			name:      "429 without Retry-After",
			handler:   answer(429, "rate_limited"),
			retryable: true,
			check: func(t *testing.T, err error) {
				var rl *RateLimitedError
				if !errors.As(err, &rl) || rl.RetryAfter != time.Second {
					t.Errorf("err = %#v, want RateLimitedError 1s", err)
				}
			},
		},
		{
			name:    "400 invalid_payload",
			handler: answer(400, "invalid_payload"),
			check: func(t *testing.T, err error) {
				var pe *PermanentError
				if !errors.As(err, &pe) || pe.Status != 400 || pe.Reason != "invalid_payload" {
					t.Errorf("err = %#v, want PermanentError 400 invalid_payload", err)
				}
				if !strings.Contains(err.Error(), "invalid_payload") {
					t.Errorf("error %q lost Slack's reason", err)
				}
			},
		},
		{
			name:    "404 no_service",
			handler: answer(404, "no_service"),
			check: func(t *testing.T, err error) {
				var pe *PermanentError
				if !errors.As(err, &pe) || pe.Status != 404 || pe.Reason != "no_service" {
					t.Errorf("err = %#v, want PermanentError 404 no_service", err)
				}
			},
		},
		{
			name: "403 echoing the URL back",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "forbidden: "+r.URL.String()+" ("+r.Host+r.URL.Path+")", 403)
			},
			check: func(t *testing.T, err error) {
				var pe *PermanentError
				if !errors.As(err, &pe) || pe.Status != 403 || !strings.HasPrefix(pe.Reason, "forbidden:") {
					t.Errorf("err = %#v, want PermanentError 403 forbidden", err)
				}
			},
		},
		{
			name:    "400 with a huge body",
			handler: answer(400, strings.Repeat("x", 1<<20)),
			check: func(t *testing.T, err error) {
				var pe *PermanentError
				if !errors.As(err, &pe) || len([]rune(pe.Reason)) > 200 {
					t.Errorf("err = %.300v, want PermanentError with a short reason", err)
				}
			},
		},
		{
			name:      "500",
			handler:   answer(500, "internal_error"),
			retryable: true,
			check: func(t *testing.T, err error) {
				var te *TemporaryError
				if !errors.As(err, &te) || te.Status != 500 || te.Reason != "internal_error" {
					t.Errorf("err = %#v, want TemporaryError 500", err)
				}
			},
		},
		{
			name:      "503 with empty body",
			handler:   answer(503, ""),
			retryable: true,
			check: func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), "Service Unavailable") {
					t.Errorf("err = %v, want the status text as reason", err)
				}
			},
		},
		{
			name: "slower than the deadline",
			handler: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			},
			timeout:   100 * time.Millisecond,
			retryable: true,
			check: func(t *testing.T, err error) {
				if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "deadline exceeded") {
					t.Errorf("err = %v, want a deadline error", err)
				}
			},
		},
		{
			name: "connection dropped",
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
			},
			retryable: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _, _ := fakeSlack(t, tt.handler)
			webhookURL := srv.URL + secretPath
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			err := NewWebhook(webhookURL, srv.Client()).Post(ctx, testMessage)
			if err == nil {
				t.Fatal("Post succeeded, want an error")
			}
			if got := Retryable(err); got != tt.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", err, got, tt.retryable)
			}
			if tt.check != nil {
				tt.check(t, err)
			}
			assertNoLeak(t, err, webhookURL)
		})
	}
}

func TestPostConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	webhookURL := srv.URL + secretPath
	srv.Close()
	err := NewWebhook(webhookURL, nil).Post(context.Background(), testMessage)
	if err == nil || !Retryable(err) {
		t.Fatalf("Post to a closed server: err = %v, want a retryable error", err)
	}
	if want := "slack webhook: POST: connection refused"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	assertNoLeak(t, err, webhookURL)
}

func TestPostClientTimeout(t *testing.T) {
	t.Parallel()
	srv, _, _ := fakeSlack(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	webhookURL := srv.URL + secretPath
	hc := srv.Client()
	hc.Timeout = 100 * time.Millisecond
	err := NewWebhook(webhookURL, hc).Post(context.Background(), testMessage)
	if err == nil || !Retryable(err) {
		t.Fatalf("err = %v, want a retryable error", err)
	}
	assertNoLeak(t, err, webhookURL)
}

func TestPostInvalidURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"ftp://hooks.example" + secretPath, "::" + secretPath, "hooks.slack.com" + secretPath, ""} {
		err := NewWebhook(u, nil).Post(context.Background(), testMessage)
		if err == nil || Retryable(err) {
			t.Errorf("Post to %q: err = %v, want a permanent error", u, err)
			continue
		}
		if u != "" {
			assertNoLeak(t, err, u)
		}
	}
}

// A redirect is not followed: the message must not go anywhere but the
// configured webhook.
func TestPostDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	elsewhere, got, mu := fakeSlack(t, answer(200, "ok"))
	srv, _, _ := fakeSlack(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/x", http.StatusTemporaryRedirect)
	})
	err := NewWebhook(srv.URL+secretPath, nil).Post(context.Background(), testMessage)
	if err == nil || Retryable(err) {
		t.Errorf("err = %v, want a permanent error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(*got) != 0 {
		t.Errorf("the redirect target got %d requests", len(*got))
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"3":                        3 * time.Second,
		" 12 ":                     12 * time.Second,
		"":                         time.Second,
		"soon":                     time.Second,
		"1.5":                      time.Second,
		"-4":                       time.Second,
		"0":                        time.Second,
		"3600":                     5 * time.Minute,
		"99999999999999999999999":  5 * time.Minute,
		"-99999999999999999999999": time.Second,
		now.Add(20 * time.Second).Format(http.TimeFormat): 20 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       time.Second,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("other"), false},
		{&PermanentError{Status: 400}, false},
		{&RateLimitedError{RetryAfter: time.Second}, true},
		{&TemporaryError{Status: 502}, true},
		{fmt.Errorf("posting: %w", &TemporaryError{Reason: "timeout"}), true},
		{fmt.Errorf("posting: %w", &PermanentError{Status: 404}), false},
	} {
		if got := Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestClientDoesNotShowURL(t *testing.T) {
	webhookURL := "https://hooks.slack.com" + secretPath
	c := NewWebhook(webhookURL, nil)
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	log.Info("posting", "client", c, "value", *c)
	fmt.Fprintf(&out, "%v %+v %#v %s %q %d %x", c, c, c, c, c, c, *c)
	if s := out.String(); strings.Contains(s, "XXXXSECRET") || strings.Contains(s, "/services/") {
		t.Errorf("formatted client shows the URL: %s", s)
	}
	if !strings.Contains(out.String(), "webhook") {
		t.Errorf("formatted client does not say what it is: %s", out.String())
	}
}
