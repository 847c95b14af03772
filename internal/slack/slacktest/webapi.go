package slacktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiPrefix is where the fake serves the Web API, as slack.com serves it
// under /api/.
const apiPrefix = "/api/"

// API is a fake Slack Web API serving chat.postMessage and chat.update for
// one bot token. It keeps the messages of each channel, so a test can see
// what a person in the channel would, and it records every call.
//
// It answers as Slack does (https://api.slack.com/web), but is stricter
// where Slack's leniency would hide a bug: a method is POSTed JSON only; text
// must be set, as the fallback notifications show; and thread_ts must name a
// top-level message of the channel that still exists, where Slack may
// quietly post a reply to an unknown thread at the top level, which would
// hide a bug that breaks threading.
type API struct {
	*httptest.Server
	token string

	mu       sync.Mutex
	calls    []Call
	msgs     map[string][]*Msg // by channel, in post order
	channels map[string]bool   // nil: every channel exists
	script   func(n int, c Call) *APIReply
	clock    int64 // microseconds of the last ts handed out
}

// Call is one request the fake received.
type Call struct {
	At     time.Time
	Method string // "chat.postMessage", "chat.update", or what else was asked for
	// Channel, ThreadTS and Text are the request's; TS is the request's for
	// chat.update and the new message's for an accepted chat.postMessage.
	Channel, TS, ThreadTS, Text string
	Body                        []byte
	// Error is "" when the fake answered ok itself; else Slack's error code
	// (invalid_auth, message_not_found, a scripted one, ...), "HTTP <status>"
	// for a scripted status without one, or "scripted answer" for a
	// scripted Body.
	Error string
}

// Msg is a message as it stands in a channel.
type Msg struct {
	Channel, TS, ThreadTS, Text string
	Blocks                      json.RawMessage // as last sent; nil when never sent
	Updates                     int
}

// APIReply is a scripted answer to one call.
type APIReply struct {
	Status     int    // HTTP status; 0 means 200
	Error      string // answer {"ok":false,"error":Error}
	Body       string // answer this instead, as it is: a proxy's page, a cut-short answer
	RetryAfter int    // seconds, sent as Retry-After when > 0
	// Delay holds the answer back. With neither Error nor Body and a
	// status of 200, the reply is the fake's normal answer, and the call
	// takes effect before the delay: a client that stops waiting has still
	// posted, the lost answer that makes an outbox post twice.
	Delay time.Duration
}

func (r *APIReply) normal() bool {
	return r.Error == "" && r.Body == "" && (r.Status == 0 || r.Status == http.StatusOK)
}

// NewAPI starts a fake that accepts token and in which every channel
// exists until Channels says otherwise.
func NewAPI(t testing.TB, token string) *API {
	a := &API{token: token, msgs: map[string][]*Msg{}, clock: 1_700_000_000_000_000}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

// URL is the Web API base URL to configure, like https://slack.com/api.
func (a *API) URL() string { return a.Server.URL + strings.TrimSuffix(apiPrefix, "/") }

// Calls returns every request received so far, answered ok or not.
func (a *API) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// Messages returns the messages of channel, thread replies included, in
// post order and as last updated; deleted ones are gone.
func (a *API) Messages(channel string) []Msg {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Msg, 0, len(a.msgs[channel]))
	for _, m := range a.msgs[channel] {
		out = append(out, *m)
	}
	return out
}

// Delete removes a message as a person would: a later chat.update of it
// answers message_not_found, and replying in its thread thread_not_found.
// Its replies stay, as in Slack.
func (a *API) Delete(channel, ts string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.msgs[channel] = slices.DeleteFunc(a.msgs[channel], func(m *Msg) bool { return m.TS == ts })
}

// Channels makes these channels the only ones that exist; any other answers
// channel_not_found, as for a bot not invited or a channel since deleted.
func (a *API) Channels(ids ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.channels = map[string]bool{}
	for _, id := range ids {
		a.channels[id] = true
	}
}

// Script sets how calls are answered: reply gets the call's number n,
// counting every call received from 1, and the call, and returns the answer
// or nil for the fake's normal one. It is asked only about calls to a known
// method with the right token, and runs outside the fake's lock, so it may
// use the fake (Delete a message before an update, say).
func (a *API) Script(reply func(n int, c Call) *APIReply) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.script = reply
}

