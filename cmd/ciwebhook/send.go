package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/config"
)

// sendTimeout bounds one send: a server that answers GitHub in milliseconds
// and has not answered in this long is not going to.
const sendTimeout = 30 * time.Second

func send(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	eventName := fs.String("event", "", "the X-GitHub-Event name (workflow_run, check_suite, check_run, pull_request, status, ping, ...)")
	path := fs.String("file", "", "the payload, a JSON file (- for standard input)")
	target := fs.String("url", "", "where to post (default http://localhost:$PORT/webhooks/github, or the port of ADDR)")
	guid := fs.String("delivery", "", "the X-GitHub-Delivery GUID (default: a new random one)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ciwebhook send --event E --file F [--url U] [--delivery GUID]

Signs the payload with the configured secret (GITHUB_WEBHOOK_SECRET or
GITHUB_WEBHOOK_SECRET_FILE, read as the server reads them) and posts it as
GitHub would, then prints the answer's status and body. It exits 1 when the
answer is not 2xx or the server cannot be reached. Sending the same
--delivery twice shows the deduplication: the second answer is "duplicate".

`)
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	if *eventName == "" || *path == "" {
		fmt.Fprintln(stderr, "ciwebhook send: --event and --file are required")
		return 2
	}
	// The secret is read exactly as the server reads it, so a signature
	// that verifies here verifies there. The server's own switch is
	// irrelevant to a client, and when off it would skip the secret.
	cfg, err := config.Load(func(k string) string {
		if k == "ENABLE_WEBHOOKS" {
			return "true"
		}
		return getenv(k)
	})
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook send: %v\n", err)
		return 1
	}
	endpoint := *target
	if endpoint == "" {
		endpoint = defaultURL(cfg.Addr)
	} else if u, err := url.Parse(endpoint); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		fmt.Fprintf(stderr, "ciwebhook send: --url %q is not an http(s) URL\n", endpoint)
		return 2
	}
	if *guid == "" {
		*guid = newGUID()
	}
	var body []byte
	if *path == "-" {
		body, err = io.ReadAll(os.Stdin)
	} else {
		body, err = os.ReadFile(*path)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook send: %v\n", err)
		return 1
	}

	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook send: %v\n", err)
		return 1
	}
	mac := hmac.New(sha256.New, []byte(cfg.Secrets[0].Reveal()))
	mac.Write(body)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	req.Header.Set("X-GitHub-Event", *eventName)
	req.Header.Set("X-GitHub-Delivery", *guid)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ciwebhook-send")

	shown := redacted(endpoint)
	fmt.Fprintf(stderr, "ciwebhook send: %s delivery %s to %s\n", *eventName, *guid, shown)
	client := &http.Client{
		// A redirect would turn the POST into a GET elsewhere; show it as
		// the answer instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		// The error quotes the URL, which may hold credentials: name the
		// target ourselves and keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		fmt.Fprintf(stderr, "ciwebhook send: cannot reach %s: %v (is the server running?)\n", shown, err)
		return 1
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook send: reading the answer from %s: %v\n", shown, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", resp.Status)
	if a := strings.TrimSpace(string(answer)); a != "" {
		fmt.Fprintln(stdout, a)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 1
	}
	return 0
}

// defaultURL is the webhook route of a server listening on addr on this
// machine: a wildcard or empty host (":8080", "0.0.0.0:8080", "[::]:8080")
// is reached through localhost, a specific host as itself.
func defaultURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = "", "8080" // config.Load has already refused a bad ADDR
	}
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/webhooks/github"
}

// newGUID returns a random version 4 UUID, the shape of GitHub's delivery
// GUIDs.
func newGUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// redacted is the URL without any password it carries.
func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the --url"
	}
	return u.Redacted()
}
