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

// Poster sends one message, once. It reports a 429 as
// *slack.RateLimitedError and an error not worth retrying as
// *slack.PermanentError.
type Poster interface {
	Post(ctx context.Context, m slack.Message) error
}

// Options tune delivery.
type Options struct {
	MaxAttempts    int           // attempts per message; a 429 uses none
	RetryBase      time.Duration // first backoff; doubles per attempt, ±20% jitter
	Rate           float64       // messages per second, retries included
	Burst          int
	AttemptTimeout time.Duration // per Slack request; 10 s when zero
	PollInterval   time.Duration // how often due retries are looked for; 1 s when zero
}

// Worker posts owed rows in order of arrival, paced, with retries.
type Worker struct {
	store   Store
	poster  Poster // nil: log-only mode
	metrics *metrics.Metrics
	log     *slog.Logger
	opts    Options
	limiter *rate.Limiter
	wake    chan struct{}
}

// batch is how many due rows are read at a time, so a large backlog is
// walked page by page, never loaded whole.
const batch = 64

// lease is how long a claimed row is ours: one attempt with its timeout,
// with room to spare. A 429's wait renews it.
func (w *Worker) lease() time.Duration { return w.opts.AttemptTimeout + 20*time.Second }

// New returns a worker; poster nil means log-only: each message is logged at
// info and its row finished.
func New(store Store, poster Poster, m *metrics.Metrics, log *slog.Logger, opts Options) *Worker {
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
	return &Worker{
		store: store, poster: poster, metrics: m, log: log, opts: opts,
		limiter: rate.NewLimiter(rate.Limit(opts.Rate), opts.Burst),
		wake:    make(chan struct{}, 1),
	}
}

// Wake tells the worker a row was queued. It never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx is done. A message in flight when ctx ends stays
// Pending and is posted by the next start.
func (w *Worker) Run(ctx context.Context) {
	shared, ok := w.store.(Shared)
	if !ok {
		w.run(ctx)
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
		w.run(lead)
		if ctx.Err() == nil {
			w.log.Warn("outbox: lost the delivery lock; another replica delivers")
		}
	}
}

func (w *Worker) run(ctx context.Context) {
	// The first pass takes every owed row at once, whatever backoff it was
	// waiting out when the process stopped.
	now := time.Unix(math.MaxInt32, 0)
	for ctx.Err() == nil {
		w.pass(ctx, now)
		timer := time.NewTimer(w.opts.PollInterval)
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-timer.C:
		}
		timer.Stop()
		now = time.Now()
	}
}

// pass walks the rows due at now, oldest first.
func (w *Worker) pass(ctx context.Context, now time.Time) {
	var after int64
	for ctx.Err() == nil {
		rows, err := w.store.Due(ctx, "", now, after, batch)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error("outbox: cannot read owed deliveries", "err", err)
			}
			return
		}
		for _, row := range rows {
			if ctx.Err() != nil {
				return
			}
			after = row.Seq
			w.deliver(ctx, row)
		}
		if len(rows) < batch {
			return
		}
	}
}

// deliver makes the attempts one row is due now: one, or more while Slack
// answers 429.
func (w *Worker) deliver(ctx context.Context, row ledger.Delivery) {
	log := w.log.With("delivery", row.GUID, "event", row.Event)
	var n event.Notification
	if err := json.Unmarshal(row.Message, &n); err != nil {
		w.finish(ctx, log, row, ledger.Failed, row.Attempts, "unreadable message in ledger: "+err.Error())
		return
	}
	msg := slack.Render(n)
	if w.poster == nil {
		raw, _ := json.Marshal(msg)
		log.Info("slack message (log-only: SLACK_WEBHOOK_URL is not set)", "message", json.RawMessage(raw))
		w.metrics.SlackPosts.Inc()
		w.finish(ctx, log, row, ledger.Delivered, row.Attempts, "")
		return
	}

	calls := row.Attempts // earlier attempts, before a retry or restart
	attempt := row.Attempts + 1
	for {
		if err := w.limiter.Wait(ctx); err != nil {
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
			w.metrics.Retries.Inc()
		}
		calls++
		// An attempt under way is let finish at shutdown (within its
		// timeout) and its outcome recorded: cutting it off could leave a
		// message Slack accepted looking owed, and post it twice.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.opts.AttemptTimeout)
		start := time.Now()
		err := w.poster.Post(actx, msg)
		cancel()
		latency := time.Since(start)
		w.metrics.SlackLatency.Observe(latency.Seconds())
		var limited *slack.RateLimitedError
		var permanent *slack.PermanentError
		switch {
		case err == nil:
			log.Info("slack attempt", "attempt", attempt, "result", "ok", "latency", latency)
			w.metrics.SlackPosts.Inc()
			w.finish(ctx, log, row, ledger.Delivered, attempt, "")
			return
		case errors.As(err, &limited):
			// Slack asked us to wait: that costs no attempt.
			w.metrics.RateLimited.Inc()
			log.Warn("slack attempt", "attempt", attempt, "result", "rate_limited", "retry_after", limited.RetryAfter, "latency", latency)
			if !sleep(ctx, limited.RetryAfter) {
				return
			}
		case errors.As(err, &permanent):
			log.Error("slack attempt", "attempt", attempt, "result", "permanent_error", "err", err, "latency", latency)
			w.metrics.SlackFailures.Inc()
			w.finish(ctx, log, row, ledger.Failed, attempt, err.Error())
			return
		case attempt >= w.opts.MaxAttempts:
			log.Error("slack attempt", "attempt", attempt, "result", "gave_up", "err", err, "latency", latency)
			w.metrics.SlackFailures.Inc()
			w.finish(ctx, log, row, ledger.Failed, attempt, fmt.Sprintf("gave up after %d attempts: %v", attempt, err))
			return
		default:
			next := time.Now().Add(w.backoff(attempt))
			log.Warn("slack attempt", "attempt", attempt, "result", "retry", "err", err, "latency", latency, "next_attempt_at", next)
			w.persist(ctx, log, func(ctx context.Context) error {
				return w.store.Reschedule(ctx, row.GUID, attempt, err.Error(), next)
			})
			return
		}
	}
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