func (a *API) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Channel  string          `json:"channel"`
		TS       string          `json:"ts"`
		ThreadTS string          `json:"thread_ts"`
		Text     string          `json:"text"`
		Blocks   json.RawMessage `json:"blocks"`
	}
	jsonErr := json.Unmarshal(body, &req)
	method := strings.TrimPrefix(r.URL.Path, apiPrefix)
	c := Call{At: time.Now(), Method: method, Channel: req.Channel, ThreadTS: req.ThreadTS, Text: req.Text, Body: body}
	if method == "chat.update" {
		c.TS = req.TS
	}

	a.mu.Lock()
	a.calls = append(a.calls, c)
	n := len(a.calls)
	script := a.script
	a.mu.Unlock()
	// record notes how the call was answered.
	record := func(code, ts string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.calls[n-1].Error = code
		if ts != "" {
			a.calls[n-1].TS = ts
		}
	}

	switch auth := r.Header.Get("Authorization"); {
	case !strings.HasPrefix(r.URL.Path, apiPrefix) || (method != "chat.postMessage" && method != "chat.update"):
		record("unknown_method", "")
		writeJSON(w, http.StatusNotFound, 0, answer{Error: "unknown_method"})
		return
	case r.Method != http.MethodPost:
		// The fake's own code: it reads arguments from a JSON body only.
		record("method_not_allowed", "")
		writeJSON(w, http.StatusMethodNotAllowed, 0, answer{Error: "method_not_allowed"})
		return
	case auth == "":
		record("not_authed", "")
		writeJSON(w, http.StatusOK, 0, answer{Error: "not_authed"})
		return
	case auth != "Bearer "+a.token:
		record("invalid_auth", "")
		writeJSON(w, http.StatusOK, 0, answer{Error: "invalid_auth"})
		return
	}

	var delay time.Duration
	if script != nil {
		if reply := script(n, c); reply != nil {
			delay = reply.Delay
			if !reply.normal() {
				a.scripted(w, r, reply, record)
				return
			}
		}
	}

	ans := answer{Error: "invalid_json"}
	if jsonErr == nil {
		ans = a.apply(method, req.Channel, req.TS, req.ThreadTS, req.Text, req.Blocks)
	}
	ts := ans.TS
	if method != "chat.postMessage" {
		ts = ""
	}
	record(ans.Error, ts)
	wait(r, delay)
	writeJSON(w, http.StatusOK, 0, ans)
}

// answer is a Web API answer, its fields in Slack's order: ok first, and ts
// before the echoed message.
type answer struct {
	OK      bool         `json:"ok"`
	Error   string       `json:"error,omitempty"`
	Channel string       `json:"channel,omitempty"`
	TS      string       `json:"ts,omitempty"`
	Text    string       `json:"text,omitempty"`
	Message *echoMessage `json:"message,omitempty"`
}

type echoMessage struct {
	Type     string          `json:"type"`
	Text     string          `json:"text"`
	Blocks   json.RawMessage `json:"blocks,omitempty"`
	TS       string          `json:"ts"`
	ThreadTS string          `json:"thread_ts,omitempty"`
}

func echo(m *Msg) *echoMessage {
	return &echoMessage{Type: "message", Text: m.Text, Blocks: m.Blocks, TS: m.TS, ThreadTS: m.ThreadTS}
}

func (a *API) scripted(w http.ResponseWriter, r *http.Request, reply *APIReply, record func(code, ts string)) {
	status := reply.Status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case reply.Error != "":
		record(reply.Error, "")
	case reply.Body != "":
		record("scripted answer", "")
	default:
		record("HTTP "+strconv.Itoa(status), "")
	}
	wait(r, reply.Delay)
	if reply.Body != "" || reply.Error == "" {
		if reply.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(reply.RetryAfter))
		}
		w.WriteHeader(status)
		io.WriteString(w, reply.Body)
		return
	}
	writeJSON(w, status, reply.RetryAfter, answer{Error: reply.Error})
}

// apply carries out a call and returns Slack's answer.
func (a *API) apply(method, channel, ts, threadTS, text string, blocks json.RawMessage) answer {
	fail := func(code string) answer { return answer{Error: code} }
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case channel == "" || (a.channels != nil && !a.channels[channel]):
		return fail("channel_not_found")
	case text == "":
		return fail("no_text")
	case len(blocks) > 0 && !bytes.HasPrefix(bytes.TrimSpace(blocks), []byte("[")):
		return fail("invalid_blocks")
	}

	if method == "chat.update" {
		m := a.find(channel, ts)
		if m == nil {
			return fail("message_not_found")
		}
		m.Text = text
		// Slack keeps the old blocks when the update has none.
		if len(blocks) > 0 {
			m.Blocks = blocks
		}
		m.Updates++
		return answer{OK: true, Channel: channel, TS: ts, Text: text, Message: echo(m)}
	}

	if threadTS != "" {
		if parent := a.find(channel, threadTS); parent == nil || parent.ThreadTS != "" {
			return fail("thread_not_found")
		}
	}
	// A shared clock makes ts unique across channels too, which Slack does
	// not promise but which keeps tests from mixing messages up.
	a.clock += 100
	m := &Msg{
		Channel: channel, ThreadTS: threadTS, Text: text, Blocks: blocks,
		TS: fmt.Sprintf("%d.%06d", a.clock/1_000_000, a.clock%1_000_000),
	}
	a.msgs[channel] = append(a.msgs[channel], m)
	return answer{OK: true, Channel: channel, TS: m.TS, Message: echo(m)}
}

func (a *API) find(channel, ts string) *Msg {
	for _, m := range a.msgs[channel] {
		if m.TS == ts {
			return m
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status, retryAfter int, v answer) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// wait holds an answer back, but not past the client's hanging up, so that
// Close does not wait out a long delay.
func wait(r *http.Request, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}
