// Package outbox delivers the Slack messages the ledger owes. The ledger row
// is the outbox: a row stays Pending until Slack accepts its message or the
// worker gives up, so a crash at any moment loses nothing; the next start
// picks the row up again.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/slack"
)

// Store is the part of the ledger the worker uses.
type Store interface {
	Due(ctx context.Context, destination string, now time.Time, after int64, limit int) ([]ledger.Delivery, error)
	Finish(ctx context.Context, guid string, state ledger.State, attempts int, lastErr string) error
	Reschedule(ctx context.Context, guid string, attempts int, lastErr string, next time.Time) error
	Live(ctx context.Context, key string) (ledger.Live, error)
	SetLive(ctx context.Context, key string, m ledger.Live) error
}

// Shared is implemented by a ledger that several replicas share. Only the
// replica that leads delivers, so SLACK_RATE paces the deployment, and each
// row is claimed for a lease before it is posted, so a replica that dies
// mid-post cannot have its row posted twice by the next leader.
type Shared interface {
	// Lead blocks until this replica leads, and returns a context that
	// ends when it stops leading.
	Lead(ctx context.Context) (context.Context, error)
	// Claim takes the row for lease; false means another replica has it.
	Claim(ctx context.Context, guid string, lease time.Duration) (bool, error)
}

// Poster sends one message to an incoming webhook, once. It reports a 429
// as *slack.RateLimitedError and an error not worth retrying as
// *slack.PermanentError.
type Poster interface {
	Post(ctx context.Context, m slack.Message) error
}

// Chat is Slack's Web API for a bot token, with the same error types as
// Poster; Update reports a deleted message as slack.ErrMessageNotFound.
type Chat interface {
	PostMessage(ctx context.Context, channel string, m slack.Message, threadTS string) (ts string, err error)
	Update(ctx context.Context, channel, ts string, m slack.Message) error
}

// Destination is where one route's messages go: an incoming webhook, a
// channel posted to with a bot token, or, with neither, the log.
type Destination struct {
	Name    string // the route's name; "" is the default destination
	Webhook Poster
	Chat    Chat
	Channel string // with Chat
}

// Kind says how a destination posts, for health and logs.
func (d Destination) Kind() string {
	switch {
	case d.Chat != nil:
		return "channel"
	case d.Webhook != nil:
		return "webhook"
	}
	return "log"
}

// Options tune delivery.
type Options struct {
	MaxAttempts    int           // attempts per message; a 429 uses none
	RetryBase      time.Duration // first backoff; doubles per attempt, ±20% jitter
	Rate           float64       // messages per second per destination, retries included
	Burst          int
	AttemptTimeout time.Duration // per Slack request; 10 s when zero
	PollInterval   time.Duration // how often due retries are looked for; 1 s when zero
}

// Worker posts owed rows, in order of arrival, paced and retried, through
// one lane per destination: a destination that is down or rate limited
// holds up only its own messages.
type Worker struct {
	store   Store
	lanes   []*lane
	metrics *metrics.Metrics
	log     *slog.Logger
	opts    Options
}

// lane delivers one destination's rows.
type lane struct {
	w       *Worker
	dest    Destination
	m       metrics.Destination
	log     *slog.Logger
	limiter *rate.Limiter
	wake    chan struct{}

	mu     sync.Mutex
	status Status
}

// Status is what health shows of a destination.
type Status struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // webhook, channel or log
	// LastError is the last failure and whether it was permanent
	// (invalid_auth, channel_not_found, ...: someone has to act).
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
	Permanent     bool      `json:"permanent,omitempty"`
	LastSuccessAt time.Time `json:"last_success_at,omitzero"`
}

// batch is how many due rows are read at a time, so a large backlog is
// walked page by page, never loaded whole.
const batch = 64

// lease is how long a claimed row is ours: one attempt with its timeout,
// with room to spare. A 429's wait renews it.
func (w *Worker) lease() time.Duration { return w.opts.AttemptTimeout + 20*time.Second }

// New returns a worker for dests (at least one; the default destination,
// Name "", is the one every row without a route goes to).
func New(store Store, dests []Destination, m *metrics.Metrics, log *slog.Logger, opts Options) *Worker {
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 10 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.MaxAttempts < 1 {
		opts.MaxAttempts = 1
	}
	if opts.Burst < 1 {
		opts.Burst = 1
	}
	w := &Worker{store: store, metrics: m, log: log, opts: opts}
	for _, d := range dests {
		l := &lane{
			w: w, dest: d, m: m.For(d.Name),
			limiter: rate.NewLimiter(rate.Limit(opts.Rate), opts.Burst),
			wake:    make(chan struct{}, 1),
			status:  Status{Name: d.Name, Kind: d.Kind()},
		}
		l.log = log
		if d.Name != "" {
			l.log = log.With("destination", d.Name)
		}
		w.lanes = append(w.lanes, l)
	}
	return w
}

