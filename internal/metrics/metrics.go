// Package metrics holds the service's counters. They live on a registry the
// caller passes in (no globals), and are shown two ways from that one
// registry: Prometheus text and a flat JSON object.
package metrics

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Reasons a request is refused or not stored; the label values of failures.
const (
	ReasonTooLarge    = "too_large"
	ReasonSignature   = "bad_signature"
	ReasonHeaders     = "missing_headers"
	ReasonMediaType   = "unsupported_media_type"
	ReasonPayload     = "bad_payload"
	ReasonMethod      = "method_not_allowed"
	ReasonStorage     = "storage"
	ReasonUnavailable = "disabled"
	ReasonSource      = "source_refused" // the client address is not in ALLOWED_SOURCE_CIDRS
)

var reasons = []string{ReasonTooLarge, ReasonSignature, ReasonHeaders, ReasonMediaType,
	ReasonPayload, ReasonMethod, ReasonStorage, ReasonUnavailable, ReasonSource}

// Secret labels say which configured secret verified a delivery.
const (
	SecretCurrent  = "current"
	SecretPrevious = "previous"
)

// Metrics are the service's instruments.
type Metrics struct {
	Deliveries    prometheus.Counter
	Failures      *prometheus.CounterVec
	DedupHits     prometheus.Counter
	Queued        prometheus.Counter
	Filtered      prometheus.Counter
	Ignored       prometheus.Counter
	Suppressed    prometheus.Counter
	SecretMatches *prometheus.CounterVec
	Processing    prometheus.Histogram

	// Slack's side, by destination: see For.
	slackPosts, slackFailures, retries, rateLimited *prometheus.CounterVec
	slackLatency                                    *prometheus.HistogramVec

	gatherer prometheus.Gatherer
}

// New creates the instruments on reg.
func New(reg *prometheus.Registry) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ciwebhook", Name: name + "_total", Help: help})
		reg.MustRegister(c)
		return c
	}
	byDestination := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ciwebhook", Name: name + "_total", Help: help}, []string{"destination"})
	}
	m := &Metrics{
		Deliveries:    counter("deliveries", "Deliveries whose signature verified."),
		DedupHits:     counter("dedup_hits", "Deliveries answered as duplicates of a recorded GUID."),
		Queued:        counter("queued", "Deliveries recorded with a Slack message owed."),
		Filtered:      counter("filtered", "Deliveries recorded but kept quiet by a filter."),
		Ignored:       counter("ignored", "Deliveries recorded with nothing (new) to say."),
		Suppressed:    counter("suppressed", "Results NOTIFY_MODE=changes kept quiet (no change: still failing, still passing, superseded, ...); also counted as ignored."),
		slackPosts:    byDestination("slack_posts", "Messages Slack accepted (or logged, in log-only mode), by destination."),
		slackFailures: byDestination("slack_failures", "Messages given up on, by destination."),
		retries:       byDestination("retries", "Slack attempts beyond the first for a message, by destination."),
		rateLimited:   byDestination("slack_rate_limited", "Slack answers of 429 (or ratelimited), by destination."),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ciwebhook", Name: "failures_total",
			Help: "Requests refused or not stored, by reason.",
		}, []string{"reason"}),
		SecretMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ciwebhook", Name: "signature_secret_total",
			Help: "Verified deliveries by the secret that matched (current or previous).",
		}, []string{"secret"}),
		Processing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ciwebhook", Name: "processing_seconds",
			Help:    "Time to answer a webhook request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		slackLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ciwebhook", Name: "slack_latency_seconds",
			Help:    "Time of one Slack attempt, by destination.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"destination"}),
		gatherer: reg,
	}
	reg.MustRegister(m.Failures, m.SecretMatches, m.Processing,
		m.slackPosts, m.slackFailures, m.retries, m.rateLimited, m.slackLatency)
	// Every series exists from the start, so dashboards see zeros, not gaps.
	for _, r := range reasons {
		m.Failures.WithLabelValues(r)
	}
	m.SecretMatches.WithLabelValues(SecretCurrent)
	m.SecretMatches.WithLabelValues(SecretPrevious)
	m.For("") // the default destination always exists; routes add theirs
	return m
}

// DefaultDestination is the destination label of SLACK_WEBHOOK_URL (or the
// log, in log-only mode): the destination no route names.
const DefaultDestination = "default"

// Destination is the Slack side's instruments for one destination.
type Destination struct {
	Posts, Failures, Retries, RateLimited prometheus.Counter
	Latency                               prometheus.Observer
}

// For returns the instruments of the destination a route names ("" is the
// default one), creating its series at zero. The label is the route's
// name, never its webhook URL or channel.
func (m *Metrics) For(destination string) Destination {
	if destination == "" {
		destination = DefaultDestination
	}
	return Destination{
		Posts:       m.slackPosts.WithLabelValues(destination),
		Failures:    m.slackFailures.WithLabelValues(destination),
		Retries:     m.retries.WithLabelValues(destination),
		RateLimited: m.rateLimited.WithLabelValues(destination),
		Latency:     m.slackLatency.WithLabelValues(destination),
	}
}

// ServeHTTP answers JSON, or the Prometheus text format when the client
// asks for text/plain or ?format=prometheus.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("format") == "prometheus" || strings.Contains(r.Header.Get("Accept"), "text/plain") {
		promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return
	}
	out, err := m.JSON()
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(map[string]string{"error": "metrics unavailable"})
		return
	}
	json.NewEncoder(w).Encode(out)
}

// JSON flattens the registry: a counter becomes its name without the
// namespace and "_total" (labelled ones also get a "<name>_by_<label>"
// map), a histogram becomes {count, sum, buckets} (labelled ones: the sum
// of their series, and a "<name>_by_<label>" map of each).
func (m *Metrics) JSON() (map[string]any, error) {
	families, err := m.gatherer.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	for _, f := range families {
		name := strings.TrimSuffix(strings.TrimPrefix(f.GetName(), "ciwebhook_"), "_total")
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			var total float64
			by := map[string]float64{}
			label := ""
			for _, mt := range f.GetMetric() {
				v := mt.GetCounter().GetValue()
				total += v
				if lp := mt.GetLabel(); len(lp) == 1 {
					label = lp[0].GetName()
					by[lp[0].GetValue()] = v
				}
			}
			out[name] = total
			if label != "" {
				out[name+"_by_"+label] = by
			}
		case dto.MetricType_HISTOGRAM:
			total := histogram{Buckets: map[string]uint64{}}
			by := map[string]histogram{}
			label := ""
			for _, mt := range f.GetMetric() {
				one := histogram{Buckets: map[string]uint64{}}
				one.add(mt.GetHistogram())
				total.add(mt.GetHistogram())
				if lp := mt.GetLabel(); len(lp) == 1 {
					label = lp[0].GetName()
					by[lp[0].GetValue()] = one
				}
			}
			out[name] = total
			if label != "" {
				out[name+"_by_"+label] = by
			}
		}
	}
	return out, nil
}

// histogram is a histogram's JSON form.
type histogram struct {
	Count   uint64            `json:"count"`
	Sum     float64           `json:"sum"`
	Buckets map[string]uint64 `json:"buckets"`
}

func (h *histogram) add(p *dto.Histogram) {
	h.Count += p.GetSampleCount()
	h.Sum += p.GetSampleSum()
	for _, b := range p.GetBucket() {
		if !math.IsInf(b.GetUpperBound(), 1) {
			h.Buckets[strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)] += b.GetCumulativeCount()
		}
	}
}
