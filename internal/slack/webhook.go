package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// Slack answers with a word or two; more is a proxy's error page, and
	// reading it whole would let a misbehaving server hold the worker.
	maxResponseBody = 4 << 10
	maxDrain        = 64 << 10
	maxReason       = 200

	defaultRetryAfter = time.Second
	maxRetryAfter     = 5 * time.Minute

	// defaultTimeout bounds an attempt when the caller gives neither an
	// http.Client nor a context deadline.
	defaultTimeout = 30 * time.Second

	userAgent = "ciwebhook"
)

// Client posts messages to one Slack incoming webhook. The webhook URL is a
// credential: it never appears in an error, a log line or a formatted Client.
type Client struct {
	url    string
	urlErr error // why url is unusable; reported by Post without the URL
	http   *http.Client
}

// NewWebhook returns a client for the incoming webhook at url. A nil
// httpClient means a client with a 30 s timeout that does not follow
// redirects (a webhook that redirects is misconfigured, and following it
// would send the message elsewhere).
func NewWebhook(url string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = defaultHTTPClient()
	}
	return &Client{url: url, urlErr: checkURL(url), http: httpClient}
}

func defaultHTTPClient() *http.Client {
	return &http.Client{
		// A transport of its own: http.DefaultTransport is shared with
		// the rest of the program, whose CloseIdleConnections (an
		// httptest.Server's Close calls it) would cut a post in flight.
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
		Timeout:   defaultTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("not an http or https URL")
	}
	return nil
}

// String names the client without its URL.
func (Client) String() string { return "webhook" }

