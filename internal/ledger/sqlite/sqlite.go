// Package sqlite is the default ledger: one SQLite file in WAL mode, through
// the pure-Go modernc.org/sqlite driver so the binary stays static.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// schema extends DESIGN.md's seed table; it never drops a seed column.
const schema = `
CREATE TABLE IF NOT EXISTS deliveries (
  guid TEXT PRIMARY KEY, event TEXT NOT NULL, received_at TEXT NOT NULL,
  repo TEXT, ref TEXT, workflow TEXT, status TEXT, conclusion TEXT, url TEXT,
  delivered INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  seq INTEGER NOT NULL,
  action TEXT,
  state TEXT NOT NULL DEFAULT 'ignored',
  dedup_key TEXT UNIQUE,
  subject TEXT,
  message BLOB,
  next_attempt_at INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);
-- The last Seq handed out. MAX(seq)+1 would hand a pruned row's Seq out
-- again, and the worker's cursor would skip the new row.
CREATE TABLE IF NOT EXISTS ledger_seq (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, seq);
CREATE INDEX IF NOT EXISTS deliveries_subject ON deliveries(subject, seq) WHERE subject IS NOT NULL;
`

// timeLayout is RFC 3339 with a fixed width, so that the text sorts as time.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Store is a ledger.Store on one SQLite file.
type Store struct {
	// Writes go through one connection: SQLite has one writer anyway, and a
	// single connection turns contention into queueing instead of
	// SQLITE_BUSY. Reads use their own pool and never wait on a write (WAL).
	w, r  *sql.DB
	limit int
}

var _ ledger.Store = (*Store)(nil)

// Open opens (creating it and its folder if needed) the ledger at path,
// keeping at most limit finished rows.
func Open(ctx context.Context, path string, limit int) (*Store, error) {
	if limit < 1 {
		return nil, fmt.Errorf("sqlite ledger: limit %d must be at least 1", limit)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("sqlite ledger: create folder: %w", err)
		}
	}
	// synchronous(FULL): a row is on disk before the delivery is answered,
	// so an acknowledged delivery survives power loss, not only kill -9.
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()

	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	s := &Store{w: w, r: r, limit: limit}
	if _, err := w.ExecContext(ctx, schema); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite ledger %s: create schema: %w", path, err)
	}
	return s, nil
}

// Close closes both pools.
func (s *Store) Close() error {
	return errors.Join(s.w.Close(), s.r.Close())
}

func (s *Store) Record(ctx context.Context, d *ledger.Delivery) (ledger.Result, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlite ledger: begin: %w", err)
	}
	defer tx.Rollback()

	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM deliveries WHERE guid = ?`, d.GUID).Scan(&one)
	if err == nil {
		return ledger.Duplicate, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("sqlite ledger: look up %s: %w", d.GUID, err)
	}
	result := ledger.Recorded
	if d.Key != "" {
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM deliveries WHERE dedup_key = ?`, d.Key).Scan(&one)
		switch {
		case err == nil:
			// Another delivery already said this; keep the row, not the key.
			result, d.State, d.Key = ledger.KeyTaken, ledger.Ignored, ""
		case !errors.Is(err, sql.ErrNoRows):
			return 0, fmt.Errorf("sqlite ledger: look up key: %w", err)
		}
	}
	err = tx.QueryRowContext(ctx, `INSERT INTO ledger_seq (id, seq) VALUES (1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deliveries))
		ON CONFLICT (id) DO UPDATE SET seq = seq + 1 RETURNING seq`).Scan(&d.Seq)
	if err != nil {
		return 0, fmt.Errorf("sqlite ledger: next seq: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO deliveries
		(guid, event, received_at, repo, ref, workflow, status, conclusion, url,
		 delivered, attempts, last_error, seq, action, state, dedup_key, subject, message, next_attempt_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.GUID, d.Event, d.ReceivedAt.UTC().Format(timeLayout),
		null(d.Repo), null(d.Ref), null(d.Workflow), null(d.Status), null(d.Conclusion), null(d.URL),
		d.Delivered(), d.Attempts, null(d.LastError), d.Seq, null(d.Action), string(d.State),
		null(d.Key), null(d.Subject), d.Message, millis(d.NextAttemptAt))
	if err != nil {
		return 0, fmt.Errorf("sqlite ledger: insert %s: %w", d.GUID, err)
	}
	if err := s.prune(ctx, tx, d.GUID); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlite ledger: commit %s: %w", d.GUID, err)
	}
	return result, nil
}

// prune deletes the oldest finished rows while the ledger holds more than
// its limit. Rows still owed to Slack are never deleted, nor is keep (the
// row just recorded).
func (s *Store) prune(ctx context.Context, tx *sql.Tx, keep string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM deliveries`).Scan(&n); err != nil {
		return fmt.Errorf("sqlite ledger: count: %w", err)
	}
	if n <= s.limit {
		return nil
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE guid IN (
		SELECT guid FROM deliveries WHERE state != 'pending' AND guid != ? ORDER BY seq LIMIT ?)`, keep, n-s.limit)
	if err != nil {
		return fmt.Errorf("sqlite ledger: prune: %w", err)
	}
	return nil
}

const columns = `guid, event, received_at, repo, ref, workflow, status, conclusion, url,
	attempts, last_error, seq, action, state, dedup_key, subject, message, next_attempt_at`

