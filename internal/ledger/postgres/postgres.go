// Package postgres is the ledger for several replicas: one PostgreSQL
// database shared by all of them. Dedup, "said once" keys and check-run
// subjects live in the shared table, so a delivery landing on any replica
// sees what the others recorded. Only one replica delivers to Slack at a
// time (an advisory lock, see Lead), so pacing holds for the deployment; a
// row is claimed with a lease before it is posted, so a replica that dies
// mid-post hands the row on when the lease ends.
package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// schema extends DESIGN.md's seed table; it never drops a seed column.
// Timestamps of the seed stay TEXT (fixed-width RFC 3339, so they sort).
const schema = `
CREATE TABLE IF NOT EXISTS deliveries (
  guid TEXT PRIMARY KEY, event TEXT NOT NULL, received_at TEXT NOT NULL,
  repo TEXT, ref TEXT, workflow TEXT, status TEXT, conclusion TEXT, url TEXT,
  delivered INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  action TEXT,
  state TEXT NOT NULL DEFAULT 'ignored',
  dedup_key TEXT UNIQUE,
  subject TEXT,
  message BYTEA,
  next_attempt_at BIGINT NOT NULL DEFAULT 0,
  claimed_until BIGINT NOT NULL DEFAULT 0,
  claimed_by TEXT
);
-- Columns added after the first release come in as ALTERs, so an older
-- table is migrated in place.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS claimed_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS claimed_by TEXT;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS destination TEXT NOT NULL DEFAULT '';
-- The worker of each destination walks its own pending rows in order.
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (state, destination, seq);
CREATE INDEX IF NOT EXISTS deliveries_subject ON deliveries (subject, seq) WHERE subject IS NOT NULL;
-- NOTIFY_MODE=changes: one row per streak, its state as JSON
-- (ledger.StreakState), shared by every replica. Never pruned.
CREATE TABLE IF NOT EXISTS streaks (key TEXT PRIMARY KEY, state TEXT NOT NULL);
-- Live messages of bot-token routes (ledger.Live), by subject and
-- destination, shared by every replica. Never pruned.
CREATE TABLE IF NOT EXISTS live (key TEXT PRIMARY KEY, channel TEXT NOT NULL, ts TEXT NOT NULL,
  final BOOLEAN NOT NULL DEFAULT false, updated_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS live_updated ON live (updated_at);
`

const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Store is a ledger.Store on PostgreSQL.
type Store struct {
	pool  *pgxpool.Pool
	limit int
	id    string // this process, as the holder of its claims
	// closing ends every leadership before the pool closes: the pool waits
	// for acquired connections, and a leader holds one.
	closing context.Context
	close   context.CancelFunc
	mu      sync.Mutex // orders leaders.Add before Close's Wait
	leaders sync.WaitGroup
}

var _ ledger.Store = (*Store)(nil)

