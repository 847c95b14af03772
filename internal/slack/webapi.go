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
	"strings"
	"time"
)

// ErrMessageNotFound is what chat.update answers for a message someone
// deleted: updating it will never work, but posting afresh may. The error
// that carries it is also a *PermanentError.
var ErrMessageNotFound = errors.New("slack: message not found")

const (
	// The Web API echoes the message back in its answer, so it is far
	// longer than a webhook's "ok". An echo longer still is cut off harmlessly:
	// ok and ts come before it.
	maxAPIResponse = 64 << 10

	opPostMessage = "slack api chat.postMessage"
	opUpdate      = "slack api chat.update"
)

// API is a Slack Web API client for one bot token. The token is a
// credential: it never appears in an error, a log line or a formatted API.
type API struct {
	base    string
	baseErr error // why base is unusable; reported by every call
	token   string
	http    *http.Client
}

// NewAPI returns a client for the Web API at baseURL (such as
// "https://slack.com/api"). A nil httpClient means the same client
// NewWebhook makes: a 30 s timeout and no redirects, since a redirect would
// carry the token elsewhere.
func NewAPI(baseURL string, token string, httpClient *http.Client) *API {
	if httpClient == nil {
		httpClient = defaultHTTPClient()
	}
	base := strings.TrimSuffix(baseURL, "/")
	return &API{base: base, baseErr: checkURL(base), token: token, http: httpClient}
}

// String names the client without its token.
func (API) String() string { return "slack api" }

// Format keeps every fmt verb, %#v and %+v included, from printing the token.
func (a API) Format(f fmt.State, _ rune) { io.WriteString(f, a.String()) }

// LogValue keeps slog from printing the token.
func (a API) LogValue() slog.Value { return slog.StringValue(a.String()) }

type postMessageRequest struct {
	Channel  string  `json:"channel"`
	Text     string  `json:"text"`
	Blocks   []Block `json:"blocks,omitempty"`
	ThreadTS string  `json:"thread_ts,omitempty"`
	// Sent as false, not left out: a link to a GitHub run would otherwise
	// grow a preview card bigger than the notification.
	UnfurlLinks bool `json:"unfurl_links"`
	UnfurlMedia bool `json:"unfurl_media"`
}

type updateRequest struct {
	Channel string `json:"channel"`
	TS      string `json:"ts"`
	Text    string `json:"text"`
	// Never left out: chat.update keeps the old blocks when the field is
	// missing, and a text-only update must replace them.
	Blocks []Block `json:"blocks"`
}

// PostMessage posts m to channel, in the thread of threadTS unless that is
// "", with one fresh request; retrying is the caller's business, guided by
// the error's type (see Retryable). It returns the new message's ts, by
// which Update finds it again.
//
// An answer ok:true without a usable ts returns "" and no error: the message
// is in the channel, so an error would have it posted again (or, permanent,
// recorded as undelivered when it was delivered). The caller just cannot
// update that one.
func (a *API) PostMessage(ctx context.Context, channel string, m Message, threadTS string) (ts string, err error) {
	ans, err := a.call(ctx, "chat.postMessage", opPostMessage, postMessageRequest{
		Channel: channel, Text: m.Text, Blocks: m.Blocks, ThreadTS: threadTS,
	})
	if err != nil {
		return "", err
	}
	return ans.TS, nil
}

// Update replaces the text and blocks of the message ts in channel. A
// message someone deleted gives an error for which errors.Is(err,
// ErrMessageNotFound) holds.
func (a *API) Update(ctx context.Context, channel, ts string, m Message) error {
	blocks := m.Blocks
	if blocks == nil {
		blocks = []Block{}
	}
	_, err := a.call(ctx, "chat.update", opUpdate, updateRequest{
		Channel: channel, TS: ts, Text: m.Text, Blocks: blocks,
	})
	return err
}

