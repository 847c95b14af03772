// Package file is a ledger kept in one JSON-lines file, for deployments that
// want no database at all (LEDGER_BACKEND=file).
//
// The file is a log: each line is one change, replayed into memory on Open.
// A line is written and fsynced before the change is acknowledged, so a row
// that Record returned survives kill -9 and power loss. Only the last line
// can be torn by a crash (every earlier one was on disk before it was
// written), so a bad last line is dropped on Open; a bad line anywhere else
// means the file was damaged some other way and Open refuses it.
//
// When the log holds about twice as many lines as there are live rows, it
// is rewritten with only the live rows (a new file renamed over the old
// one), so under LEDGER_LIMIT the file stays bounded.
//
// One process at a time: Open takes an exclusive advisory lock on the file.
package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// compactSlack is how many lines beyond twice the live rows the log may
// grow to before it is rewritten, so that a small ledger is not rewritten
// on every other write.
const compactSlack = 100

// fsync is (*os.File).Sync; tests about something other than durability
// swap it out, as thousands of real fsyncs take seconds.
var fsync = (*os.File).Sync

// entry is one line of the log.
type entry struct {
	// Seq is the highest Seq ever given, written first by a compaction: the
	// row that had it may have been pruned, and Seq is never handed out twice
	// (Due's cursor relies on it).
	Seq int64 `json:"seq,omitempty"`
	// Put is a row's full new state: a new row, or an old one changed.
	Put *ledger.Delivery `json:"put,omitempty"`
	// Del lists the rows pruned by this change, in the same line so that a
	// change and its pruning are one write.
	Del []string `json:"del,omitempty"`
	// Streak is a streak's new state (NOTIFY_MODE=changes); streaks are
	// not rows and are never pruned.
	Streak *streakLine `json:"streak,omitempty"`
	// Live is a live message kept under a key (ledger.Live); like
	// streaks, never pruned.
	Live *liveLine `json:"live,omitempty"`
}

type liveLine struct {
	Key     string      `json:"key"`
	Message ledger.Live `json:"message"`
}

type streakLine struct {
	Key   string             `json:"key"`
	State ledger.StreakState `json:"state"`
}

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("is in use by another process")

// Store is a ledger.Store on one JSON-lines file. It is safe for concurrent
// use.
type Store struct {
	path  string
	limit int

	mu sync.Mutex
	f  *os.File // nil once closed
	// size is the length of the log's good part: the next line goes there.
	size int64
	// lines counts the log's lines, live or superseded.
	lines int
	// compactAt holds off a retry after a compaction failed.
	compactAt int
	// dirDirty: a compaction renamed a new file into place, but the
	// directory entry is not yet known to be on disk. Until it is, a line
	// appended to the new file could be lost with the file on power loss.
	dirDirty bool
	// broken is set when the file may hold a torn line that could not be
	// removed; every later write would land after it.
	broken error

	rows    map[string]*ledger.Delivery
	streaks map[string]ledger.StreakState
	live    map[string]ledger.Live
	order   []*ledger.Delivery // live rows, by Seq
	keys    map[string]int     // live rows per Key
	pending int
	failed  int
	lastSeq int64
	// readOnly marks a Snapshot: it never writes, so it needs no lock.
	readOnly bool
}

var _ ledger.Store = (*Store)(nil)

// ErrReadOnly is returned by every write to a Snapshot.
var ErrReadOnly = errors.New("file ledger: a snapshot is read-only")