// Open connects, creates or migrates the schema (safely when several
// replicas start at once) and returns the store. The database being down
// is an error: start-up fails rather than accept deliveries it cannot keep.
func Open(ctx context.Context, dsn string, limit int) (*Store, error) {
	if limit < 1 {
		return nil, fmt.Errorf("postgres ledger: limit %d must be at least 1", limit)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("postgres ledger: DATABASE_URL is not a valid connection string")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres ledger: %s", redact(err))
	}
	s := &Store{pool: pool, limit: limit, id: rand.Text()}
	s.closing, s.close = context.WithCancel(context.Background())
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate runs the schema under a transaction-scoped advisory lock:
// concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
func (s *Store) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('ciwebhook:migrate:' || current_schema()))`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres ledger: cannot reach the database or create the schema: %s", redact(err))
	}
	return nil
}

// Close closes the pool, releasing any leadership.
func (s *Store) Close() error {
	s.mu.Lock()
	s.close()
	s.mu.Unlock()
	s.leaders.Wait()
	s.pool.Close()
	return nil
}

// retry runs fn again when PostgreSQL chose it as a deadlock victim or a
// serialization failure: concurrent pruning can, rarely, cross paths.
func retry(ctx context.Context, fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); err == nil {
			return nil
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || (pe.Code != "40P01" && pe.Code != "40001") {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return err
}

const insert = `INSERT INTO deliveries
	(guid, event, received_at, repo, ref, workflow, status, conclusion, url,
	 delivered, attempts, last_error, action, state, dedup_key, subject, message, next_attempt_at, destination)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`

func (s *Store) Record(ctx context.Context, d *ledger.Delivery) (ledger.Result, error) {
	var result ledger.Result
	row := *d
	err := retry(ctx, func() error {
		row = *d
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			result, err = s.record(ctx, tx, &row)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("postgres ledger: record %s: %s", d.GUID, redact(err))
	}
	if result != ledger.Duplicate {
		d.Seq, d.State, d.Key = row.Seq, row.State, row.Key
	}
	return result, nil
}

func (s *Store) record(ctx context.Context, tx pgx.Tx, d *ledger.Delivery) (ledger.Result, error) {
	args := func() []any {
		delivered := 0
		if d.Delivered() {
			delivered = 1
		}
		return []any{d.GUID, d.Event, d.ReceivedAt.UTC().Format(timeLayout),
			null(d.Repo), null(d.Ref), null(d.Workflow), null(d.Status), null(d.Conclusion), null(d.URL),
			delivered, d.Attempts, null(d.LastError), null(d.Action), string(d.State),
			null(d.Key), null(d.Subject), d.Message, millis(d.NextAttemptAt), d.Destination}
	}
	// ON CONFLICT DO NOTHING covers both the GUID and the key: a concurrent
	// insert of either waits for the other transaction, then does nothing.
	err := tx.QueryRow(ctx, insert+` ON CONFLICT DO NOTHING RETURNING seq`, args()...).Scan(&d.Seq)
	if err == nil {
		return ledger.Recorded, s.prune(ctx, tx, d.GUID)
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, err
	}
	var one int
	err = tx.QueryRow(ctx, `SELECT 1 FROM deliveries WHERE guid = $1`, d.GUID).Scan(&one)
	if err == nil {
		return ledger.Duplicate, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) || d.Key == "" {
		return 0, fmt.Errorf("insert found a conflict but no row: %w", err)
	}
	// The key is held by another delivery: this one said nothing new.
	d.State, d.Key = ledger.Ignored, ""
	err = tx.QueryRow(ctx, insert+` ON CONFLICT (guid) DO NOTHING RETURNING seq`, args()...).Scan(&d.Seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return ledger.Duplicate, nil // the same GUID raced in meanwhile
	}
	if err != nil {
		return 0, err
	}
	return ledger.KeyTaken, s.prune(ctx, tx, d.GUID)
}

// prune deletes the oldest finished rows while the table holds more than
// the limit; rows owed to Slack and keep (the row just written) stay.
func (s *Store) prune(ctx context.Context, tx pgx.Tx, keep string) error {
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM deliveries`).Scan(&n); err != nil {
		return err
	}
	if n <= s.limit {
		return nil
	}
	_, err := tx.Exec(ctx, `DELETE FROM deliveries WHERE guid IN (
		SELECT guid FROM deliveries WHERE state <> 'pending' AND guid <> $1 ORDER BY seq LIMIT $2)`, keep, n-s.limit)
	return err
}

const columns = `guid, event, received_at, repo, ref, workflow, status, conclusion, url,
	attempts, last_error, seq, action, state, dedup_key, subject, message, next_attempt_at, destination`

func scan(row pgx.Row) (ledger.Delivery, error) {
	var (
		d                                             ledger.Delivery
		received, state                               string
		repo, ref, workflow, status, conclusion, link *string
		lastErr, action, key, subject                 *string
		next                                          int64
	)
	err := row.Scan(&d.GUID, &d.Event, &received, &repo, &ref, &workflow, &status, &conclusion, &link,
		&d.Attempts, &lastErr, &d.Seq, &action, &state, &key, &subject, &d.Message, &next, &d.Destination)
	if err != nil {
		return d, err
	}
	if d.ReceivedAt, err = time.Parse(timeLayout, received); err != nil {
		return d, fmt.Errorf("row %s: received_at %q: %w", d.GUID, received, err)
	}
	d.Repo, d.Ref, d.Workflow, d.Status, d.Conclusion, d.URL = str(repo), str(ref), str(workflow), str(status), str(conclusion), str(link)
	d.LastError, d.Action, d.Key, d.Subject = str(lastErr), str(action), str(key), str(subject)
	d.State = ledger.State(state)
	if next != 0 {
		d.NextAttemptAt = time.UnixMilli(next).UTC()
	}
	return d, nil
}

func (s *Store) query(ctx context.Context, q string, args ...any) ([]ledger.Delivery, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres ledger: query: %s", redact(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ledger.Delivery, error) { return scan(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres ledger: query: %s", redact(err))
	}
	return out, nil
}

