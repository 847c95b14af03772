// Package githook is the HTTP side of ciwebhook: the webhook route that
// limits, verifies, parses, summarizes, filters, records and answers, plus
// health and metrics. It never waits on Slack; the outbox does that.
package githook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/notify"
)

// Paths the handler serves. A program that mounts the handler routes both
// Path and Path+"/" to it.
const (
	Path        = "/webhooks/github"
	HealthPath  = Path + "/health"
	MetricsPath = Path + "/metrics"
)

// Store is the part of the ledger the request path uses.
type Store interface {
	Record(ctx context.Context, d *ledger.Delivery) (ledger.Result, error)
	Subject(ctx context.Context, subject string) ([]ledger.Delivery, error)
	Stats(ctx context.Context) (ledger.Stats, error)
	Streak(ctx context.Context, key string, run ledger.StreakRun) (ledger.StreakVerdict, error)
}

// Options configure the handler.
type Options struct {
	Secrets       [][]byte // current first, then previous
	MaxBodyBytes  int64
	NotifyPending bool
	Filters       notify.Filters
	// Shown by health.
	Backend   string
	SlackMode string
	// Wake, when set, is called after a delivery is queued so the outbox
	// worker posts it now rather than at its next poll.
	Wake func()
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
	// Sources is the source allowlist; the zero value allows any source.
	Sources Sources
	// Destinations, when set, is what health shows of each Slack
	// destination (its last error, say a revoked token), as JSON.
	Destinations func() any
}

// Handler serves the webhook, health and metrics routes.
type Handler struct {
	opts    Options
	store   Store
	policy  *notify.Policy
	metrics *metrics.Metrics
	log     *slog.Logger
}

// New returns the handler of an enabled service.
func New(opts Options, store Store, m *metrics.Metrics, log *slog.Logger) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Wake == nil {
		opts.Wake = func() {}
	}
	return &Handler{opts: opts, store: store, policy: notify.New(opts.Filters, store), metrics: m, log: log}
}

// Disabled answers 404 on every route and touches nothing: the handler of a
// service started with ENABLE_WEBHOOKS=false.
func Disabled() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "webhooks are disabled"})
	})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case Path:
		h.webhook(w, r)
	case HealthPath:
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.health(w, r)
	case MetricsPath:
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.metrics.ServeHTTP(w, r)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	}
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	return false
}