// Snapshot reads the ledger at path as it stands, without the lock, so an
// operator can look at it while a server holds it. Every fsynced line is
// there; a line being written is left out, and nothing is ever written.
// A compaction that renames a new file over path meanwhile does not
// disturb it: the snapshot keeps reading the file it opened.
func Snapshot(path string) (*Store, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("file ledger: %w", err)
	}
	s := &Store{
		path: path, limit: 1, f: f, readOnly: true,
		rows: map[string]*ledger.Delivery{}, keys: map[string]int{},
		streaks: map[string]ledger.StreakState{}, live: map[string]ledger.Live{},
	}
	if err := s.load(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// Open opens the ledger at path, creating the file and its folder (0o750)
// when they do not exist. After each write, the oldest finished rows are
// pruned while more than limit rows are kept; pending rows never are. Open
// fails when another process has the file open.
func Open(path string, limit int) (*Store, error) {
	if limit < 1 {
		return nil, fmt.Errorf("file ledger: limit %d must be at least 1", limit)
	}
	if path == "" {
		return nil, errors.New("file ledger: empty path")
	}
	dir := filepath.Dir(path)
	if err := mkdirAll(dir); err != nil {
		return nil, fmt.Errorf("file ledger: create folder: %w", err)
	}
	f, err := openLocked(path)
	if err != nil {
		return nil, err
	}
	s := &Store{
		path:  path,
		limit: limit,
		f:     f,
		rows:  map[string]*ledger.Delivery{},
		keys:  map[string]int{},

		streaks: map[string]ledger.StreakState{},
		live:    map[string]ledger.Live{},
	}
	if err := s.load(); err != nil {
		f.Close()
		return nil, err
	}
	// The file may be new: its name must be on disk before any row in it
	// is acknowledged.
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("ledger file %s: %w", path, err)
	}
	removeStaleTemps(path)
	s.maybeCompact()
	return s, nil
}

// mkdirAll is os.MkdirAll that also fsyncs the folders it creates, so that
// the ledger's folder outlives a power loss along with the ledger.
func mkdirAll(dir string) error {
	var created []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(created) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	for _, d := range created {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

// beforeLock lets a test replace the file between openLocked's open and its
// lock, the race the check after locking is for.
var beforeLock = func() {}

// openLocked opens path and takes the lock on it.
func openLocked(path string) (*os.File, error) {
	// A compaction in the process that held the lock may have renamed a new
	// file over path between our open and our lock: then we would hold the
	// lock on a file no one uses any more. Check, and try again.
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("file ledger: %w", err)
		}
		beforeLock()
		if err := lock(f); err != nil {
			f.Close()
			if errors.Is(err, errLocked) {
				return nil, fmt.Errorf("ledger file %s %w", path, ErrLocked)
			}
			return nil, fmt.Errorf("ledger file %s: lock: %w", path, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("file ledger: %w", err)
		}
		if pi, err := os.Stat(path); err == nil && os.SameFile(fi, pi) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("ledger file %s keeps being replaced by another process", path)
}

func tempPrefix(path string) string { return filepath.Base(path) + ".compact-" }

// removeStaleTemps removes what a compaction cut short by a crash left
// behind. Only the holder of the lock compacts, and that is us.
func removeStaleTemps(path string) {
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix(path)) {
			os.Remove(filepath.Join(filepath.Dir(path), e.Name()))
		}
	}
}

// load replays the log into memory and cuts off a torn last line.
func (s *Store) load() error {
	r := bufio.NewReaderSize(s.f, 64<<10)
	var (
		off, good int64
		lineNo    int
		bad       error // the latest line did not parse; fatal unless it is the last
	)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("ledger file %s: read: %w", s.path, err)
		}
		if len(line) == 0 || line[len(line)-1] != '\n' {
			// End of file, or a line whose write never finished. A bad
			// line before such a tail was fsynced before the tail was
			// written: that is damage, not a torn write.
			if bad != nil && len(line) > 0 {
				return bad
			}
			break
		}
		lineNo++
		if bad != nil {
			return bad
		}
		off += int64(len(line))
		if perr := s.replay(line); perr != nil {
			bad = fmt.Errorf("ledger file %s:%d: corrupt line: %w", s.path, lineNo, perr)
			continue
		}
		good = off
		s.lines++
	}
	fi, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("ledger file %s: %w", s.path, err)
	}
	if fi.Size() > good && !s.readOnly {
		if err := s.f.Truncate(good); err != nil {
			return fmt.Errorf("ledger file %s: cut off torn last line: %w", s.path, err)
		}
		if err := fsync(s.f); err != nil {
			return fmt.Errorf("ledger file %s: cut off torn last line: %w", s.path, err)
		}
	}
	s.size = good

	s.order = make([]*ledger.Delivery, 0, len(s.rows))
	for _, d := range s.rows {
		s.order = append(s.order, d)
		s.count(d, 1)
	}
	slices.SortFunc(s.order, func(a, b *ledger.Delivery) int { return cmpSeq(a.Seq, b.Seq) })
	var newest time.Time
	for _, m := range s.live {
		if m.UpdatedAt.After(newest) {
			newest = m.UpdatedAt
		}
	}
	s.forgetLive(newest)
	return nil
}

