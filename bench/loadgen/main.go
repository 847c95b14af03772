// Command loadgen posts signed GitHub deliveries at a fixed rate, which wrk
// cannot do, and reports the latency percentiles at that rate. It is open
// loop: each request has a planned start time, and its latency is counted
// from then, so a server that stalls is charged for the requests that
// queued behind the stall (no coordinated omission).
//
//	loadgen -url http://127.0.0.1:8080/webhooks/github -body payload.json -rate 500 -duration 10s
//	loadgen -sign -body payload.json    # print the X-Hub-Signature-256 value and exit
//
// The secret is read from GITHUB_WEBHOOK_SECRET. Every request carries its
// own X-GitHub-Delivery. The last line of output starts "LOADGEN " for
// scripts.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

func main() {
	var (
		target   = flag.String("url", "http://127.0.0.1:8080/webhooks/github", "webhook URL (loopback only)")
		bodyFile = flag.String("body", "", "payload file (required)")
		event    = flag.String("event", "workflow_run", "X-GitHub-Event")
		rate     = flag.Float64("rate", 500, "requests per second")
		duration = flag.Duration("duration", 10*time.Second, "how long to send")
		workers  = flag.Int("workers", 32, "concurrent connections")
		signOnly = flag.Bool("sign", false, "print the signature header value of -body and exit")
	)
	flag.Parse()
	secret := os.Getenv("GITHUB_WEBHOOK_SECRET")
	if *bodyFile == "" || secret == "" || *rate <= 0 || *workers < 1 {
		fmt.Fprintln(os.Stderr, "loadgen: -body, GITHUB_WEBHOOK_SECRET, a positive -rate and -workers are required")
		os.Exit(2)
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	signature := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if *signOnly {
		fmt.Println(signature)
		return
	}
	r := run(*target, body, signature, *event, *rate, *duration, *workers)
	r.print(os.Stdout)
	if r.errors > 0 || r.non2xx > 0 {
		os.Exit(1)
	}
}

type result struct {
	planned, errors, non2xx int
	elapsed                 time.Duration
	latencies               []time.Duration
}

func run(target string, body []byte, signature, event string, rate float64, duration time.Duration, workers int) result {
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers, DisableCompression: true},
	}
	prefix := "loadgen-" + rand.Text()[:10] + "-"
	interval := time.Duration(float64(time.Second) / rate)
	n := int(duration / interval)
	planned := make(chan time.Time, n)

	var (
		mu  sync.Mutex
		res = result{planned: n, latencies: make([]time.Duration, 0, n)}
		wg  sync.WaitGroup
		seq int
	)
	for range workers {
		wg.Go(func() {
			for at := range planned {
				mu.Lock()
				seq++
				id := prefix + strconv.Itoa(seq)
				mu.Unlock()
				code, err := post(client, target, body, signature, event, id)
				lat := time.Since(at)
				mu.Lock()
				switch {
				case err != nil:
					res.errors++
				case code < 200 || code > 299:
					res.non2xx++
				}
				res.latencies = append(res.latencies, lat)
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		planned <- at
	}
	close(planned)
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

func post(client *http.Client, target string, body []byte, signature, event, id string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", signature)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (r result) print(w io.Writer) {
	slices.Sort(r.latencies)
	pct := func(p float64) float64 {
		if len(r.latencies) == 0 {
			return 0
		}
		i := int(p / 100 * float64(len(r.latencies)-1))
		return float64(r.latencies[i]) / float64(time.Millisecond)
	}
	done := len(r.latencies)
	fmt.Fprintf(w, "LOADGEN planned=%d requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f non2xx=%d errors=%d\n",
		r.planned, done, r.elapsed.Seconds(), float64(done)/r.elapsed.Seconds(),
		pct(50), pct(90), pct(99), pct(100), r.non2xx, r.errors)
}