// answer is the JSON body of a webhook response.
type answer struct {
	Status   string `json:"status,omitempty"`
	Delivery string `json:"delivery,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Error    string `json:"error,omitempty"`
}

// webhook takes one delivery through DESIGN.md's checks, in order; the first
// failure answers.
func (h *Handler) webhook(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { h.metrics.Processing.Observe(time.Since(start).Seconds()) }()
	// logCtx is what every line about this delivery says first, as a
	// logger made With it would (the same keys, in the same order). Such a
	// logger was made on every delivery, even at LOG_LEVEL=warn where its
	// one info line is not written: 1.5-2% of a delivery's CPU time.
	logCtx := []any{"remote", r.RemoteAddr}

	refuse := func(status int, reason, msg string, attrs ...any) {
		h.metrics.Failures.WithLabelValues(reason).Inc()
		h.log.Warn("delivery refused", slices.Concat(logCtx, []any{"status", status, "reason", msg}, attrs)...)
		writeJSON(w, status, answer{Error: msg})
	}
	// First of all, and before the body is read: a refused source costs nothing.
	if client, ok := h.opts.Sources.Allow(r); !ok {
		refuse(http.StatusForbidden, metrics.ReasonSource, "source address "+client+" is not allowed", "client", client)
		return
	}

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(http.StatusMethodNotAllowed, metrics.ReasonMethod, "method not allowed: use POST")
		return
	}
	release, ok := acquireBody(r, h.opts.MaxBodyBytes, refuse) // bodies.go: bounds the bodies held at once
	defer release()
	if !ok {
		return
	}
	body, err := readLimited(r, h.opts.MaxBodyBytes)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			refuse(http.StatusRequestEntityTooLarge, metrics.ReasonTooLarge, err.Error())
		} else {
			refuse(http.StatusBadRequest, metrics.ReasonPayload, "could not read the request body")
		}
		return
	}
	matched, err := verify(h.opts.Secrets, body, r.Header.Get("X-Hub-Signature-256"))
	if err != nil {
		refuse(http.StatusUnauthorized, metrics.ReasonSignature, err.Error())
		return
	}
	secret := metrics.SecretCurrent
	if matched > 0 {
		secret = metrics.SecretPrevious
	}
	h.metrics.SecretMatches.WithLabelValues(secret).Inc()

	name, guid := r.Header.Get("X-GitHub-Event"), r.Header.Get("X-GitHub-Delivery")
	if msg := checkHeaders(name, guid); msg != "" {
		refuse(http.StatusBadRequest, metrics.ReasonHeaders, msg)
		return
	}
	logCtx = append(logCtx, "delivery", guid, "event", name)
	payload, status, msg := decodeBody(r.Header.Get("Content-Type"), body)
	if status != 0 {
		reason := metrics.ReasonPayload
		if status == http.StatusUnsupportedMediaType {
			reason = metrics.ReasonMediaType
		}
		refuse(status, reason, msg)
		return
	}
	// Summarize's decoding is the payload's only JSON validation: a payload
	// it accepts is valid JSON throughout (as json.Valid would say), and a
	// payload that is not JSON gets encoding/json's *json.SyntaxError.
	summary, err := event.Summarize(name, payload, event.Options{NotifyPending: h.opts.NotifyPending})
	if err != nil {
		msg := err.Error()
		if syntax := (*json.SyntaxError)(nil); errors.As(err, &syntax) {
			msg = notJSONObject
		}
		refuse(http.StatusBadRequest, metrics.ReasonPayload, msg)
		return
	}
	h.metrics.Deliveries.Inc()
	logCtx = append(logCtx, "action", summary.Action, "repo", summary.Repo)

	decision := notify.Decision{State: ledger.Ignored, Reason: "ping"}
	if name != "ping" {
		if decision, err = h.policy.Decide(r.Context(), &summary); err != nil {
			refuse(http.StatusServiceUnavailable, metrics.ReasonStorage, "the ledger is unavailable; retry the delivery", "err", err)
			return
		}
	}
	rows, err := newDeliveries(guid, name, h.opts.Now(), &summary, decision)
	if err != nil {
		refuse(http.StatusInternalServerError, metrics.ReasonPayload, "could not encode the notification", "err", err)
		return
	}
	d := rows[0]
	result, err := h.store.Record(r.Context(), d)
	if err != nil {
		refuse(http.StatusServiceUnavailable, metrics.ReasonStorage, "the ledger could not record the delivery; retry it", "err", err)
		return
	}
	// The first row is the delivery's record and its dedup; each further
	// destination (a route with continue: true) has a row of its own, so
	// that it is paced, retried and failed on its own. They are recorded
	// after the first, and again on a duplicate: a crash between the two
	// left a redelivery to add what is missing (a row already there is a
	// Duplicate, which changes nothing).
	queued := result == ledger.Recorded && d.State == ledger.Pending
	for _, extra := range rows[1:] {
		res, err := h.store.Record(r.Context(), extra)
		if err != nil {
			refuse(http.StatusServiceUnavailable, metrics.ReasonStorage, "the ledger could not record the delivery; retry it", "err", err)
			return
		}
		if res == ledger.Recorded && extra.State == ledger.Pending {
			queued = true // another destination is owed the message
		}
	}

	a := answer{Delivery: guid}
	code := http.StatusAccepted
	switch {
	case name == "ping":
		a.Status, code = "pong", http.StatusOK
	case result == ledger.Duplicate:
		h.metrics.DedupHits.Inc()
		a.Status, code = "duplicate", http.StatusOK
		if queued {
			h.opts.Wake() // a row a crash had kept from being written is owed now
		}
	case queued:
		h.metrics.Queued.Inc()
		a.Status = "queued"
		h.opts.Wake()
	case result == ledger.KeyTaken:
		h.metrics.Ignored.Inc()
		a.Status, a.Reason = "ignored", "already notified"
	case d.State == ledger.Filtered:
		h.metrics.Filtered.Inc()
		a.Status, a.Reason = "filtered", decision.Reason
	default:
		h.metrics.Ignored.Inc()
		if decision.Quiet {
			h.metrics.Suppressed.Inc()
		}
		a.Status, a.Reason = "ignored", decision.Reason
	}
	if h.log.Enabled(context.Background(), slog.LevelInfo) {
		h.log.Info("delivery", append(logCtx, "status", a.Status, "reason", a.Reason, "duration", time.Since(start))...)
	}
	writeJSON(w, code, a)
}

var errTooLarge = errors.New("request body is larger than MAX_BODY_BYTES")

// readLimited reads the whole body but never more than max+1 bytes, so an
// oversized body costs at most that much memory.
func readLimited(r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, errTooLarge
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		// ReadFrom wants MinRead bytes free to find the end: with room for
		// the declared length only, it would copy the whole body once more.
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, errTooLarge
	}
	return buf.Bytes(), nil
}

// checkHeaders returns what is wrong with the delivery headers, or "".
func checkHeaders(name, guid string) string {
	switch {
	case name == "" && guid == "":
		return "missing X-GitHub-Event and X-GitHub-Delivery headers"
	case name == "":
		return "missing X-GitHub-Event header"
	case guid == "":
		return "missing X-GitHub-Delivery header"
	case len(name) > 64 || !token(name):
		return "X-GitHub-Event is not an event name"
	case len(guid) > 128 || !token(guid):
		return "X-GitHub-Delivery is not a delivery ID"
	}
	return ""
}

// token accepts the characters of GitHub event names and delivery GUIDs,
// which keeps control characters out of logs and the ledger.
func token(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// decodeBody returns the JSON payload, or an HTTP status and message. The
// signature was checked over the whole body first: for a form, it covers the
// encoded bytes, not the payload field.
func decodeBody(contentType string, body []byte) ([]byte, int, string) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = ""
	}
	var payload []byte
	switch mt {
	case "application/json":
		payload = body
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil || !form.Has("payload") {
			return nil, http.StatusBadRequest, "form body has no payload field"
		}
		payload = []byte(form.Get("payload"))
	default:
		return nil, http.StatusUnsupportedMediaType, "Content-Type must be application/json or application/x-www-form-urlencoded"
	}
	// Only the first byte is checked here; the rest is validated once, by
	// event.Summarize's decoding (webhook answers its syntax errors with the
	// same message). A second pass over the body was a sixth of a request's
	// CPU time (docs/PERFORMANCE.md).
	trimmed := bytes.TrimLeft(payload, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, http.StatusBadRequest, notJSONObject
	}
	return trimmed, 0, ""
}

const notJSONObject = "payload is not a JSON object"

// newDeliveries builds the delivery's ledger rows: one, or one per
// destination when routes send its message to several. The first has the
// delivery's GUID; the others add "/<route>", which no GitHub GUID has.
// Each row holds its own key, scoped to its destination, so that "said
// once" is decided per destination.
func newDeliveries(guid, name string, now time.Time, s *event.Summary, decision notify.Decision) ([]*ledger.Delivery, error) {
	first, err := newDelivery(guid, name, now, s, decision.State)
	if err != nil || decision.State != ledger.Pending || len(decision.Destinations) == 0 {
		return []*ledger.Delivery{first}, err
	}
	rows := []*ledger.Delivery{first}
	key := first.Key
	for i, dest := range decision.Destinations {
		d := first
		if i > 0 {
			c := *first
			c.GUID, c.Subject = guid+"/"+dest, "" // the subject's rows are counted once
			d = &c
			rows = append(rows, d)
		}
		d.Destination, d.Key = dest, key
		if key != "" && dest != "" {
			d.Key = key + "@" + dest
		}
	}
	return rows, nil
}

// newDelivery builds the ledger row: the seed columns and, when a message
// is owed, the summarized notification. The raw payload is never stored.
func newDelivery(guid, name string, now time.Time, s *event.Summary, state ledger.State) (*ledger.Delivery, error) {
	d := &ledger.Delivery{
		GUID: guid, Event: name, ReceivedAt: now.UTC(), Action: s.Action,
		Repo: s.Repo, Ref: s.Ref, Workflow: s.Workflow, Status: s.Status, Conclusion: s.Conclusion, URL: s.URL,
		State: state, Subject: s.Subject,
	}
	if state == ledger.Pending {
		// Only a message that will be posted holds its key: a filtered
		// status must not stop an allowed one from being said.
		d.Key = s.Key
		msg, err := json.Marshal(s.Note)
		if err != nil {
			return nil, err
		}
		d.Message = msg
	} else if s.Kept != nil && state == ledger.Ignored {
		// A row that posts nothing may still keep what a later delivery
		// reads (a job's failed step, a PR's author). The worker reads
		// Message only from Pending rows, so it is never posted unasked.
		msg, err := json.Marshal(s.Kept)
		if err != nil {
			return nil, err
		}
		d.Message = msg
	}
	return d, nil
}

func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	st, err := h.store.Stats(ctx)
	if err != nil {
		h.log.Error("health: ledger unreadable", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{
			"status": "unavailable", "ledger_backend": h.opts.Backend, "slack": h.opts.SlackMode,
		})
		return
	}
	var last any // null until the first delivery
	if !st.LastDeliveryAt.IsZero() {
		last = st.LastDeliveryAt.UTC().Format(time.RFC3339)
	}
	body := map[string]any{
		"status": "ok", "last_delivery_at": last, "ledger_size": st.Size,
		"pending": st.Pending, "failed": st.Failed,
		"ledger_backend": h.opts.Backend, "slack": h.opts.SlackMode,
	}
	if h.opts.Destinations != nil {
		// A destination that fails (a revoked token, an archived channel)
		// is shown, but is not the service being down: health stays 200.
		body["destinations"] = h.opts.Destinations()
	}
	writeJSON(w, http.StatusOK, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
