package githook

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
	"sync"
	"time"
)

// The bodies a process holds in memory at once are bounded, so concurrent
// large bodies (or many clients that declare a large body and send it
// slowly) cannot grow memory without limit. A request holds its share of
// the budget from before its body is read until its answer is written.
//
// The budget is counted in bytes: what readLimited allocates for the body,
// its declared Content-Length plus bytes.MinRead, or MAX_BODY_BYTES plus
// one and MinRead when no length is declared (chunked), which the buffer
// may grow to.
//
//   - Large bodies (over largeBody, or of unknown length) share at most
//     2×GOMAXPROCS (at least 4) times MAX_BODY_BYTES: 4 × 2 MiB = 8 MiB on
//     two cores. Reading and decoding is CPU work, so more large bodies at
//     once would not be faster, only bigger.
//   - All bodies together share twice that (16 MiB on two cores, with the
//     default MAX_BODY_BYTES). Large bodies can therefore take at most half
//     of it, and the other half stays for GitHub's usual deliveries (a few
//     KB to a few hundred KB): clients that hold the large-body budget by
//     sending slowly do not stop ordinary deliveries.
//
// When the budget is spent a request waits, in arrival order, rather than
// being refused. The wait ends with the request's context, or after
// maxBodyWait (GitHub gives up on a delivery after 10 s): then it is
// answered 503, as a delivery that could not be stored, and can be
// redelivered. A body over MAX_BODY_BYTES by its Content-Length takes no
// budget: readLimited refuses it before reading anything.
const (
	largeBody   = 256 << 10
	maxBodyWait = 10 * time.Second
	reasonBusy  = "busy" // metrics label of a request that waited too long
)

// bodyGates are the gates per MAX_BODY_BYTES (a process normally has one).
var bodyGates sync.Map // int64 → *bodyGate

type bodyGate struct {
	all, large *weighted
}

func gateFor(maxBody int64) *bodyGate {
	if g, ok := bodyGates.Load(maxBody); ok {
		return g.(*bodyGate)
	}
	slots := int64(max(4, 2*runtime.GOMAXPROCS(0)))
	per := maxBody + 1 + bytes.MinRead
	g, _ := bodyGates.LoadOrStore(maxBody, &bodyGate{
		all:   newWeighted(2 * slots * per),
		large: newWeighted(slots * per),
	})
	return g.(*bodyGate)
}

// bodyWeight is the memory, in bytes, a body of request r may take.
func bodyWeight(r *http.Request, maxBody int64) int64 {
	switch {
	case r.ContentLength > maxBody:
		return 0 // refused unread
	case r.ContentLength >= 0: // net/http sets -1 for a chunked body
		return r.ContentLength + bytes.MinRead
	default:
		return maxBody + 1 + bytes.MinRead
	}
}

// acquireBody takes r's share of the body budget, waiting for it. On
// success it returns the release function (call it once the answer is
// written) and true; otherwise it has answered through refuse, and release
// is a no-op.
func acquireBody(r *http.Request, maxBody int64, refuse func(status int, reason, msg string, attrs ...any)) (release func(), ok bool) {
	w := bodyWeight(r, maxBody)
	if w == 0 {
		return func() {}, true
	}
	ctx, cancel := context.WithTimeout(r.Context(), maxBodyWait)
	defer cancel()
	release, err := gateFor(maxBody).acquire(ctx, w)
	if err != nil {
		refuse(http.StatusServiceUnavailable, reasonBusy, "the server is busy reading other request bodies; retry the delivery")
		return func() {}, false
	}
	return release, true
}

func (g *bodyGate) acquire(ctx context.Context, w int64) (func(), error) {
	if w <= largeBody {
		return g.all.acquire(ctx, w)
	}
	releaseLarge, err := g.large.acquire(ctx, w)
	if err != nil {
		return nil, err
	}
	releaseAll, err := g.all.acquire(ctx, w)
	if err != nil {
		releaseLarge()
		return nil, err
	}
	return func() { releaseAll(); releaseLarge() }, nil
}

// weighted is a FIFO weighted semaphore: a waiter is served only once every
// earlier waiter has been, so large requests are not starved by small ones.
// A weight over the capacity is taken as the whole capacity: such a
// request runs alone.
type weighted struct {
	mu      sync.Mutex
	size    int64
	cur     int64
	waiters []*waiter
}

type waiter struct {
	n     int64
	ready chan struct{}
}

func newWeighted(size int64) *weighted { return &weighted{size: size} }

func (s *weighted) acquire(ctx context.Context, n int64) (func(), error) {
	n = min(n, s.size)
	var once sync.Once
	release := func() { once.Do(func() { s.release(n) }) }
	s.mu.Lock()
	if len(s.waiters) == 0 && s.cur+n <= s.size {
		s.cur += n
		s.mu.Unlock()
		return release, nil
	}
	wt := &waiter{n: n, ready: make(chan struct{})}
	s.waiters = append(s.waiters, wt)
	s.mu.Unlock()
	select {
	case <-wt.ready:
		return release, nil
	case <-ctx.Done():
		s.mu.Lock()
		select {
		case <-wt.ready: // granted meanwhile: give it back
			s.mu.Unlock()
			s.release(n)
			return nil, ctx.Err()
		default:
		}
		for i, x := range s.waiters {
			if x == wt {
				s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
				break
			}
		}
		s.grant() // it may have been the head that held the others back
		s.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (s *weighted) release(n int64) {
	s.mu.Lock()
	s.cur -= n
	if s.cur < 0 {
		s.mu.Unlock()
		panic("githook: body budget released more than acquired")
	}
	s.grant()
	s.mu.Unlock()
}

// grant wakes waiters in order while they fit; s.mu is held.
func (s *weighted) grant() {
	for len(s.waiters) > 0 {
		wt := s.waiters[0]
		if s.cur+wt.n > s.size {
			return
		}
		s.cur += wt.n
		s.waiters = s.waiters[1:]
		close(wt.ready)
	}
}

// inUse is the budget taken now (tests).
func (s *weighted) inUse() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}