// Wake tells the worker a row was queued. It never blocks.
func (w *Worker) Wake() {
	for _, l := range w.lanes {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// Statuses reports each destination's last outcome, in the order given to
// New; the default destination is named "default".
func (w *Worker) Statuses() []Status {
	out := make([]Status, 0, len(w.lanes))
	for _, l := range w.lanes {
		l.mu.Lock()
		st := l.status
		l.mu.Unlock()
		if st.Name == "" {
			st.Name = metrics.DefaultDestination
		}
		out = append(out, st)
	}
	return out
}

// Run delivers until ctx is done. A message in flight when ctx ends stays
// Pending and is posted by the next start.
func (w *Worker) Run(ctx context.Context) {
	shared, ok := w.store.(Shared)
	if !ok {
		w.runLanes(ctx)
		return
	}
	for ctx.Err() == nil {
		lead, err := shared.Lead(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error("outbox: cannot take the delivery lock", "err", err)
				sleep(ctx, 2*time.Second)
			}
			continue
		}
		w.log.Info("outbox: this replica delivers to Slack")
		w.runLanes(lead)
		if ctx.Err() == nil {
			w.log.Warn("outbox: lost the delivery lock; another replica delivers")
		}
	}
}

func (w *Worker) runLanes(ctx context.Context) {
	var wg sync.WaitGroup
	for _, l := range w.lanes {
		wg.Go(func() { l.run(ctx) })
	}
	wg.Wait()
}

func (l *lane) run(ctx context.Context) {
	// The first pass takes every owed row at once, whatever backoff it was
	// waiting out when the process stopped.
	now := time.Unix(math.MaxInt32, 0)
	for ctx.Err() == nil {
		l.pass(ctx, now)
		timer := time.NewTimer(l.w.opts.PollInterval)
		select {
		case <-ctx.Done():
		case <-l.wake:
		case <-timer.C:
		}
		timer.Stop()
		now = time.Now()
	}
}

// pass walks the destination's rows due at now, oldest first.
func (l *lane) pass(ctx context.Context, now time.Time) {
	var after int64
	for ctx.Err() == nil {
		rows, err := l.w.store.Due(ctx, l.dest.Name, now, after, batch)
		if err != nil {
			if ctx.Err() == nil {
				l.log.Error("outbox: cannot read owed deliveries", "err", err)
			}
			return
		}
		for _, row := range rows {
			if ctx.Err() != nil {
				return
			}
			after = row.Seq
			l.deliver(ctx, row)
		}
		if len(rows) < batch {
			return
		}
	}
}

// deliver makes the attempts one row is due now: one, or more while Slack
// answers 429.
func (l *lane) deliver(ctx context.Context, row ledger.Delivery) {
	w := l.w
	log := l.log.With("delivery", row.GUID, "event", row.Event)
	var n event.Notification
	if err := json.Unmarshal(row.Message, &n); err != nil {
		w.finish(ctx, log, row, ledger.Failed, row.Attempts, "unreadable message in ledger: "+err.Error())
		return
	}
	msg := slack.Render(n)
	if l.dest.Webhook == nil && l.dest.Chat == nil {
		raw, _ := json.Marshal(msg)
		log.Info("slack message (log-only: SLACK_WEBHOOK_URL is not set)", "message", json.RawMessage(raw))
		l.m.Posts.Inc()
		w.finish(ctx, log, row, ledger.Delivered, row.Attempts, "")
		return
	}

	calls := row.Attempts // earlier attempts, before a retry or restart
	attempt := row.Attempts + 1
	for {
		if err := l.limiter.Wait(ctx); err != nil {
			return // shutting down; the row stays owed
		}
		if shared, ok := w.store.(Shared); ok {
			got, err := shared.Claim(ctx, row.GUID, w.lease())
			if err != nil || !got {
				if err != nil && ctx.Err() == nil {
					log.Error("outbox: cannot claim the row; trying again later", "err", err)
				}
				return // another replica has it, or the ledger is away: the row stays owed
			}
		}
		if calls > 0 {
			l.m.Retries.Inc()
		}
		calls++
		// An attempt under way is let finish at shutdown (within its
		// timeout) and its outcome recorded: cutting it off could leave a
		// message Slack accepted looking owed, and post it twice.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.opts.AttemptTimeout)
		start := time.Now()
		result, err := l.post(actx, log, n, msg)
		cancel()
		latency := time.Since(start)
		l.m.Latency.Observe(latency.Seconds())
		var limited *slack.RateLimitedError
		var permanent *slack.PermanentError
		switch {
		case err == nil:
			log.Info("slack attempt", "attempt", attempt, "result", result, "latency", latency)
			l.m.Posts.Inc()
			l.note(nil, false)
			w.finish(ctx, log, row, ledger.Delivered, attempt, "")
			return
		case errors.As(err, &limited):
			// Slack asked us to wait: that costs no attempt.
			l.m.RateLimited.Inc()
			log.Warn("slack attempt", "attempt", attempt, "result", "rate_limited", "retry_after", limited.RetryAfter, "latency", latency)
			if !sleep(ctx, limited.RetryAfter) {
				return
			}
		case errors.As(err, &permanent):
			log.Error("slack attempt", "attempt", attempt, "result", "permanent_error", "err", err, "latency", latency)
			l.m.Failures.Inc()
			l.note(err, true)
			w.finish(ctx, log, row, ledger.Failed, attempt, err.Error())
			return
		case attempt >= w.opts.MaxAttempts:
			log.Error("slack attempt", "attempt", attempt, "result", "gave_up", "err", err, "latency", latency)
			l.m.Failures.Inc()
			l.note(err, false)
			w.finish(ctx, log, row, ledger.Failed, attempt, fmt.Sprintf("gave up after %d attempts: %v", attempt, err))
			return
		default:
			next := time.Now().Add(w.backoff(attempt))
			log.Warn("slack attempt", "attempt", attempt, "result", "retry", "err", err, "latency", latency, "next_attempt_at", next)
			l.note(err, false)
			w.persist(ctx, log, func(ctx context.Context) error {
				return w.store.Reschedule(ctx, row.GUID, attempt, err.Error(), next)
			})
			return
		}
	}
}

// note keeps the outcome of an attempt for health.
func (l *lane) note(err error, permanent bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		// Health shows what is wrong now: a channel unarchived, a token
		// replaced, and the error is gone.
		l.status = Status{Name: l.status.Name, Kind: l.status.Kind, LastSuccessAt: time.Now().UTC()}
		return
	}
	l.status.LastError, l.status.LastErrorAt, l.status.Permanent = err.Error(), time.Now().UTC(), permanent
}