// replay applies one line to s.rows (and s.lastSeq); the rest of the
// in-memory state is built once at the end of load.
func (s *Store) replay(line []byte) error {
	var e entry
	if err := json.Unmarshal(line, &e); err != nil {
		return err
	}
	if e.Put == nil && e.Del == nil && e.Seq == 0 && e.Streak == nil && e.Live == nil {
		return errors.New("empty record")
	}
	if e.Streak != nil && e.Streak.Key == "" {
		return errors.New("streak without a key")
	}
	if e.Live != nil && e.Live.Key == "" {
		return errors.New("live message without a key")
	}
	if p := e.Put; p != nil {
		switch {
		case p.GUID == "":
			return errors.New("row without a GUID")
		case !p.State.Valid():
			return fmt.Errorf("row %s: unknown state %q", p.GUID, p.State)
		case p.Seq <= 0:
			return fmt.Errorf("row %s: Seq %d", p.GUID, p.Seq)
		}
	}
	s.lastSeq = max(s.lastSeq, e.Seq)
	if p := e.Put; p != nil {
		s.rows[p.GUID] = p
		s.lastSeq = max(s.lastSeq, p.Seq)
	}
	for _, g := range e.Del {
		delete(s.rows, g)
	}
	if e.Streak != nil {
		s.streaks[e.Streak.Key] = e.Streak.State
	}
	if e.Live != nil {
		s.live[e.Live.Key] = e.Live.Message
	}
	return nil
}

func cmpSeq(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// count adds (n = 1) or removes (n = -1) d from the tallies.
func (s *Store) count(d *ledger.Delivery, n int) {
	switch d.State {
	case ledger.Pending:
		s.pending += n
	case ledger.Failed:
		s.failed += n
	}
	if d.Key != "" {
		if s.keys[d.Key] += n; s.keys[d.Key] == 0 {
			delete(s.keys, d.Key)
		}
	}
}

// enter starts a method: it checks ctx and that the store is usable, and
// takes s.mu, which the caller releases.
func (s *Store) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if err := s.usable(); err != nil {
		s.mu.Unlock()
		return err
	}
	return nil
}

// usable says why the store cannot be used, if it cannot. s.mu is held.
func (s *Store) usable() error {
	if s.f == nil {
		return fmt.Errorf("ledger file %s is closed", s.path)
	}
	return s.broken
}

// write appends one line and waits until it is on disk. s.mu is held.
func (s *Store) write(e entry) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if s.dirDirty {
		if err := syncDir(filepath.Dir(s.path)); err != nil {
			return fmt.Errorf("ledger file %s: %w", s.path, err)
		}
		s.dirDirty = false
	}
	b, err := encode(e)
	if err != nil {
		return fmt.Errorf("ledger file %s: %w", s.path, err)
	}
	_, err = s.f.WriteAt(b, s.size)
	if err == nil {
		err = fsync(s.f)
	}
	if err != nil {
		// Part of the line may be in the file. Left there, it would be a
		// corrupt line in the middle once the next line lands after it.
		if terr := s.f.Truncate(s.size); terr != nil {
			s.broken = fmt.Errorf("ledger file %s: unusable after a failed write (%v): %w", s.path, err, terr)
			return s.broken
		}
		return fmt.Errorf("ledger file %s: write: %w", s.path, err)
	}
	s.size += int64(len(b))
	s.lines++
	return nil
}