// Format keeps every fmt verb, %#v and %+v included, from printing the URL.
func (c Client) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// LogValue keeps slog from printing the URL.
func (c Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Post sends one message with one fresh request; retrying is the caller's
// business, guided by the error's type (see Retryable). The context bounds
// the attempt.
func (c *Client) Post(ctx context.Context, m Message) error {
	if c.urlErr != nil {
		return &PermanentError{Reason: "invalid webhook URL: " + c.urlErr.Error()}
	}
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false) // mrkdwn is already escaped; \u0026amp; only bloats it
	if err := enc.Encode(m); err != nil {
		return &PermanentError{Reason: "encode message: " + err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, &body)
	if err != nil {
		// The error quotes the URL; checkURL has said what matters.
		return &PermanentError{Reason: "invalid webhook URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)

	resp, err := c.http.Do(req)
	if err != nil {
		return &TemporaryError{Reason: c.describe(err), Err: unwrapURLError(err)}
	}
	defer func() {
		// Draining lets the connection be reused; the bound keeps a server
		// that never stops talking from holding the worker.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		_ = resp.Body.Close()
	}()
	raw, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	reason := c.reason(raw, resp.StatusCode)

	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		if readErr != nil {
			// Slack may have posted it; a duplicate beats a lost message.
			return &TemporaryError{Status: code, Reason: "reading response: " + c.describe(readErr), Err: readErr}
		}
		if strings.TrimSpace(string(raw)) == "ok" {
			return nil
		}
		return &PermanentError{Status: code, Reason: reason}
	case code == http.StatusTooManyRequests:
		return &RateLimitedError{RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	case code >= 500:
		return &TemporaryError{Status: code, Reason: reason}
	default:
		// Other 4xx, and 1xx/2xx/3xx that Slack never sends: the same
		// message would fail the same way again.
		return &PermanentError{Status: code, Reason: reason}
	}
}

// PermanentError is a refusal that retrying will not change: Slack's reason
// (invalid_payload, channel_not_found, no_service, ...) is kept.
type PermanentError struct {
	Status int // HTTP status; 0 when the request was never sent
	Reason string
	op     string // who failed, for the message; "" is the webhook
}

func (e *PermanentError) Error() string {
	if e.Status == 0 {
		return prefix(e.op) + e.Reason
	}
	return prefix(e.op) + "HTTP " + strconv.Itoa(e.Status) + ": " + e.Reason
}

// Is makes a chat.update of a deleted message recognisable without parsing
// reasons, while it stays a PermanentError for code that only asks whether
// to retry. It goes by Reason alone, so that the error another package's
// test builds for a fake Slack matches too.
func (e *PermanentError) Is(target error) bool {
	return target == ErrMessageNotFound && e.Reason == "message_not_found"
}

// RateLimitedError is Slack's 429: post again after RetryAfter.
type RateLimitedError struct {
	RetryAfter time.Duration
	op         string
}

func (e *RateLimitedError) Error() string {
	if e.op == "" {
		return "slack webhook: rate limited (HTTP 429), retry after " + e.RetryAfter.String()
	}
	// The Web API also says it with ok:false on a 200, so no status here.
	return prefix(e.op) + "rate limited, retry after " + e.RetryAfter.String()
}

// TemporaryError is a failure that may pass: a 5xx, a timeout, a connection
// that failed. Its Reason has been stripped of the webhook URL.
type TemporaryError struct {
	Status int // HTTP status; 0 when no response came
	Reason string
	Err    error // the transport error, without net/http's URL wrapper
	op     string
}

func (e *TemporaryError) Error() string {
	switch {
	case e.Status != 0:
		return prefix(e.op) + "HTTP " + strconv.Itoa(e.Status) + ": " + e.Reason
	case e.op == "":
		return "slack webhook: POST: " + e.Reason
	}
	return prefix(e.op) + e.Reason
}

// prefix starts an error message with what failed: the webhook, or the Web
// API method named by op.
func prefix(op string) string {
	if op == "" {
		return "slack webhook: "
	}
	return op + ": "
}

func (e *TemporaryError) Unwrap() error { return e.Err }

// Retryable reports whether posting the same message again may succeed.
func Retryable(err error) bool {
	var rl *RateLimitedError
	var te *TemporaryError
	return errors.As(err, &rl) || errors.As(err, &te)
}

// unwrapURLError drops net/http's *url.Error, whose message is the URL.
func unwrapURLError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

// describe says in a few words why a request failed, without the URL.
func (c *Client) describe(err error) string { return describeErr(err, c.scrub) }

// describeErr says in a few words why a request failed; scrub removes the
// caller's secret from what the error itself says.
func describeErr(err error, scrub func(string) string) string {
	err = unwrapURLError(err)
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "context deadline exceeded"
	case errors.Is(err, context.Canceled):
		return "context canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed before the response"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	// Scrubbing before cutting: a secret cut in half would slip past.
	return oneLine(scrub(err.Error()), maxReason)
}

// reason is the response body as an error reason: one short line, and never
// the URL, which an error page may well echo back.
func (c *Client) reason(body []byte, status int) string {
	s := oneLine(c.scrub(string(body)), maxReason) // scrubbed whole: a cut could split the URL
	if s == "" {
		if s = http.StatusText(status); s == "" {
			s = "empty response"
		}
	}
	return s
}

// scrub removes the webhook URL and every telling part of its path (the
// secret is the last segment of /services/T…/B…/secret).
func (c *Client) scrub(s string) string {
	u, err := url.Parse(c.url)
	if err != nil {
		return strings.ReplaceAll(s, c.url, "[webhook]")
	}
	secrets := []string{c.url, u.Host + u.EscapedPath(), u.EscapedPath(), u.Path, u.RawQuery}
	for seg := range strings.SplitSeq(u.Path, "/") {
		if seg != "" && seg != "services" {
			secrets = append(secrets, seg)
		}
	}
	for _, p := range secrets {
		if len(p) > 1 {
			s = strings.ReplaceAll(s, p, "[webhook]")
		}
	}
	return s
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(sanitize(s)), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + ellipsis
	}
	return s
}

// retryAfter reads a Retry-After header: seconds or an HTTP date. Absent or
// garbled means one second; the wait is at least that (retrying a 429 at
// once only earns another) and at most five minutes, so a wild value
// cannot park the outbox.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	d := defaultRetryAfter
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// On overflow ParseInt returns the extreme of the right sign.
		if secs > 0 {
			d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, defaultRetryAfter), maxRetryAfter)
}
