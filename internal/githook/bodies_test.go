package githook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWeightedFIFOAndCancel(t *testing.T) {
	t.Parallel()
	s := newWeighted(10)
	ctx := context.Background()
	relA, err := s.acquire(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	// B (8) must wait; C (2) would fit but must not overtake B.
	bDone := make(chan func(), 1)
	go func() {
		r, err := s.acquire(ctx, 8)
		if err != nil {
			t.Error(err)
		}
		bDone <- r
	}()
	for waiting := 0; waiting == 0; {
		s.mu.Lock()
		waiting = len(s.waiters)
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.acquire(cctx, 2); err == nil {
		t.Fatal("a small waiter overtook an earlier large one")
	}
	relA()
	relA() // a second release is a no-op
	relB := <-bDone
	if got := s.inUse(); got != 8 {
		t.Fatalf("in use %d, want 8", got)
	}
	// Over the capacity: taken as the whole capacity, so it runs alone.
	bigDone := make(chan func(), 1)
	go func() {
		r, _ := s.acquire(ctx, 1000)
		bigDone <- r
	}()
	select {
	case <-bigDone:
		t.Fatal("an oversized request ran beside another")
	case <-time.After(20 * time.Millisecond):
	}
	relB()
	relBig := <-bigDone
	if got := s.inUse(); got != 10 {
		t.Fatalf("in use %d, want the whole capacity", got)
	}
	relBig()

	// A cancelled head of the queue lets the ones behind it in.
	relFull, _ := s.acquire(ctx, 9)
	hctx, hcancel := context.WithCancel(ctx)
	headErr := make(chan error, 1)
	go func() { _, err := s.acquire(hctx, 5); headErr <- err }()
	for waiting := 0; waiting == 0; {
		s.mu.Lock()
		waiting = len(s.waiters)
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	tailDone := make(chan func(), 1)
	go func() { r, _ := s.acquire(ctx, 1); tailDone <- r }()
	time.Sleep(10 * time.Millisecond)
	hcancel()
	if err := <-headErr; err == nil {
		t.Fatal("cancelled waiter acquired")
	}
	select {
	case r := <-tailDone:
		r()
	case <-time.After(2 * time.Second):
		t.Fatal("the waiter behind a cancelled head was never served")
	}
	relFull()
	if got := s.inUse(); got != 0 {
		t.Fatalf("in use %d after every release, want 0", got)
	}
}

func TestBodyWeight(t *testing.T) {
	t.Parallel()
	const maxB = 1000
	for _, tc := range []struct {
		cl   int64
		want int64
	}{{0, bytes.MinRead}, {100, 100 + bytes.MinRead}, {maxB, maxB + bytes.MinRead}, {maxB + 1, 0}, {-1, maxB + 1 + bytes.MinRead}} {
		r := httptest.NewRequest(http.MethodPost, Path, nil)
		r.ContentLength = tc.cl
		if got := bodyWeight(r, maxB); got != tc.want {
			t.Errorf("Content-Length %d: weight %d, want %d", tc.cl, got, tc.want)
		}
	}
}

// slowBody is a request body that sends its first byte, then waits to be
// told to send the rest (a client sending slowly).
type slowBody struct {
	first bool
	rest  io.Reader
	go_   <-chan struct{}
}

func (b *slowBody) Read(p []byte) (int, error) {
	if !b.first {
		b.first = true
		p[0] = '{'
		return 1, nil
	}
	<-b.go_
	return b.rest.Read(p)
}

// Large bodies sent slowly take at most the large-body budget; the others
// wait rather than being refused, and an ordinary delivery is not held
// behind them. Once the slow clients finish, everyone is answered.
func TestBodyBudgetLargeBodiesWaitSmallOnesPass(t *testing.T) {
	t.Parallel()
	const maxB = 2<<20 + 11 // a gate of this test's own
	f := newFixture(t, Options{MaxBodyBytes: maxB})
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	g := gateFor(maxB)
	per := int64(maxB + 1 + bytes.MinRead)
	slots := int64(max(4, 2*runtime.GOMAXPROCS(0)))
	if g.large.size != slots*per || g.all.size != 2*slots*per {
		t.Fatalf("budgets %d/%d, want %d/%d", g.large.size, g.all.size, slots*per, 2*slots*per)
	}

	n := int(slots) + 6
	release := make(chan struct{})
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := &slowBody{rest: strings.NewReader(strings.Repeat(" ", 2<<20-2) + "}"), go_: release}
			req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, body)
			req.ContentLength = 2 << 20
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-GitHub-Event", "ping")
			req.Header.Set("X-GitHub-Delivery", fmt.Sprint("big-", i))
			req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	// Wait until the large-body budget is taken and the rest queue.
	want := slots * (2<<20 + bytes.MinRead)
	deadline := time.Now().Add(10 * time.Second)
	for g.large.inUse() != want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := g.large.inUse(); got != want {
		t.Fatalf("large budget in use %d, want %d (%d bodies)", got, want, slots)
	}
	time.Sleep(50 * time.Millisecond)
	if got := g.large.inUse(); got != want {
		t.Fatalf("more large bodies admitted: %d in use, budget %d", got, g.large.size)
	}

	// An ordinary delivery goes straight through.
	body := readPayload(t, "workflow_run/completed.payload.json")
	r := delivery("workflow_run", "small-1", body)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, bytes.NewReader(body))
	req.Header = r.Header
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if took := time.Since(t0); resp.StatusCode != http.StatusAccepted || took > 2*time.Second {
		t.Fatalf("ordinary delivery behind slow large bodies: %d in %v", resp.StatusCode, took)
	}

	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusUnauthorized { // every big body was read and refused as unsigned, none 503
			t.Errorf("large body answered %d, want 401 once read", c)
		}
	}
	if a, l := g.all.inUse(), g.large.inUse(); a != 0 || l != 0 {
		t.Errorf("budget still in use after every answer: all %d, large %d", a, l)
	}
}

// A request that cannot get its share before its context ends is answered
// 503 through refuse, as a delivery that was not stored.
func TestBodyBudgetWaitEnds(t *testing.T) {
	t.Parallel()
	const maxB = 1<<20 + 13
	g := gateFor(maxB)
	hold, err := g.all.acquire(context.Background(), g.all.size)
	if err != nil {
		t.Fatal(err)
	}
	defer hold()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, Path, strings.NewReader("{}"))
	var status int
	var reason string
	rel, ok := acquireBody(r, maxB, func(s int, re, _ string, _ ...any) { status, reason = s, re })
	rel()
	if ok || status != http.StatusServiceUnavailable || reason != reasonBusy {
		t.Fatalf("ok %v, refused %d %q; want 503 %q", ok, status, reason, reasonBusy)
	}
	// Over the limit by its Content-Length: no budget, readLimited refuses it.
	r = httptest.NewRequestWithContext(ctx, http.MethodPost, Path, strings.NewReader(strings.Repeat("x", maxB+1)))
	rel, ok = acquireBody(r, maxB, func(int, string, string, ...any) { t.Error("refused while waiting") })
	rel()
	if !ok {
		t.Fatal("an oversized body waited for budget")
	}
}