// encode is one line of the log, newline included. HTML escaping is off so
// that the file reads as the text it holds.
func encode(e entry) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// put stores d (new, or replacing the row with its GUID) in memory.
func (s *Store) put(d *ledger.Delivery) {
	if old, ok := s.rows[d.GUID]; ok {
		s.count(old, -1)
		*old = *d // the same pointer stays in s.order
		s.count(old, 1)
		return
	}
	s.rows[d.GUID] = d
	s.order = append(s.order, d) // the newest Seq goes last
	s.count(d, 1)
}

func (s *Store) drop(guids []string) {
	if len(guids) == 0 {
		return
	}
	gone := make(map[*ledger.Delivery]bool, len(guids))
	for _, g := range guids {
		if d, ok := s.rows[g]; ok {
			gone[d] = true
			s.count(d, -1)
			delete(s.rows, g)
		}
	}
	s.order = slices.DeleteFunc(s.order, func(d *ledger.Delivery) bool { return gone[d] })
}

// victims lists the oldest finished rows to prune so that n rows fit the
// limit. finishing names a Pending row about to be finished, which counts
// as finished. s.mu is held.
func (s *Store) victims(n int, finishing string) []string {
	excess := n - s.limit
	var out []string
	for _, d := range s.order {
		if excess <= 0 {
			break
		}
		if d.State.Finished() || d.GUID == finishing {
			out = append(out, d.GUID)
			excess--
		}
	}
	return out
}

// clone copies d so that neither the caller nor the store sees the other's
// later changes to the message.
func clone(d ledger.Delivery) ledger.Delivery {
	d.Message = bytes.Clone(d.Message)
	return d
}

// utc drops the monotonic clock reading and the zone, so that a row reads
// the same from memory as from the file after a restart.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// Record inserts d unless its GUID is present. It prunes after the write,
// but never the row it has just written: when every other row is pending,
// the ledger holds one finished row beyond its limit, which DESIGN.md's
// bound (limit plus the rows still owed) allows, and the newest delivery
// stays deduplicated.
func (s *Store) Record(ctx context.Context, d *ledger.Delivery) (ledger.Result, error) {
	switch {
	case d == nil:
		return 0, errors.New("file ledger: Record(nil)")
	case d.GUID == "":
		return 0, errors.New("file ledger: Record: empty GUID")
	case !d.State.Valid():
		return 0, fmt.Errorf("file ledger: Record %s: unknown state %q", d.GUID, d.State)
	}
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	if _, ok := s.rows[d.GUID]; ok {
		return ledger.Duplicate, nil
	}
	row := clone(*d)
	row.ReceivedAt, row.NextAttemptAt = utc(row.ReceivedAt), utc(row.NextAttemptAt)
	row.Seq = s.lastSeq + 1
	result := ledger.Recorded
	if row.Key != "" && s.keys[row.Key] > 0 {
		// The row says nothing, so it claims nothing: the key stays with
		// its holder alone, and is free again once the holder is pruned.
		result, row.State, row.Key = ledger.KeyTaken, ledger.Ignored, ""
	}
	// The new row is not in s.order yet, so it cannot be a victim.
	del := s.victims(len(s.rows)+1, "")
	if err := s.write(entry{Put: &row, Del: del}); err != nil {
		return 0, err
	}
	s.lastSeq = row.Seq
	s.put(&row)
	s.drop(del)
	d.Seq, d.State, d.Key = row.Seq, row.State, row.Key
	s.maybeCompact()
	return result, nil
}

// Streak judges run under s.mu and writes the new state as one fsynced
// line before it answers, so the verdict survives a crash the moment it is
// given. One process holds the file (its lock), so the mutex is enough.
func (s *Store) Streak(ctx context.Context, key string, run ledger.StreakRun) (ledger.StreakVerdict, error) {
	if err := s.enter(ctx); err != nil {
		return ledger.StreakVerdict{}, err
	}
	defer s.mu.Unlock()
	prev := s.streaks[key]
	next, v := ledger.Judge(prev, run)
	if reflect.DeepEqual(prev, next) {
		if _, ok := s.streaks[key]; ok {
			return v, nil // a redelivery: nothing to write
		}
	}
	if err := s.write(entry{Streak: &streakLine{Key: key, State: next}}); err != nil {
		return ledger.StreakVerdict{}, err
	}
	s.streaks[key] = next
	s.maybeCompact()
	return v, nil
}