func (s *Store) Get(ctx context.Context, guid string) (ledger.Delivery, error) {
	d, err := scan(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM deliveries WHERE guid = $1`, guid))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("%w: %s", ledger.ErrNotFound, guid)
	}
	if err != nil {
		return d, fmt.Errorf("postgres ledger: get %s: %s", guid, redact(err))
	}
	return d, nil
}

// Due returns owed rows in order of arrival, leaving out rows another
// replica has claimed and is posting right now.
func (s *Store) Due(ctx context.Context, destination string, now time.Time, after int64, limit int) ([]ledger.Delivery, error) {
	return s.query(ctx, `SELECT `+columns+` FROM deliveries
		WHERE state = 'pending' AND destination = $1 AND seq > $2 AND next_attempt_at <= $3 AND claimed_until <= $4
		ORDER BY seq LIMIT $5`, destination, after, millis(now), time.Now().UnixMilli(), limit)
}

func (s *Store) Live(ctx context.Context, key string) (ledger.Live, error) {
	var (
		m       ledger.Live
		updated int64
	)
	err := s.pool.QueryRow(ctx, `SELECT channel, ts, final, updated_at FROM live WHERE key = $1`, key).
		Scan(&m.Channel, &m.TS, &m.Final, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("%w: live message %s", ledger.ErrNotFound, key)
	}
	if err != nil {
		return m, fmt.Errorf("postgres ledger: live message %s: %s", key, redact(err))
	}
	m.UpdatedAt = time.UnixMilli(updated).UTC()
	return m, nil
}

func (s *Store) SetLive(ctx context.Context, key string, m ledger.Live) error {
	err := retry(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `DELETE FROM live WHERE updated_at < $1`, millis(m.UpdatedAt.Add(-ledger.LiveTTL))); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO live (key, channel, ts, final, updated_at) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (key) DO UPDATE SET channel = excluded.channel, ts = excluded.ts,
				final = excluded.final, updated_at = excluded.updated_at`, key, m.Channel, m.TS, m.Final, millis(m.UpdatedAt))
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("postgres ledger: keep live message %s: %s", key, redact(err))
	}
	return nil
}

func (s *Store) Subject(ctx context.Context, subject string) ([]ledger.Delivery, error) {
	return s.query(ctx, `SELECT `+columns+` FROM deliveries WHERE subject = $1 ORDER BY seq`, subject)
}

func (s *Store) List(ctx context.Context, state ledger.State, limit int) ([]ledger.Delivery, error) {
	if state == "" {
		return s.query(ctx, `SELECT `+columns+` FROM deliveries ORDER BY seq DESC LIMIT $1`, limit)
	}
	return s.query(ctx, `SELECT `+columns+` FROM deliveries WHERE state = $1 ORDER BY seq DESC LIMIT $2`, string(state), limit)
}

// Streak makes sure the key's row exists, locks it (SELECT ... FOR UPDATE),
// judges and writes back in one transaction: replicas judging the same key
// at once take turns, and each sees the state the other left.
func (s *Store) Streak(ctx context.Context, key string, run ledger.StreakRun) (ledger.StreakVerdict, error) {
	var v ledger.StreakVerdict
	err := retry(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO streaks (key, state) VALUES ($1, '') ON CONFLICT (key) DO NOTHING`, key); err != nil {
				return err
			}
			var raw string
			if err := tx.QueryRow(ctx, `SELECT state FROM streaks WHERE key = $1 FOR UPDATE`, key).Scan(&raw); err != nil {
				return err
			}
			st, err := ledger.UnmarshalStreak([]byte(raw))
			if err != nil {
				return err
			}
			var next ledger.StreakState
			next, v = ledger.Judge(st, run)
			b, err := ledger.MarshalStreak(next)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE streaks SET state = $2 WHERE key = $1`, key, string(b))
			return err
		})
	})
	if err != nil {
		return ledger.StreakVerdict{}, fmt.Errorf("postgres ledger: streak %s: %s", key, redact(err))
	}
	return v, nil
}

func (s *Store) Finish(ctx context.Context, guid string, state ledger.State, attempts int, lastErr string) error {
	if state != ledger.Delivered && state != ledger.Failed {
		return fmt.Errorf("postgres ledger: finish %s: state %q is not delivered or failed", guid, state)
	}
	delivered := 0
	if state == ledger.Delivered {
		delivered = 1
	}
	return s.update(ctx, guid, true, `UPDATE deliveries SET state = $1, delivered = $2, attempts = $3, last_error = $4, claimed_until = 0, claimed_by = NULL
		WHERE guid = $5 AND state = 'pending'`, string(state), delivered, attempts, null(lastErr), guid)
}

func (s *Store) Reschedule(ctx context.Context, guid string, attempts int, lastErr string, next time.Time) error {
	return s.update(ctx, guid, false, `UPDATE deliveries SET attempts = $1, last_error = $2, next_attempt_at = $3, claimed_until = 0, claimed_by = NULL
		WHERE guid = $4 AND state = 'pending'`, attempts, null(lastErr), millis(next), guid)
}