func (a *API) call(ctx context.Context, method, op string, payload any) (apiAnswer, error) {
	if a.baseErr != nil {
		return apiAnswer{}, &PermanentError{op: op, Reason: "invalid API base URL: " + a.baseErr.Error()}
	}
	if err := checkToken(a.token); err != nil {
		return apiAnswer{}, &PermanentError{op: op, Reason: err.Error()}
	}
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false) // mrkdwn is already escaped; \u0026amp; only bloats it
	if err := enc.Encode(payload); err != nil {
		return apiAnswer{}, &PermanentError{op: op, Reason: "encode message: " + err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/"+method, &body)
	if err != nil {
		return apiAnswer{}, &PermanentError{op: op, Reason: "invalid API base URL"}
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", userAgent)

	resp, err := a.http.Do(req)
	if err != nil {
		return apiAnswer{}, &TemporaryError{op: op, Reason: describeErr(err, a.scrub), Err: unwrapURLError(err)}
	}
	defer func() {
		// Draining lets the connection be reused; the bound keeps a server
		// that never stops talking from holding the worker.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		_ = resp.Body.Close()
	}()

	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		ans, err := readAnswer(io.LimitReader(resp.Body, maxAPIResponse))
		switch {
		case ans.OK:
			// Whatever went wrong after ok:true, a message echo too long
			// for the bound say, the call took effect.
			return ans, nil
		case err != nil:
			// Unreadable, perhaps a proxy's page: Slack may have posted
			// it, and a duplicate beats a lost message. An update is
			// idempotent, so retrying one costs nothing.
			return ans, &TemporaryError{op: op, Status: code, Reason: a.unreadable(err), Err: err}
		}
		return ans, a.refusal(op, code, ans.Error, resp.Header)
	case code == http.StatusTooManyRequests:
		return apiAnswer{}, &RateLimitedError{op: op, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	case code >= 500:
		return apiAnswer{}, &TemporaryError{op: op, Status: code, Reason: a.reason(resp.Body, code)}
	default:
		// Other 4xx, a redirect not followed, and statuses Slack never
		// sends: the same call would fail the same way again.
		return apiAnswer{}, &PermanentError{op: op, Status: code, Reason: a.reason(resp.Body, code)}
	}
}

// refusal turns an ok:false answer into an error whose type says whether to
// call again. ok:false means nothing was posted or changed, so retrying
// cannot duplicate a message.
func (a *API) refusal(op string, status int, code string, h http.Header) error {
	switch code {
	case "ratelimited", "rate_limited":
		return &RateLimitedError{op: op, RetryAfter: retryAfter(h.Get("Retry-After"), time.Now())}
	case "internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org":
		return &TemporaryError{op: op, Status: status, Reason: code}
	case "":
		return &PermanentError{op: op, Status: status, Reason: "ok:false without an error code"}
	}
	// invalid_auth, channel_not_found, message_not_found, ... and codes
	// Slack adds later: none passes by itself.
	return &PermanentError{op: op, Status: status, Reason: a.clean(code)}
}

// apiAnswer is what matters of a Web API answer.
type apiAnswer struct {
	OK    bool
	Error string
	TS    string
}

var errNotObject = errors.New("answer is not a JSON object")

// readAnswer reads the top-level fields ok, error and ts. Token by token,
// because an answer cut short still returns what came before the cut: the
// echo of a long message may outgrow the bound, and the ok:true and ts
// before it must not be lost, or the message would be posted again.
func readAnswer(r io.Reader) (apiAnswer, error) {
	var ans apiAnswer
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil {
		return ans, err
	} else if t != json.Delim('{') {
		return ans, errNotObject
	}
	seenOK := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return ans, err
		}
		var dst any = new(json.RawMessage)
		switch t {
		case "ok":
			dst, seenOK = &ans.OK, true
		case "error":
			dst = &ans.Error
		case "ts":
			dst = &ans.TS
		}
		if err := dec.Decode(dst); err != nil {
			return ans, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace: was it all there?
		return ans, err
	}
	if !seenOK {
		return ans, errors.New("answer has no ok field")
	}
	return ans, nil
}

func (a *API) unreadable(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se), errors.Is(err, errNotObject):
		return "answer is not a JSON object"
	case errors.As(err, &te):
		return "answer has a field of the wrong type"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "answer cut short"
	}
	return "reading answer: " + describeErr(err, a.scrub)
}

// reason is an error answer as an error reason: Slack's error code when the
// body has one, else one short line of the body (a proxy's page, say).
func (a *API) reason(body io.Reader, status int) string {
	raw, _ := io.ReadAll(io.LimitReader(body, maxResponseBody))
	var ans struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &ans) == nil && ans.Error != "" {
		return a.clean(ans.Error)
	}
	if s := a.clean(string(raw)); s != "" {
		return s
	}
	if s := http.StatusText(status); s != "" {
		return s
	}
	return "empty response"
}

// clean makes text from an answer one short line without the token, which
// a server could echo back from the Authorization header.
func (a *API) clean(s string) string {
	return oneLine(redact(a.scrub(s)), maxReason)
}

// scrub removes the token, and its last part, which is the secret one in
// Slack's xoxb-<team>-<bot>-<secret>. Shorter parts are left: they are not
// secret and would garble the text.
func (a *API) scrub(s string) string {
	if a.token == "" {
		return s
	}
	s = strings.ReplaceAll(s, a.token, "[token]")
	if i := strings.LastIndexByte(a.token, '-'); i >= 0 && len(a.token)-i-1 >= 8 {
		s = strings.ReplaceAll(s, a.token[i+1:], "[token]")
	}
	return s
}

// checkToken refuses a token that cannot be sent as it is, without quoting
// it. A token with a newline, say from a secrets file, would otherwise fail
// in the transport with every request.
func checkToken(t string) error {
	if t == "" {
		return errors.New("no bot token")
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return errors.New("bot token holds a space, control or non-ASCII character")
		}
	}
	return nil
}