// Live returns the live message kept under key.
func (s *Store) Live(ctx context.Context, key string) (ledger.Live, error) {
	if err := s.enter(ctx); err != nil {
		return ledger.Live{}, err
	}
	defer s.mu.Unlock()
	m, ok := s.live[key]
	if !ok {
		return m, fmt.Errorf("%w: live message %s", ledger.ErrNotFound, key)
	}
	return m, nil
}

// SetLive keeps m under key, as one fsynced line.
func (s *Store) SetLive(ctx context.Context, key string, m ledger.Live) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	m.UpdatedAt = utc(m.UpdatedAt)
	if err := s.write(entry{Live: &liveLine{Key: key, Message: m}}); err != nil {
		return err
	}
	s.live[key] = m
	// Forgotten here and at load (forgetLive); the lines stay in the log
	// until the next compaction, which writes only what is kept.
	s.forgetLive(m.UpdatedAt)
	s.maybeCompact()
	return nil
}

// forgetLive drops the live messages not set for LiveTTL before now.
func (s *Store) forgetLive(now time.Time) {
	for k, m := range s.live {
		if m.UpdatedAt.Before(now.Add(-ledger.LiveTTL)) {
			delete(s.live, k)
		}
	}
}

// Due returns up to limit Pending rows of destination with a Seq greater
// than after whose NextAttemptAt is not after now, in order of arrival.
func (s *Store) Due(ctx context.Context, destination string, now time.Time, after int64, limit int) ([]ledger.Delivery, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	start, _ := slices.BinarySearchFunc(s.order, after+1, func(d *ledger.Delivery, seq int64) int { return cmpSeq(d.Seq, seq) })
	var out []ledger.Delivery
	for _, d := range s.order[start:] {
		if len(out) >= limit {
			break
		}
		if d.State == ledger.Pending && d.Destination == destination && !d.NextAttemptAt.After(now) {
			out = append(out, clone(*d))
		}
	}
	return out, nil
}

// Finish ends a Pending row as Delivered or Failed, then prunes.
func (s *Store) Finish(ctx context.Context, guid string, state ledger.State, attempts int, lastErr string) error {
	if state != ledger.Delivered && state != ledger.Failed {
		return fmt.Errorf("file ledger: Finish %s: state %q is not %q or %q", guid, state, ledger.Delivered, ledger.Failed)
	}
	return s.update(ctx, guid, func(d *ledger.Delivery) []string {
		d.State, d.Attempts, d.LastError = state, attempts, lastErr
		return s.victims(len(s.rows), guid)
	})
}

// Reschedule keeps a row Pending and sets when it is next tried.
func (s *Store) Reschedule(ctx context.Context, guid string, attempts int, lastErr string, next time.Time) error {
	return s.update(ctx, guid, func(d *ledger.Delivery) []string {
		d.Attempts, d.LastError, d.NextAttemptAt = attempts, lastErr, utc(next)
		return nil
	})
}

// update changes a copy of one Pending row with change, which returns the
// rows to prune, and stores it.
func (s *Store) update(ctx context.Context, guid string, change func(*ledger.Delivery) []string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	cur, ok := s.rows[guid]
	if !ok {
		return fmt.Errorf("%w: %s", ledger.ErrNotFound, guid)
	}
	if cur.State != ledger.Pending {
		return fmt.Errorf("%w: %s is %s", ledger.ErrNotPending, guid, cur.State)
	}
	row := clone(*cur)
	del := change(&row)
	if err := s.write(entry{Put: &row, Del: del}); err != nil {
		return err
	}
	s.put(&row)
	s.drop(del)
	s.maybeCompact()
	return nil
}

// Subject returns the rows recorded with that subject, in order of arrival.
// No subject is no group: Subject("") returns nothing.
func (s *Store) Subject(ctx context.Context, subject string) ([]ledger.Delivery, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var out []ledger.Delivery
	if subject == "" {
		return out, nil
	}
	for _, d := range s.order {
		if d.Subject == subject {
			out = append(out, clone(*d))
		}
	}
	return out, nil
}