func (s *Store) update(ctx context.Context, guid string, prune bool, q string, args ...any) error {
	err := retry(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, q, args...)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				var one int
				if err := tx.QueryRow(ctx, `SELECT 1 FROM deliveries WHERE guid = $1`, guid).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
					return fmt.Errorf("%w: %s", ledger.ErrNotFound, guid)
				}
				return fmt.Errorf("%w: %s", ledger.ErrNotPending, guid)
			}
			if prune {
				return s.prune(ctx, tx, "")
			}
			return nil
		})
	})
	if err != nil && !errors.Is(err, ledger.ErrNotFound) && !errors.Is(err, ledger.ErrNotPending) {
		return fmt.Errorf("postgres ledger: update %s: %s", guid, redact(err))
	}
	return err
}

func (s *Store) Requeue(ctx context.Context, guid string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE deliveries SET state = 'pending', delivered = 0, attempts = 0,
		last_error = NULL, next_attempt_at = 0, claimed_until = 0, claimed_by = NULL
		WHERE guid = $1 AND message IS NOT NULL AND length(message) > 0`, guid)
	if err != nil {
		return fmt.Errorf("postgres ledger: requeue %s: %s", guid, redact(err))
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.Get(ctx, guid); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", ledger.ErrNothingToPost, guid)
	}
	return nil
}

func (s *Store) Stats(ctx context.Context) (ledger.Stats, error) {
	var (
		st   ledger.Stats
		last *string
	)
	err := s.pool.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'failed'),
		(SELECT received_at FROM deliveries ORDER BY seq DESC LIMIT 1)
		FROM deliveries`).Scan(&st.Size, &st.Pending, &st.Failed, &last)
	if err != nil {
		return st, fmt.Errorf("postgres ledger: stats: %s", redact(err))
	}
	if last != nil {
		if st.LastDeliveryAt, err = time.Parse(timeLayout, *last); err != nil {
			return st, fmt.Errorf("postgres ledger: stats: received_at %q: %w", *last, err)
		}
	}
	return st, nil
}

// Claim marks a pending row as being posted by this replica until the
// lease ends (or renews its own claim), and reports whether it got it. Finish and Reschedule release
// it; if this replica dies first, another takes the row after the lease.
func (s *Store) Claim(ctx context.Context, guid string, lease time.Duration) (bool, error) {
	now := time.Now()
	tag, err := s.pool.Exec(ctx, `UPDATE deliveries SET claimed_until = $1, claimed_by = $2
		WHERE guid = $3 AND state = 'pending' AND (claimed_until <= $4 OR claimed_by = $2)`,
		now.Add(lease).UnixMilli(), s.id, guid, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("postgres ledger: claim %s: %s", guid, redact(err))
	}
	return tag.RowsAffected() == 1, nil
}

// Lead blocks until this process holds the deployment's delivery lock, then
// returns a context that ends when the lock is lost (the database
// connection failed) or ctx ends. Only the holder posts to Slack, so
// SLACK_RATE paces the whole deployment, not each replica.
func (s *Store) Lead(ctx context.Context) (context.Context, error) {
	for {
		if s.closing.Err() != nil {
			return nil, errors.New("postgres ledger: closed")
		}
		conn, err := s.pool.Acquire(ctx)
		if err == nil {
			var got bool
			err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('ciwebhook:deliver:' || current_schema()))`).Scan(&got)
			if err == nil && got {
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.closing.Err() != nil {
					conn.Hijack().Close(context.Background()) // drops the lock with the session
					return nil, errors.New("postgres ledger: closed")
				}
				return s.hold(ctx, conn), nil
			}
			conn.Release()
		}
		// Not the holder, or the database is away: ask again shortly. A
		// database that stays away shows in health and in Record's errors.
		t := time.NewTimer(2 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// hold keeps the lock's connection out of the pool and checks it every
// second; when the check fails the lock is gone with the session.
func (s *Store) hold(ctx context.Context, conn *pgxpool.Conn) context.Context {
	lctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.closing, cancel)
	s.leaders.Add(1)
	go func() {
		defer s.leaders.Done()
		defer stop()
		defer cancel()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-lctx.Done():
				// Closing the session releases the advisory lock; the
				// connection must not go back to the pool holding it.
				c := conn.Hijack()
				cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
				c.Close(cctx)
				ccancel()
				return
			case <-tick.C:
				pctx, pcancel := context.WithTimeout(lctx, 3*time.Second)
				err := conn.Ping(pctx)
				pcancel()
				if err != nil {
					cancel()
				}
			}
		}
	}()
	return lctx
}

// Passwords in URL (user:secret@host) and key=value (password=secret)
// connection strings.
var (
	urlPassword = regexp.MustCompile(`(://[^:/@\s]*:)[^@\s]*@`)
	kvPassword  = regexp.MustCompile(`(?i)(password=)('[^']*'|\S+)`)
)

// redact keeps a database password out of an error that quotes the
// connection string.
func redact(err error) string {
	s := urlPassword.ReplaceAllString(err.Error(), "${1}[redacted]@")
	return kvPassword.ReplaceAllString(s, "${1}[redacted]")
}

func null(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