func scan(row interface{ Scan(...any) error }) (ledger.Delivery, error) {
	var (
		d                                             ledger.Delivery
		received                                      string
		repo, ref, workflow, status, conclusion, link sql.NullString
		lastErr, action, state, key, subject          sql.NullString
		next                                          int64
	)
	err := row.Scan(&d.GUID, &d.Event, &received, &repo, &ref, &workflow, &status, &conclusion, &link,
		&d.Attempts, &lastErr, &d.Seq, &action, &state, &key, &subject, &d.Message, &next)
	if err != nil {
		return d, err
	}
	d.ReceivedAt, err = time.Parse(timeLayout, received)
	if err != nil {
		return d, fmt.Errorf("sqlite ledger: row %s: received_at %q: %w", d.GUID, received, err)
	}
	d.Repo, d.Ref, d.Workflow, d.Status, d.Conclusion, d.URL = repo.String, ref.String, workflow.String, status.String, conclusion.String, link.String
	d.LastError, d.Action, d.State, d.Key, d.Subject = lastErr.String, action.String, ledger.State(state.String), key.String, subject.String
	if next != 0 {
		d.NextAttemptAt = time.UnixMilli(next).UTC()
	}
	return d, nil
}

func (s *Store) Get(ctx context.Context, guid string) (ledger.Delivery, error) {
	d, err := scan(s.r.QueryRowContext(ctx, `SELECT `+columns+` FROM deliveries WHERE guid = ?`, guid))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("%w: %s", ledger.ErrNotFound, guid)
	}
	if err != nil {
		return d, fmt.Errorf("sqlite ledger: get %s: %w", guid, err)
	}
	return d, nil
}

func (s *Store) Due(ctx context.Context, now time.Time, after int64, limit int) ([]ledger.Delivery, error) {
	return s.query(ctx, `SELECT `+columns+` FROM deliveries
		WHERE state = 'pending' AND seq > ? AND next_attempt_at <= ? ORDER BY seq LIMIT ?`, after, millis(now), limit)
}

func (s *Store) Subject(ctx context.Context, subject string) ([]ledger.Delivery, error) {
	return s.query(ctx, `SELECT `+columns+` FROM deliveries WHERE subject = ? ORDER BY seq`, subject)
}

func (s *Store) query(ctx context.Context, q string, args ...any) ([]ledger.Delivery, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite ledger: query: %w", err)
	}
	defer rows.Close()
	var out []ledger.Delivery
	for rows.Next() {
		d, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite ledger: scan: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite ledger: query: %w", err)
	}
	return out, nil
}

func (s *Store) Finish(ctx context.Context, guid string, state ledger.State, attempts int, lastErr string) error {
	if state != ledger.Delivered && state != ledger.Failed {
		return fmt.Errorf("sqlite ledger: finish %s: state %q is not delivered or failed", guid, state)
	}
	return s.update(ctx, guid, true, `UPDATE deliveries SET state = ?, delivered = ?, attempts = ?, last_error = ?
		WHERE guid = ? AND state = 'pending'`, string(state), state == ledger.Delivered, attempts, null(lastErr), guid)
}

func (s *Store) Reschedule(ctx context.Context, guid string, attempts int, lastErr string, next time.Time) error {
	return s.update(ctx, guid, false, `UPDATE deliveries SET attempts = ?, last_error = ?, next_attempt_at = ?
		WHERE guid = ? AND state = 'pending'`, attempts, null(lastErr), millis(next), guid)
}

// update changes one pending row and tells a missing row from a finished one.
func (s *Store) update(ctx context.Context, guid string, prune bool, q string, args ...any) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite ledger: begin: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("sqlite ledger: update %s: %w", guid, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM deliveries WHERE guid = ?`, guid).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s", ledger.ErrNotFound, guid)
		}
		return fmt.Errorf("%w: %s", ledger.ErrNotPending, guid)
	}
	if prune {
		if err := s.prune(ctx, tx, ""); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite ledger: commit %s: %w", guid, err)
	}
	return nil
}

func (s *Store) List(ctx context.Context, state ledger.State, limit int) ([]ledger.Delivery, error) {
	if state == "" {
		return s.query(ctx, `SELECT `+columns+` FROM deliveries ORDER BY seq DESC LIMIT ?`, limit)
	}
	return s.query(ctx, `SELECT `+columns+` FROM deliveries WHERE state = ? ORDER BY seq DESC LIMIT ?`, string(state), limit)
}

func (s *Store) Requeue(ctx context.Context, guid string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE deliveries SET state = 'pending', delivered = 0, attempts = 0,
		last_error = NULL, next_attempt_at = 0 WHERE guid = ? AND message IS NOT NULL AND length(message) > 0`, guid)
	if err != nil {
		return fmt.Errorf("sqlite ledger: requeue %s: %w", guid, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
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
		last sql.NullString
	)
	err := s.r.QueryRowContext(ctx, `SELECT count(*),
		COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'failed'), 0),
		(SELECT received_at FROM deliveries ORDER BY seq DESC LIMIT 1)
		FROM deliveries`).Scan(&st.Size, &st.Pending, &st.Failed, &last)
	if err != nil {
		return st, fmt.Errorf("sqlite ledger: stats: %w", err)
	}
	if last.Valid {
		if st.LastDeliveryAt, err = time.Parse(timeLayout, last.String); err != nil {
			return st, fmt.Errorf("sqlite ledger: stats: received_at %q: %w", last.String, err)
		}
	}
	return st, nil
}

func null(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