// Get returns one row, or an error wrapping ledger.ErrNotFound.
func (s *Store) Get(ctx context.Context, guid string) (ledger.Delivery, error) {
	if err := s.enter(ctx); err != nil {
		return ledger.Delivery{}, err
	}
	defer s.mu.Unlock()
	d, ok := s.rows[guid]
	if !ok {
		return ledger.Delivery{}, fmt.Errorf("%w: %s", ledger.ErrNotFound, guid)
	}
	return clone(*d), nil
}

// List returns up to limit rows, newest first; state "" means any.
func (s *Store) List(ctx context.Context, state ledger.State, limit int) ([]ledger.Delivery, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var out []ledger.Delivery
	for i := len(s.order) - 1; i >= 0 && len(out) < limit; i-- {
		if d := s.order[i]; state == "" || d.State == state {
			out = append(out, clone(*d))
		}
	}
	return out, nil
}

// Requeue makes a row with a message Pending again, due now.
func (s *Store) Requeue(ctx context.Context, guid string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	cur, ok := s.rows[guid]
	if !ok {
		return fmt.Errorf("%w: %s", ledger.ErrNotFound, guid)
	}
	if len(cur.Message) == 0 {
		return fmt.Errorf("%w: %s", ledger.ErrNothingToPost, guid)
	}
	row := clone(*cur)
	row.State, row.Attempts, row.LastError, row.NextAttemptAt = ledger.Pending, 0, "", time.Time{}
	if err := s.write(entry{Put: &row}); err != nil {
		return err
	}
	s.put(&row)
	s.maybeCompact()
	return nil
}

// Stats counts the rows; LastDeliveryAt is the newest row's ReceivedAt.
func (s *Store) Stats(ctx context.Context) (ledger.Stats, error) {
	if err := s.enter(ctx); err != nil {
		return ledger.Stats{}, err
	}
	defer s.mu.Unlock()
	st := ledger.Stats{Size: len(s.rows), Pending: s.pending, Failed: s.failed}
	if n := len(s.order); n > 0 {
		st.LastDeliveryAt = s.order[n-1].ReceivedAt
	}
	return st, nil
}

// Close releases the file and its lock. Every change is already on disk.
// Closing a closed Store does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("ledger file %s: close: %w", s.path, err)
	}
	return nil
}

// maybeCompact rewrites the log once it holds about twice the live rows.
// The change that called it is already on disk, so a failure here only
// postpones the next try. s.mu is held.
func (s *Store) maybeCompact() {
	live := len(s.rows) + len(s.streaks) + len(s.live)
	if s.lines <= 2*live+compactSlack || s.lines < s.compactAt {
		return
	}
	if err := s.compact(); err != nil {
		s.compactAt = s.lines + live + compactSlack
	}
}

// compact writes the live rows to a new file and renames it over the log.
// s.mu is held.
func (s *Store) compact() (err error) {
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, tempPrefix(s.path)+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriter(tmp)
	add := func(e entry) error {
		b, err := encode(e)
		if err == nil {
			_, err = w.Write(b)
		}
		return err
	}
	if err := add(entry{Seq: s.lastSeq}); err != nil {
		return err
	}
	for _, d := range s.order {
		if err := add(entry{Put: d}); err != nil {
			return err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.streaks)) {
		if err := add(entry{Streak: &streakLine{Key: k, State: s.streaks[k]}}); err != nil {
			return err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.live)) {
		if err := add(entry{Live: &liveLine{Key: k, Message: s.live[k]}}); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := fsync(tmp); err != nil {
		return err
	}
	// Locked before it takes the ledger's name, so that no other process
	// can lock it in between.
	if err := lock(tmp); err != nil {
		return err
	}
	fi, err := tmp.Stat()
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return err
	}
	old := s.f
	s.f, s.size, s.lines, s.compactAt = tmp, fi.Size(), 1+len(s.order)+len(s.streaks)+len(s.live), 0
	old.Close()
	if syncDir(dir) != nil {
		s.dirDirty = true // write retries it before the next line
	}
	return nil
}
