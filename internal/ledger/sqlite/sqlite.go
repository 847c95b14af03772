// Package sqlite is the default ledger: one SQLite file in WAL mode, through
// the pure-Go modernc.org/sqlite driver so the binary stays static.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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
  next_attempt_at INTEGER NOT NULL DEFAULT 0,
  destination TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);
-- The last Seq handed out. MAX(seq)+1 would hand a pruned row's Seq out
-- again, and the worker's cursor would skip the new row.
CREATE TABLE IF NOT EXISTS ledger_seq (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, seq);
CREATE INDEX IF NOT EXISTS deliveries_subject ON deliveries(subject, seq) WHERE subject IS NOT NULL;
-- The number of rows, kept by triggers so that every writer (this process,
-- an operator's command, the sqlite3 shell) keeps it: pruning reads it
-- instead of counting a table of up to LEDGER_LIMIT rows on every write.
-- Open recounts it, so a count that drifted (a REPLACE, which fires no
-- delete trigger) heals at the next start.
CREATE TABLE IF NOT EXISTS ledger_count (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS deliveries_counted_in AFTER INSERT ON deliveries
  BEGIN UPDATE ledger_count SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS deliveries_counted_out AFTER DELETE ON deliveries
  BEGIN UPDATE ledger_count SET n = n - 1 WHERE id = 1; END;
INSERT INTO ledger_count (id, n) VALUES (1, (SELECT count(*) FROM deliveries))
  ON CONFLICT (id) DO UPDATE SET n = excluded.n;
-- NOTIFY_MODE=changes: one row per streak (repo, workflow, branch, ...),
-- its state as JSON (ledger.StreakState). Not a delivery: never pruned.
CREATE TABLE IF NOT EXISTS streaks (key TEXT PRIMARY KEY, state TEXT NOT NULL);
-- Live messages of bot-token routes (ledger.Live), by subject and
-- destination. Not deliveries: never pruned.
CREATE TABLE IF NOT EXISTS live (key TEXT PRIMARY KEY, channel TEXT NOT NULL, ts TEXT NOT NULL,
  final INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS live_updated ON live(updated_at);
`

// upgrades bring a ledger made by an earlier version up to schema: SQLite
// has no ADD COLUMN IF NOT EXISTS, so each runs only when its column is
// missing. Indexes on added columns are made here, after the column.
var upgrades = []struct{ column, sql string }{
	{"destination", `ALTER TABLE deliveries ADD COLUMN destination TEXT NOT NULL DEFAULT ''`},
}

// indexes come after the upgrades, since they may name an added column.
const indexes = `
-- The worker of each destination walks its own pending rows in order.
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(state, destination, seq);
`

// timeLayout is RFC 3339 with a fixed width, so that the text sorts as time.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Store is a ledger.Store on one SQLite file.
//
// Record is a group commit: concurrent calls are handed to one writer
// goroutine, which records every row waiting at that moment in one
// transaction and answers each caller once the commit that holds its row
// has returned (one fsync for the group instead of one per row).
type Store struct {
	// Writes go through one connection: SQLite has one writer anyway, and a
	// single connection turns contention into queueing instead of
	// SQLITE_BUSY. Reads use their own pool and never wait on a write (WAL).
	w, r  *sql.DB
	limit int
	stmts statements
	// ckpt is the checkpointer's own connection. The writer's connection
	// does not checkpoint after its commits (wal_autocheckpoint=0), so that
	// copying the WAL into the database file does not hold a commit up; see
	// checkpointer.
	ckpt *sql.DB
	kick chan struct{} // a commit happened: a checkpoint may be due
	// restart is set by the checkpointer when the WAL has grown past
	// restartFrames; the writer then finishes the checkpoint between two
	// groups, so that the WAL starts over.
	restart atomic.Bool

	// mu guards closed and the sending side of records: Close takes it
	// exclusively, so no Record sends after records is closed.
	mu      sync.RWMutex
	closed  bool
	records chan *recordCall
	stopped chan struct{} // closed when the writer goroutine has returned

	stopCkpt    chan struct{} // closed by Close: the checkpointer returns
	ckptStopped chan struct{} // closed when it has
}

// checkpointEvery spaces the checkpoints out: each one fsyncs the database
// file, and between two of them the WAL grows by what was committed (about
// 50 KB per commit of one row, so a few MB under a heavy burst).
const checkpointEvery = 250 * time.Millisecond

// restartFrames is how large the WAL may grow (in pages) before the writer
// makes it start over: SQLite's own wal_autocheckpoint default.
const restartFrames = 1000

// maxBatch bounds the rows of one group commit. It is also kept at most
// the limit, so that pruning never has to choose between a row of the
// group (whose redelivery must be a Duplicate) and LEDGER_LIMIT.
const maxBatch = 128

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

	// Three pools: the writer (one connection, which never checkpoints),
	// the readers, and the checkpointer (one connection). sql.Open only
	// checks the DSN; the first use connects.
	w, err := sql.Open("sqlite", dsn+"&_pragma=wal_autocheckpoint(0)")
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
	ckpt, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	ckpt.SetMaxOpenConns(1)
	fail := func(what string, err error) (*Store, error) {
		errors.Join(w.Close(), r.Close(), ckpt.Close())
		return nil, fmt.Errorf("sqlite ledger %s: %s%w", path, what, err)
	}
	if err := createSchema(ctx, w); err != nil {
		return fail("create schema: ", err)
	}
	stmts, err := prepare(ctx, w)
	if err != nil {
		return fail("", err)
	}
	s := &Store{
		w: w, r: r, ckpt: ckpt, limit: limit, stmts: stmts,
		kick:        make(chan struct{}, 1),
		records:     make(chan *recordCall, maxBatch),
		stopped:     make(chan struct{}),
		stopCkpt:    make(chan struct{}),
		ckptStopped: make(chan struct{}),
	}
	go s.writer()
	go s.checkpointer()
	return s, nil
}

// committed tells the checkpointer that the WAL grew. It never blocks.
func (s *Store) committed() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// checkpointer copies committed pages from the WAL into the database file
// after commits, at most once per checkpointEvery, on its own connection,
// while the writer goes on committing: a PASSIVE checkpoint waits for no
// reader or writer. Durability does not depend on it: a commit is on disk
// in the WAL (synchronous=FULL) before Record returns.
//
// The WAL starts over from its beginning only when a write transaction
// begins with every frame copied, which a checkpoint on another connection
// never sees while commits keep coming. So when the WAL has grown past
// restartFrames, the checkpointer asks the writer to finish the job
// between two groups (restartWAL): by then there are only the few frames
// committed since this checkpoint left to copy. A failed checkpoint is
// tried again after the next commit; SQLite also checkpoints when the last
// connection closes.
func (s *Store) checkpointer() {
	defer close(s.ckptStopped)
	for {
		select {
		case <-s.kick:
		case <-s.stopCkpt:
			return
		}
		var busy, log, copied int
		err := s.ckpt.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &copied)
		if err == nil && log >= restartFrames {
			s.restart.Store(true)
		}
		t := time.NewTimer(checkpointEvery)
		select {
		case <-t.C:
		case <-s.stopCkpt:
			t.Stop()
			return
		}
	}
}

// createSchema creates or upgrades the schema and recounts the rows, in one
// transaction, so that no other writer slips a row between the count and
// the triggers that keep it.
func createSchema(ctx context.Context, w *sql.DB) error {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return err
	}
	for _, u := range upgrades {
		var has bool
		err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pragma_table_info('deliveries') WHERE name = ?)`, u.column).Scan(&has)
		if err != nil {
			return err
		}
		if !has {
			if _, err := tx.ExecContext(ctx, u.sql); err != nil {
				return fmt.Errorf("add column %s: %w", u.column, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, indexes); err != nil {
		return err
	}
	return tx.Commit()
}

// statements are the writer's prepared statements: preparing each one for
// every use was over a third of Record's CPU time (docs/PERFORMANCE.md).
type statements struct {
	exists, lastSeq, setSeq, insert, count, prune *sql.Stmt
}

func prepare(ctx context.Context, w *sql.DB) (statements, error) {
	var (
		st  statements
		err error
	)
	for _, p := range []struct {
		stmt **sql.Stmt
		q    string
	}{
		// Whether the GUID is taken, and whether the key is (a key of "" never is).
		{&st.exists, `SELECT EXISTS (SELECT 1 FROM deliveries WHERE guid = ?1),
			?2 <> '' AND EXISTS (SELECT 1 FROM deliveries WHERE dedup_key = ?2)`},
		// The last Seq handed out; MAX(seq) for a ledger from before ledger_seq.
		{&st.lastSeq, `SELECT COALESCE((SELECT seq FROM ledger_seq WHERE id = 1), (SELECT MAX(seq) FROM deliveries), 0)`},
		{&st.setSeq, `INSERT INTO ledger_seq (id, seq) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq`},
		{&st.insert, `INSERT INTO deliveries
			(guid, event, received_at, repo, ref, workflow, status, conclusion, url,
			 delivered, attempts, last_error, seq, action, state, dedup_key, subject, message, next_attempt_at, destination)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&st.count, `SELECT n FROM ledger_count WHERE id = 1`},
		// LIMIT CAST(? AS INTEGER), not LIMIT ?: SQLite plans a LIMIT of a
		// bare parameter for the value bound to it, and so prepares the
		// statement again whenever that value changes (every group of
		// another size: 2.8% of a delivery's CPU time); an expression is
		// evaluated when the statement runs.
		{&st.prune, `DELETE FROM deliveries WHERE seq IN (
			SELECT seq FROM deliveries WHERE state != 'pending' AND seq < ? ORDER BY seq LIMIT CAST(? AS INTEGER))`},
	} {
		if *p.stmt, err = w.PrepareContext(ctx, p.q); err != nil {
			st.close()
			return st, fmt.Errorf("prepare: %w", err)
		}
	}
	return st, nil
}

func (st statements) close() {
	for _, s := range []*sql.Stmt{st.exists, st.lastSeq, st.setSeq, st.insert, st.count, st.prune} {
		if s != nil {
			s.Close()
		}
	}
}

// Close stops taking rows, lets the writer finish the ones already handed
// to it, and closes the connections. A second Close is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.records)
	s.mu.Unlock()
	<-s.stopped
	close(s.stopCkpt)
	<-s.ckptStopped
	s.stmts.close()
	return errors.Join(s.ckpt.Close(), s.r.Close(), s.w.Close())
}

// recordCall is one Record waiting for the writer.
type recordCall struct {
	ctx context.Context
	d   *ledger.Delivery
	// state says who owns the call: queued, then either taken (by the
	// writer, which then answers it) or abandoned (by its caller, whose
	// context ended first; the writer leaves the row out).
	state atomic.Int32
	res   ledger.Result
	err   error
	done  chan struct{} // closed once res and err are final
}

const (
	queued int32 = iota
	taken
	abandoned
)

// Record hands d to the writer goroutine and waits for the commit that
// holds its row. A caller whose context ends before the writer has taken
// its row gets the context's error at once, and the row is not stored;
// once the writer has taken the row, Record waits for its group's commit
// even if the context ends meanwhile, so that the answer says whether the
// row was stored.
func (s *Store) Record(ctx context.Context, d *ledger.Delivery) (ledger.Result, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c := &recordCall{ctx: ctx, d: d, done: make(chan struct{})}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return 0, errors.New("sqlite ledger: record: the ledger is closed")
	}
	select {
	case s.records <- c:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return 0, ctx.Err()
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		if c.state.CompareAndSwap(queued, abandoned) {
			return 0, ctx.Err()
		}
		<-c.done // the writer has the row: its answer is the truth
	}
	return c.res, c.err
}

// writer records the rows handed to Record, in groups: each group is every
// call waiting when the previous commit returned, so a lone delivery waits
// for nothing and a burst shares its fsyncs. It returns once Close has
// closed records and every call handed over has been answered.
func (s *Store) writer() {
	defer close(s.stopped)
	batch := make([]*recordCall, 0, maxBatch)
	size := min(maxBatch, s.limit)
	for c := range s.records {
		batch = append(batch[:0], c)
	more:
		for len(batch) < size {
			select {
			case c, ok := <-s.records:
				if !ok {
					break more
				}
				batch = append(batch, c)
			default:
				break more
			}
		}
		s.commitGroup(batch)
		clear(batch) // no reference to an answered call outlives it
		s.restartWAL()
	}
}

// restartWAL, when the checkpointer asked for it, checkpoints on the
// writer's own connection; the writer calls it after a group's callers
// were answered, the worker's writes after theirs. With every frame
// copied, the next write transaction starts the WAL over, so that it
// stays small and is overwritten in place (growing a file makes each
// commit's sync write the file's size too). The checkpointer has copied
// all but the last few frames, so this costs about one more sync.
func (s *Store) restartWAL() {
	if s.restart.CompareAndSwap(true, false) {
		s.w.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
	}
}

// commitGroup records a group in one transaction and answers every call.
// A row whose own statements fail is answered with its error and the group
// is recorded again without it, so one bad row fails no other; a failed
// commit fails every row of the group (none of them was stored).
func (s *Store) commitGroup(group []*recordCall) {
	todo := group[:0:0]
	for _, c := range group {
		// A caller that gave up first has gone; its row is left out.
		if c.state.CompareAndSwap(queued, taken) {
			todo = append(todo, c)
		}
	}
	for len(todo) > 0 {
		// A caller whose context has ended by now is told so, and its row
		// is left out (also when a group is tried again: its first try
		// stored nothing).
		live := todo[:0:0]
		for _, c := range todo {
			if err := c.ctx.Err(); err != nil {
				c.res, c.err = 0, err
				close(c.done)
				continue
			}
			live = append(live, c)
		}
		if len(live) == 0 {
			return
		}
		bad, err := s.tryGroup(live)
		switch {
		case bad >= 0:
			// That row is answered; the others are tried again.
			c := live[bad]
			c.res, c.err = 0, err
			close(c.done)
			todo = append(live[:bad:bad], live[bad+1:]...)
		case err != nil:
			for _, c := range live {
				c.res, c.err = 0, err
				close(c.done)
			}
			return
		default:
			for _, c := range live {
				close(c.done)
			}
			return
		}
	}
}

// saved is what Record may change in a caller's Delivery, to put back when
// the row is not stored after all.
type saved struct {
	seq   int64
	state ledger.State
	key   string
}

// tryGroup records the group's rows in one transaction and commits. It
// returns the index of a row whose statements failed (and that error), or
// -1 and the error of the transaction as a whole. On any error nothing is
// stored and every Delivery is as the caller passed it.
func (s *Store) tryGroup(group []*recordCall) (bad int, err error) {
	ctx := context.Background() // a caller's context must not cut the others' rows off
	before := make([]saved, len(group))
	for i, c := range group {
		before[i] = saved{c.d.Seq, c.d.State, c.d.Key}
	}
	defer func() {
		if err != nil {
			for i, c := range group {
				c.d.Seq, c.d.State, c.d.Key = before[i].seq, before[i].state, before[i].key
			}
		}
	}()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return -1, fmt.Errorf("sqlite ledger: begin: %w", err)
	}
	defer tx.Rollback()
	// seq is read at the group's first insert: a group of duplicates needs none.
	var seq, first int64
	exists, insert := tx.StmtContext(ctx, s.stmts.exists), tx.StmtContext(ctx, s.stmts.insert)
	inserted := false
	for i, c := range group {
		d := c.d
		var guidTaken, keyTaken bool
		if err := exists.QueryRowContext(ctx, d.GUID, d.Key).Scan(&guidTaken, &keyTaken); err != nil {
			return i, fmt.Errorf("sqlite ledger: look up %s: %w", d.GUID, err)
		}
		if guidTaken {
			c.res = ledger.Duplicate
			continue
		}
		c.res = ledger.Recorded
		if keyTaken {
			// Another delivery already said this; keep the row, not the key.
			c.res, d.State, d.Key = ledger.KeyTaken, ledger.Ignored, ""
		}
		if !inserted {
			if err := tx.StmtContext(ctx, s.stmts.lastSeq).QueryRowContext(ctx).Scan(&seq); err != nil {
				return -1, fmt.Errorf("sqlite ledger: next seq: %w", err)
			}
			first = seq + 1
		}
		seq++
		d.Seq = seq
		_, err := insert.ExecContext(ctx,
			d.GUID, d.Event, d.ReceivedAt.UTC().Format(timeLayout),
			null(d.Repo), null(d.Ref), null(d.Workflow), null(d.Status), null(d.Conclusion), null(d.URL),
			d.Delivered(), d.Attempts, null(d.LastError), d.Seq, null(d.Action), string(d.State),
			null(d.Key), null(d.Subject), d.Message, millis(d.NextAttemptAt), d.Destination)
		if err != nil {
			return i, fmt.Errorf("sqlite ledger: insert %s: %w", d.GUID, err)
		}
		inserted = true
	}
	if inserted {
		if _, err := tx.StmtContext(ctx, s.stmts.setSeq).ExecContext(ctx, seq); err != nil {
			return -1, fmt.Errorf("sqlite ledger: next seq: %w", err)
		}
		// The group's rows (Seq first and up) are never pruned: their
		// redeliveries must be Duplicates.
		if err := s.prune(ctx, tx, first); err != nil {
			return -1, err
		}
	}
	if err := tx.Commit(); err != nil {
		// A COMMIT that failed may leave the transaction open (SQLITE_BUSY);
		// end it, or the writer's connection could not begin another.
		s.w.ExecContext(ctx, "ROLLBACK")
		return -1, fmt.Errorf("sqlite ledger: commit: %w", err)
	}
	s.committed()
	return -1, nil
}

// prune deletes the oldest finished rows while the ledger holds more than
// its limit. Rows still owed to Slack are never deleted, nor is any row
// whose Seq is below or more (the rows just recorded).
func (s *Store) prune(ctx context.Context, tx *sql.Tx, below int64) error {
	var n int
	if err := tx.StmtContext(ctx, s.stmts.count).QueryRowContext(ctx).Scan(&n); err != nil {
		return fmt.Errorf("sqlite ledger: count: %w", err)
	}
	if n <= s.limit {
		return nil
	}
	if _, err := tx.StmtContext(ctx, s.stmts.prune).ExecContext(ctx, below, n-s.limit); err != nil {
		return fmt.Errorf("sqlite ledger: prune: %w", err)
	}
	return nil
}

const columns = `guid, event, received_at, repo, ref, workflow, status, conclusion, url,
	attempts, last_error, seq, action, state, dedup_key, subject, message, next_attempt_at, destination`

func scan(row interface{ Scan(...any) error }) (ledger.Delivery, error) {
	var (
		d                                             ledger.Delivery
		received                                      string
		repo, ref, workflow, status, conclusion, link sql.NullString
		lastErr, action, state, key, subject          sql.NullString
		next                                          int64
	)
	err := row.Scan(&d.GUID, &d.Event, &received, &repo, &ref, &workflow, &status, &conclusion, &link,
		&d.Attempts, &lastErr, &d.Seq, &action, &state, &key, &subject, &d.Message, &next, &d.Destination)
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

func (s *Store) Due(ctx context.Context, destination string, now time.Time, after int64, limit int) ([]ledger.Delivery, error) {
	return s.query(ctx, `SELECT `+columns+` FROM deliveries
		WHERE state = 'pending' AND destination = ? AND seq > ? AND next_attempt_at <= ? ORDER BY seq LIMIT ?`,
		destination, after, millis(now), limit)
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
		if err := s.prune(ctx, tx, math.MaxInt64); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite ledger: commit %s: %w", guid, err)
	}
	s.committed()
	s.restartWAL()
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
	s.committed()
	s.restartWAL()
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.Get(ctx, guid); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", ledger.ErrNothingToPost, guid)
	}
	return nil
}

// Streak reads, judges and writes one streak row in one transaction on the
// writer's connection, like Finish and Requeue: BEGIN IMMEDIATE (the DSN's
// _txlock) takes SQLite's write lock first, so no other writer, in this
// process or another, can judge the same key in between.
func (s *Store) Streak(ctx context.Context, key string, run ledger.StreakRun) (ledger.StreakVerdict, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return ledger.StreakVerdict{}, fmt.Errorf("sqlite ledger: begin: %w", err)
	}
	defer tx.Rollback()
	var raw []byte
	err = tx.QueryRowContext(ctx, `SELECT state FROM streaks WHERE key = ?`, key).Scan(&raw)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return ledger.StreakVerdict{}, fmt.Errorf("sqlite ledger: streak %s: %w", key, err)
	}
	st, err := ledger.UnmarshalStreak(raw)
	if err != nil {
		return ledger.StreakVerdict{}, fmt.Errorf("sqlite ledger: streak %s: %w", key, err)
	}
	next, v := ledger.Judge(st, run)
	b, err := ledger.MarshalStreak(next)
	if err != nil {
		return ledger.StreakVerdict{}, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO streaks (key, state) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET state = excluded.state`, key, string(b)); err != nil {
		return ledger.StreakVerdict{}, fmt.Errorf("sqlite ledger: streak %s: %w", key, err)
	}
	if err := tx.Commit(); err != nil {
		s.w.ExecContext(ctx, "ROLLBACK") // as in tryGroup: a failed COMMIT may leave it open
		return ledger.StreakVerdict{}, fmt.Errorf("sqlite ledger: commit streak: %w", err)
	}
	s.committed()
	s.restartWAL()
	return v, nil
}

func (s *Store) Live(ctx context.Context, key string) (ledger.Live, error) {
	var (
		m       ledger.Live
		updated int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT channel, ts, final, updated_at FROM live WHERE key = ?`, key).
		Scan(&m.Channel, &m.TS, &m.Final, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("%w: live message %s", ledger.ErrNotFound, key)
	}
	if err != nil {
		return m, fmt.Errorf("sqlite ledger: live message %s: %w", key, err)
	}
	m.UpdatedAt = time.UnixMilli(updated).UTC()
	return m, nil
}

func (s *Store) SetLive(ctx context.Context, key string, m ledger.Live) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite ledger: begin: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM live WHERE updated_at < ?`, millis(m.UpdatedAt.Add(-ledger.LiveTTL))); err != nil {
		return fmt.Errorf("sqlite ledger: forget old live messages: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO live (key, channel, ts, final, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET channel = excluded.channel, ts = excluded.ts,
		final = excluded.final, updated_at = excluded.updated_at`, key, m.Channel, m.TS, m.Final, millis(m.UpdatedAt))
	if err != nil {
		return fmt.Errorf("sqlite ledger: keep live message %s: %w", key, err)
	}
	if err := tx.Commit(); err != nil {
		s.w.ExecContext(ctx, "ROLLBACK") // as in tryGroup: a failed COMMIT may leave it open
		return fmt.Errorf("sqlite ledger: commit live message %s: %w", key, err)
	}
	s.committed()
	s.restartWAL()
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
