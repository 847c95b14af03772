// Package slacktest is a fake Slack incoming webhook for tests: it records
// what it is sent and answers 200 ok, or whatever a test scripts (429 with
// Retry-After, 400, 500, a slow answer).
package slacktest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Path is the webhook path the fake serves; it looks like a real one, so
// tests can check that no part of it leaks.
const Path = "/services/T0000000/B0000000/SECRETxSECRETxSECRETx"

// Post is one request the fake received.
type Post struct {
	At   time.Time
	Body []byte
	Text string // the message's text fallback
	OK   bool   // answered 200 ok
}

// Reply is a scripted answer.
type Reply struct {
	Status     int
	Body       string
	RetryAfter int // seconds, sent as Retry-After when > 0
	Delay      time.Duration
}

// Server is the fake.
type Server struct {
	*httptest.Server
	mu    sync.Mutex
	posts []Post
	reply func(n int) Reply // n counts requests from 1
}

// New starts a fake that answers 200 ok until told otherwise.
func New(t testing.TB) *Server {
	s := &Server{reply: func(int) Reply { return Reply{Status: 200, Body: "ok"} }}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// URL is the webhook URL to configure.
func (s *Server) URL() string { return s.Server.URL + Path }

// Script sets how the n-th request (from 1) is answered.
func (s *Server) Script(reply func(n int) Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reply = reply
}

// Posts returns what was received so far, accepted or not.
func (s *Server) Posts() []Post {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Post(nil), s.posts...)
}

// Accepted returns the posts answered 200 ok.
func (s *Server) Accepted() []Post {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Post
	for _, p := range s.posts {
		if p.OK {
			out = append(out, p)
		}
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path != Path || r.Method != http.MethodPost {
		http.Error(w, "no_service", http.StatusNotFound)
		return
	}
	var m struct {
		Text string `json:"text"`
	}
	json.Unmarshal(body, &m)
	s.mu.Lock()
	reply := s.reply(len(s.posts) + 1)
	s.posts = append(s.posts, Post{At: time.Now(), Body: body, Text: m.Text, OK: reply.Status == 200 && reply.Body == "ok"})
	s.mu.Unlock()
	if reply.Delay > 0 {
		time.Sleep(reply.Delay)
	}
	if reply.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(reply.RetryAfter))
	}
	w.WriteHeader(reply.Status)
	io.WriteString(w, reply.Body)
}