// post makes one attempt at the destination; result says what was done.
func (l *lane) post(ctx context.Context, log *slog.Logger, n event.Notification, msg slack.Message) (string, error) {
	if l.dest.Chat == nil {
		return "ok", l.dest.Webhook.Post(ctx, msg)
	}
	return l.postLive(ctx, log, n, msg)
}

// liveKey is where a destination keeps the message of a subject.
func (l *lane) liveKey(subject string) string { return l.dest.Name + "|" + subject }

// postLive posts through the Web API, one message per subject: the first
// event of a subject posts (in its parent's thread, when the parent has a
// message here), later ones update that message. A message someone deleted
// is posted anew. Slack's ts is kept in the ledger before the row is
// finished, so a restart between two events still updates.
func (l *lane) postLive(ctx context.Context, log *slog.Logger, n event.Notification, msg slack.Message) (string, error) {
	chat, channel := l.dest.Chat, l.dest.Channel
	if n.Live != "" {
		prev, err := l.w.store.Live(ctx, l.liveKey(n.Live))
		switch {
		case errors.Is(err, ledger.ErrNotFound):
		case err != nil:
			return "", err // the ledger is away: retried with backoff
		case prev.Channel != channel:
			// The route now names another channel: start there afresh.
		case prev.Final && !final(n):
			// GitHub delivered a state on the way (or a check run's early
			// failure) after the result, or it was retried past it: the
			// message already says more.
			return "skipped_stale", nil
		default:
			err := chat.Update(ctx, channel, prev.TS, msg)
			if err == nil {
				l.keep(ctx, log, n.Live, ledger.Live{Channel: channel, TS: prev.TS, Final: final(n)})
				if err := l.mentionReply(ctx, n, prev.TS); err != nil {
					return "", err // retried: the update again (no change), then the reply
				}
				return "updated", nil
			}
			if !errors.Is(err, slack.ErrMessageNotFound) {
				return "", err
			}
			log.Warn("slack: the live message was deleted; posting it anew", "ts", prev.TS)
		}
	}
	thread, err := l.parentTS(ctx, n)
	if err != nil {
		return "", err
	}
	ts, err := chat.PostMessage(ctx, channel, msg, thread)
	if err != nil {
		return "", err
	}
	if ts == "" {
		return "posted", nil // nothing to update later; Slack always sends one
	}
	if n.Live != "" {
		l.keep(ctx, log, n.Live, ledger.Live{Channel: channel, TS: ts, Final: final(n)})
	}
	if thread == "" && n.Parent != "" && n.Kind == "pull_request" {
		// A pull request's first message here starts its thread.
		l.keep(ctx, log, n.Parent, ledger.Live{Channel: channel, TS: ts})
	}
	if thread != "" {
		return "replied", nil
	}
	return "posted", nil
}

// final reports whether n is a subject's result, which no later note but
// another result may replace: not a state on the way, and not a check
// run's early failure, which its suite's result completes.
func final(n event.Notification) bool { return !n.Interim && n.Kind != "check_run" }

// mentionReply replies in the thread of an updated message to the people
// it mentions, who an edit does not notify. A message that is itself a
// reply (a run in a pull request's thread) is answered in the same thread.
func (l *lane) mentionReply(ctx context.Context, n event.Notification, ts string) error {
	reply, ok := slack.MentionReply(n)
	if !ok {
		return nil
	}
	thread, err := l.parentTS(ctx, n)
	if err != nil {
		return err
	}
	if thread == "" {
		thread = ts
	}
	_, err = l.dest.Chat.PostMessage(ctx, l.dest.Channel, reply, thread)
	return err
}

// parentTS is the ts of the message n replies under here (its pull
// request's), or "" when n has no parent or the parent has no message in
// this destination's channel.
func (l *lane) parentTS(ctx context.Context, n event.Notification) (string, error) {
	if n.Parent == "" {
		return "", nil
	}
	parent, err := l.w.store.Live(ctx, l.liveKey(n.Parent))
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return "", nil
	case err != nil:
		return "", err
	case parent.Channel != l.dest.Channel:
		return "", nil
	}
	return parent.TS, nil
}

// keep stores a live message's ts, retrying like an outcome: Slack already
// shows the message, and losing its ts would post the next event anew.
func (l *lane) keep(ctx context.Context, log *slog.Logger, subject string, m ledger.Live) {
	m.UpdatedAt = time.Now().UTC()
	l.w.persist(ctx, log, func(ctx context.Context) error {
		return l.w.store.SetLive(ctx, l.liveKey(subject), m)
	})
}

// backoff is RetryBase doubled per attempt made (1 s, 2 s, 4 s, ...), each
// jittered by up to ±20% so that retries of many rows do not line up.
func (w *Worker) backoff(attempt int) time.Duration {
	d := float64(w.opts.RetryBase) * math.Pow(2, float64(attempt-1))
	d *= 0.8 + 0.4*rand.Float64()
	return time.Duration(math.Min(d, float64(time.Hour)))
}

func (w *Worker) finish(ctx context.Context, log *slog.Logger, row ledger.Delivery, state ledger.State, attempts int, lastErr string) {
	w.persist(ctx, log, func(ctx context.Context) error {
		return w.store.Finish(ctx, row.GUID, state, attempts, lastErr)
	})
}

// persist retries a ledger write for a while: after Slack accepted a
// message, failing to record that would post it again. The write itself
// outlives shutdown's cancellation for the same reason.
func (w *Worker) persist(ctx context.Context, log *slog.Logger, write func(context.Context) error) {
	// Bounded, so a ledger that stays away cannot hold up shutdown for long.
	deadline := time.Now().Add(15 * time.Second)
	for {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := write(wctx)
		cancel()
		if err == nil || errors.Is(err, ledger.ErrNotPending) || errors.Is(err, ledger.ErrNotFound) {
			return
		}
		// The retries outlive a lost lead or a shutdown too: the database
		// connection that failed this write often took the delivery lock
		// with it, and giving up now is what would post the message twice.
		if time.Now().After(deadline) || !sleep(context.WithoutCancel(ctx), 500*time.Millisecond) {
			log.Error("outbox: cannot record the outcome; the message may be posted again", "err", err)
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
